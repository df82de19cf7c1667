"""Shared fixtures: both ops stores (SQLite file, fresh PostgreSQL database), settings, runtime, API client.

PostgreSQL comes from ``SIYU_TEST_PG_URL`` (e.g. ``postgresql+psycopg://postgres@127.0.0.1:55432/postgres``,
as ``scripts/test.sh`` sets it). Without it the PostgreSQL half of every parametrized test is skipped,
except under CI (env ``CI`` set), where a missing PostgreSQL is a failure: CI never silently skips it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from helpers import ADMIN, WRITE, Api
from siyu.api.app import create_app
from siyu.config import Settings
from siyu.runtime import Runtime
from siyu.store.ops.engine import make_engine, upgrade

PG_ENV = "SIYU_TEST_PG_URL"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "siyu_settings(**overrides): extra keyword arguments for the `settings` fixture's Settings"
    )


def _pg_base_url() -> str:
    url = os.environ.get(PG_ENV, "").strip()
    if url:
        return url
    if os.environ.get("CI"):
        pytest.fail(
            f"{PG_ENV} is not set but CI is: the PostgreSQL tests must run in CI, not be skipped", pytrace=False
        )
    pytest.skip(
        f"{PG_ENV} is not set: PostgreSQL tests skipped (start one with "
        "`bash scripts/pg.sh start DIR 55432` and export "
        f"{PG_ENV}=postgresql+psycopg://postgres@127.0.0.1:55432/postgres)"
    )


def _database_url(base: str, name: str) -> str:
    return make_url(base).set(database=name).render_as_string(hide_password=False)


@contextmanager
def _temporary_database(base: str, name: str, template: str | None = None) -> Iterator[str]:
    """Create database ``name`` (optionally from ``template``), yield its URL, drop it after."""
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
        yield _database_url(base, name)
    finally:
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            admin.dispose()


@pytest.fixture(scope="session")
def pg_template() -> Iterator[tuple[str, str]]:
    """(base URL, name of a migrated template database), one per xdist worker.

    Fresh test databases are copied from it, which skips re-running the migrations for every test
    (the migrations themselves still run here, on a real PostgreSQL, once per worker).
    """
    base = _pg_base_url()
    name = f"siyu_tpl_{secrets.token_hex(6)}"
    with _temporary_database(base, name) as url:
        engine = make_engine(url)
        try:
            upgrade(engine)
        finally:
            engine.dispose()
        yield base, name


def _fresh_pg_database(base: str, template: str) -> Iterator[str]:
    with _temporary_database(base, f"siyu_test_{secrets.token_hex(8)}", template) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ops_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """SQLAlchemy URL of an empty ops store: a SQLite file under tmp_path, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{(tmp_path / 'ops.sqlite').resolve()}"
    else:
        yield from _fresh_pg_database(*request.getfixturevalue("pg_template"))


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path, ops_url: str) -> Settings:
    """Settings on the parametrized ops store; a test adds overrides with ``@pytest.mark.siyu_settings(...)``."""
    # Batches are checked in the request thread unless a test asks for worker processes (they
    # cost a process per app); tests/test_check_pool.py runs the same checks through them.
    overrides: dict[str, Any] = {"ingest_workers": 0}
    marker = request.node.get_closest_marker("siyu_settings")
    if marker is not None:
        overrides.update(marker.kwargs)
    return Settings(
        home=tmp_path / "home", ops_url=ops_url, write_keys=["test-write"], admin_keys=["test-admin"], **overrides
    )


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    """Opened (and migrated) stores; closed at teardown, before the PostgreSQL database is dropped."""
    rt = Runtime.open(settings)
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
def client(settings: Settings, runtime: Runtime) -> Iterator[TestClient]:
    """In-process client of the app over ``runtime``. Server errors come back as 500 responses."""
    with TestClient(create_app(settings, runtime), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def api(client: TestClient, runtime: Runtime) -> Api:
    """Small helper around ``client`` for the calls most tests make."""
    return Api(client, runtime)


@pytest.fixture
def write_headers() -> dict[str, str]:
    return dict(WRITE)


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return dict(ADMIN)
