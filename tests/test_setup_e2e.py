"""The README's essentials on a clean SIYU_HOME: init, demo data, stats, a served API; schema drift."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from siyu.store.ops.engine import make_engine, upgrade
from siyu.store.ops.schema import metadata

SIYU = [sys.executable, "-m", "siyu.cli"]


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SIYU_HOME": str(home)}
    return subprocess.run([*SIYU, *args], env=env, capture_output=True, text=True, timeout=300, check=False)


def test_migrations_match_the_schema(ops_url: str) -> None:
    engine = make_engine(ops_url)
    upgrade(engine)
    upgrade(engine)  # idempotent
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    engine.dispose()


def test_init_demo_stats_on_clean_home(tmp_path: Path) -> None:
    home = tmp_path / "fresh"
    assert run(home, "init").returncode == 0
    assert (home / "ops.sqlite").exists() and (home / "events.duckdb").exists()
    loaded = run(home, "demo", "--no-serve", "--customers", "1500", "--months", "3")
    assert loaded.returncode == 0, loaded.stderr
    stats = json.loads(run(home, "stats", "--json").stdout)
    assert stats["persons"] > 100 and stats["events"] > stats["persons"] and stats["orders"] > 0
    again = run(home, "demo", "--no-serve", "--customers", "1500")  # a second demo does not load twice
    assert again.returncode == 0
    assert json.loads(run(home, "stats", "--json").stdout) == stats


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.server
def test_serve_ingest_and_cli_hand_off(tmp_path: Path) -> None:
    home = tmp_path / "srv"
    key = run(home, "keys", "create", "--kind", "write", "--name", "t").stdout.strip()
    admin = run(home, "keys", "create", "--kind", "admin", "--name", "t").stdout.strip()
    port = _free_port()
    env = {**os.environ, "SIYU_HOME": str(home)}
    server = subprocess.Popen(
        [*SIYU, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        batch = {"batch": [{"type": "track", "messageId": "e1", "event": "favorite", "userId": "u1"}]}
        r = httpx.post(f"{base}/v1/batch", json=batch, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200 and r.json()["accepted"] == 1
        r = httpx.get(f"{base}/v1/persons/user_id:u1", headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 200 and r.json()["timeline"]["items"][0]["event_id"] == "e1"
        assert "私域" in httpx.get(base).text
        spec = httpx.get(f"{base}/openapi.json").json()
        assert "/v1/batch" in spec["paths"]
        # While the server holds the event store, the CLI says so instead of crashing.
        busy = run(home, "stats", "--json")
        assert busy.returncode == 1 and "in use" in busy.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert json.loads(run(home, "stats", "--json").stdout)["events"] == 1
