"""The 概览 console page in real headless Chromium, against a served simulated brand; its numbers
are checked against a plain-pandas oracle computed from the stores."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import httpx
import pandas as pd
import pytest

from siyu.api.keys import create_key
from siyu.config import Settings
from siyu.runtime import Runtime
from siyu.simulate.brands import MOTHER_BABY
from siyu.simulate.load import load_simulation
from siyu.simulate.run import simulate

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHURN_DAYS = 90

pytestmark = pytest.mark.server


def oracle(events_path: Path, tz: str, now: datetime) -> dict[str, object]:
    """The overview by hand, in pandas: the definitions of docs/metrics/pool-health.md."""
    con = duckdb.connect(str(events_path), read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    ev = con.execute("SELECT person_id, name, message_type, ts FROM events_resolved").df()
    orders = con.execute("SELECT person_id, paid_at, amount_fen, refund_fen FROM orders_current").df()
    con.close()
    ev["ts"] = pd.to_datetime(ev.ts, utc=True)
    adds = ev[ev.name == "add_contact"].groupby("person_id").ts.agg(["min", "max"])
    last_seen = ev[ev.message_type != "change"].groupby("person_id").ts.max()
    lost = {}
    stamp = pd.Timestamp(now)
    for person, (_first_add, last_add) in adds.iterrows():
        dels = ev[(ev.person_id == person) & (ev.name == "delete_contact") & (ev.ts >= last_add) & (ev.ts <= stamp)]
        quiet = last_seen[person] + pd.Timedelta(days=CHURN_DAYS)
        candidates = [t for t in [dels.ts.min() if len(dels) else None, quiet if quiet <= stamp else None] if t]
        lost[person] = min(candidates) if candidates else None
    month = lambda t: t.tz_convert(tz).strftime("%Y-%m")  # noqa: E731
    inflow = adds["min"].map(month).value_counts()
    outflow = pd.Series([month(t) for t in lost.values() if t is not None]).value_counts()
    paid = orders[orders.paid_at.notna()].copy()
    paid["paid_at"] = pd.to_datetime(paid.paid_at, utc=True)
    paid = paid[paid.paid_at <= stamp]
    return {
        "contacts": len(adds),
        "stock": sum(1 for t in lost.values() if t is None),
        "orders": len(paid),
        "gmv_fen": int((paid.amount_fen - paid.refund_fen).sum()),
        "buyers": paid.person_id.nunique(),
        "inflow": inflow.to_dict(),
        "outflow": outflow.to_dict(),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    base: str
    key: str
    expected: dict[str, object]
    persons: int


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("console")
    home = root / "home"
    simulate(MOTHER_BABY, customers=1500, months=8, seed=3, out=root / "sim", end=date.today())
    settings = Settings(home=home)
    with Runtime.open(settings) as rt:
        load_simulation(rt, root / "sim")
        key = create_key(rt.engine, kind="admin", name="console-test").key
        from siyu.profiles.service import stats

        persons = stats(rt.engine, rt.events)["persons"]
    expected = oracle(settings.resolved_events_path, settings.timezone, datetime.now(UTC))
    port = _free_port()
    env = {**os.environ, "SIYU_HOME": str(home)}
    server = subprocess.Popen(
        [sys.executable, "-m", "siyu.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            pytest.fail(f"siyu serve did not start: {server.stderr.read() if server.stderr else ''}")
        yield Served(base, key, expected, persons)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_overview_api_matches_the_oracle(served: Served) -> None:
    r = httpx.get(f"{served.base}/v1/overview", headers={"Authorization": f"Bearer {served.key}"}, timeout=30)
    assert r.status_code == 200, r.text
    data = r.json()
    exp = served.expected
    for name in ("contacts", "stock", "orders", "gmv_fen", "buyers"):
        assert data[name] == exp[name], name
    assert data["persons"] == served.persons
    inflow, outflow = exp["inflow"], exp["outflow"]
    assert isinstance(inflow, dict) and isinstance(outflow, dict)
    for m in data["months"]:
        assert m["inflow"] == inflow.get(m["month"], 0), m
        assert m["outflow"] == outflow.get(m["month"], 0), m
        assert m["net"] == m["inflow"] - m["outflow"]
    assert data["months"][-1]["stock"] == exp["stock"]
    assert sum(c["contacts"] for c in data["channels"]) == exp["contacts"]
    assert {c["channel"] for c in data["channels"]} == {c.name for c in MOTHER_BABY.channels}


def test_overview_needs_an_admin_key(served: Served) -> None:
    assert httpx.get(f"{served.base}/v1/overview").status_code == 401
    bad = httpx.get(
        f"{served.base}/v1/overview", params={"months": 0}, headers={"Authorization": f"Bearer {served.key}"}
    )
    assert bad.status_code == 422


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing under CI: scripts/test.sh installs it", pytrace=False)
        pytest.skip("Chromium not installed (apt-get install chromium fonts-wqy-microhei)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield b
        b.close()


def _yuan(fen: int) -> str:
    return f"¥{fen / 100:,.2f}"


def test_overview_page_in_chromium(served: Served, browser: object) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 1400}, locale="zh-CN")  # type: ignore[attr-defined]
    try:
        page.goto(f"{served.base}/#key={served.key}")
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        assert "#key" not in page.url  # the key leaves the address bar at once
        exp = served.expected
        text = lambda metric: page.inner_text(f"[data-metric={metric}]")  # noqa: E731
        assert text("persons") == f"{served.persons:,}"
        assert text("contacts") == f"{exp['contacts']:,}"
        assert text("stock") == f"{exp['stock']:,}"
        assert text("orders") == f"{exp['orders']:,}"
        assert text("buyers") == f"{exp['buyers']:,}"
        assert text("gmv") == _yuan(int(exp["gmv_fen"]))  # type: ignore[call-overload]
        rows = page.locator("#months tbody tr")
        assert rows.count() >= 8
        inflow = exp["inflow"]
        assert isinstance(inflow, dict)
        latest = rows.nth(rows.count() - 1).locator("td").all_inner_texts()
        assert latest[1] == f"{inflow.get(latest[0], 0):,}"
        assert page.locator("#channels tbody tr").count() == len(MOTHER_BABY.channels)
        assert page.locator("#flow-chart canvas").count() >= 1, "the chart library did not draw"
        # Chinese needs a CJK font: it is installed and in use, so text renders, not as boxes.
        assert page.evaluate("document.fonts.check('16px \"WenQuanYi Micro Hei\"')")
        assert "概览" in page.title()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "console-overview.png"), full_page=True)
    finally:
        page.close()


def test_login_form_rejects_a_wrong_key_then_accepts_the_right_one(served: Served, browser: object) -> None:
    page = browser.new_page(locale="zh-CN")  # type: ignore[attr-defined]
    try:
        page.goto(served.base + "/")
        page.wait_for_selector("#login:not([hidden])")
        page.fill("#key", "sy_admin_wrong")
        page.click("#login button")
        page.wait_for_selector("#error:not([hidden])")
        assert "无法读取概览" in page.inner_text("#error")
        page.fill("#key", served.key)
        page.click("#login button")
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    finally:
        page.close()


def test_chart_library_comes_from_npm(served: Served) -> None:
    r = httpx.get(f"{served.base}/vendor/echarts.min.js")
    if r.status_code == 404 and not os.environ.get("CI") and not shutil.which("npm"):
        pytest.skip("npm not available: the chart library was not installed")
    assert r.status_code == 200 and "echarts" in r.text[:2000].lower()
    assert httpx.get(f"{served.base}/vendor/jquery.js").status_code == 404
