"""Routes of the web console: its pages, its own static files and the npm-installed chart library.

The pages hold no data: they call the REST API with the admin key the operator enters (or that
``siyu demo`` hands over in the URL fragment, which never reaches the server or its logs).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, Response

from siyu.api.deps import ApiError

STATIC = Path(__file__).parent / "static"
#: Chart library: installed from the npm registry by ``scripts/setup.sh`` into ``web/node_modules``.
VENDOR = {"echarts.min.js": Path("echarts") / "dist" / "echarts.min.js"}
_FILES = {"console.css": "text/css", "overview.js": "text/javascript"}

router = APIRouter(include_in_schema=False)


def node_modules() -> Path:
    """Where ``npm ci --prefix web`` put the front-end libraries (a source checkout)."""
    return Path(__file__).resolve().parents[3] / "web" / "node_modules"


@router.get("/", response_class=HTMLResponse)
def overview_page() -> Response:
    """概览: the overview page."""
    return FileResponse(STATIC / "overview.html", media_type="text/html; charset=utf-8")


@router.get("/static/{name}")
def static_file(name: str) -> Response:
    """The console's own CSS and scripts."""
    if name not in _FILES:
        raise ApiError(404, "not_found", f"no static file {name!r}")
    return FileResponse(STATIC / name, media_type=f"{_FILES[name]}; charset=utf-8")


@router.get("/vendor/{name}")
def vendor_file(name: str) -> Response:
    """A front-end library from the npm registry; a clear 404 when set-up did not install it."""
    if name not in VENDOR:
        raise ApiError(404, "not_found", f"no vendor file {name!r}")
    path = node_modules() / VENDOR[name]
    if not path.is_file():
        return PlainTextResponse(
            f"/* {name} is not installed: run `bash scripts/setup.sh` (npm ci --prefix web) */",
            status_code=404,
            media_type="text/javascript",
        )
    return FileResponse(path, media_type="text/javascript; charset=utf-8")
