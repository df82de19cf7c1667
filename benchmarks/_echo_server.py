"""Baseline server of bench_http: FastAPI + uvicorn that only parses the /v1/batch body and answers 200.

This is the transport ceiling — HTTP, the framework and JSON parsing, with no checks and no
storage — run the same way `siyu serve` runs uvicorn (same defaults, log level warning).

    .venv/bin/python benchmarks/_echo_server.py PORT
"""

from __future__ import annotations

import sys

import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

app = FastAPI()


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/batch")
async def batch(request: Request) -> Response:
    body = orjson.loads(await request.body())
    return Response(orjson.dumps({"accepted": len(body["batch"])}), media_type="application/json")


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
