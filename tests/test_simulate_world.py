"""The simulated world is the one the brief describes: channel codes reach the whole team, staff
resign and hand over, the brands sit in their quadrants, catalogues have every tier, the calendar
knows its 年货节 and its range, progress is reported as the run goes, and 母婴 orders suit the baby."""

from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import folder_digest
from siyu.simulate.brands import BRANDS, HOME_DECOR, MOTHER_BABY, TIERS, Brand
from siyu.simulate.calendar import (
    FIRST_DAY,
    LAST_DAY,
    SPRING_FESTIVAL,
    OutsideCalendar,
    build_calendar,
    day_intensity,
)
from siyu.simulate.population import CODE_STAFF, Staff, _route, channel_codes, code_arcs
from siyu.simulate.run import simulate

END = date(2026, 11, 20)


def _run(brand: Brand, out: Path, *, customers: int, months: int = 12, seed: int = 1, **kw: object) -> Path:
    simulate(brand, customers=customers, months=months, seed=seed, out=out, end=END, **kw)  # type: ignore[arg-type]
    return out


# -- channel-code routing ------------------------------------------------------------------------


@pytest.mark.parametrize("team", [7, 13, 14, 21, 26, 63, 91])
def test_channel_codes_reach_every_staff_member(team: int, tmp_path: Path) -> None:
    """Teams whose size shares a factor with the code layout (7, 13 …) used to leave most staff without adds."""
    brand = dataclasses.replace(HOME_DECOR, customers_per_staff=150)
    out = _run(brand, tmp_path / "sim", customers=team * 150, seed=team)
    staff = pd.read_parquet(out / "staff.parquet")
    assert len(staff) == team
    truth = pd.read_parquet(out / "truth" / "persons.parquet")
    adds = truth.staff_userid.value_counts().reindex(staff.userid, fill_value=0)
    # Everyone gets contacts, the resigned ones before they leave (at 20 %–80 % of the period).
    assert (adds > 0).all(), adds[adds == 0].index.tolist()
    # Fairly even: staff who neither resigned nor inherited a leaver's codes get about the mean.
    plain = staff[staff.resigned_at.isna() & ~staff.userid.isin(staff.successor)].userid
    mean = len(truth) / team
    assert adds[plain].min() > 0.6 * mean and adds[plain].max() < 1.5 * mean, adds[plain].describe()
    # A channel code (its `state`) spreads its adds over several staff, as a 活码 does.
    events = pd.read_parquet(out / "events.parquet", columns=["event", "state", "staff_userid"])
    by_code = events[events.event == "add_contact"].groupby("state").staff_userid.agg(["size", "nunique"])
    busy = by_code[by_code["size"] >= 10]
    assert len(busy) > 20 and busy["nunique"].min() >= 2 and busy["nunique"].median() >= 3, busy.describe()


@pytest.mark.parametrize("team", [1, 2, 5, 7, 13, 26, 63, 276, 277, 1000, 12_500])
def test_channel_code_arcs_cover_the_team_evenly(team: int) -> None:
    """Each code routes to a few staff; together the codes give every staff member the same load."""
    brand = MOTHER_BABY
    codes = channel_codes(brand, team)
    assert codes.sum() >= team / CODE_STAFF
    share = np.repeat(np.array([c.share for c in brand.channels]) / codes, codes)
    rng = np.random.default_rng(team)
    size = max(200 * team, 20_000)  # enough for each code to show all the staff it reaches
    code = rng.choice(len(share), size=size, p=share / share.sum())
    staff = Staff([f"s{i}" for i in range(team)], np.full(team, np.inf), np.full(team, -1))
    pick = _route(rng, np.zeros(len(code)), code, code_arcs(brand, codes, team), staff)
    load = np.bincount(pick, minlength=team)
    mean = size / team
    assert load.min() > 0.6 * mean and load.max() < 1.4 * mean, (load.min() / mean, load.max() / mean)
    reach = pd.Series(pick).groupby(code).nunique()
    assert reach.min() >= min(CODE_STAFF, team) and reach.max() <= 12, reach.describe()


# -- resignation and handover ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_every_run_has_a_resignation_and_a_handover(seed: int, tmp_path: Path) -> None:
    out = _run(HOME_DECOR, tmp_path / "sim", customers=1000, months=6, seed=seed)
    staff = pd.read_parquet(out / "staff.parquet")
    gone = staff.dropna(subset=["resigned_at"])
    assert len(staff) >= 2 and len(gone) >= 1
    assert staff.userid.iloc[0] not in set(gone.userid)  # someone always stays
    events = pd.read_parquet(out / "events.parquet", columns=["event", "staff_userid", "from_staff_userid"])
    moved = events[events.event == "relation_transferred"]
    # Every leaver had customers, and hands over those still there a day after leaving.
    assert set(gone.userid) <= set(moved.from_staff_userid)
    assert set(events[events.event == "add_contact"].staff_userid) >= set(gone.userid)


# -- brands: quadrants and catalogues ------------------------------------------------------------


def test_the_brands_cover_the_four_quadrants_once() -> None:
    quadrants = sorted((b.frequency, b.margin) for b in BRANDS.values())
    assert quadrants == sorted(itertools.product(("high", "low"), ("high", "low")))
    assert (BRANDS["美妆"].frequency, BRANDS["美妆"].margin) == ("low", "low")


@pytest.mark.parametrize("name", sorted(BRANDS))
def test_every_catalogue_has_every_tier(name: str) -> None:
    products = BRANDS[name].products
    assert {p.tier for p in products} == set(TIERS)
    assert all(0 <= p.cost_fen <= p.price_fen for p in products)


def _realised(brand: Brand, out: Path) -> tuple[float, float]:
    """(gross margin of the kept orders, paid orders per buyer per year) of a simulated year."""
    orders = pd.read_parquet(out / "orders.parquet")
    paid = orders[orders.status == "paid"]
    kept = paid[~paid.order_id.isin(orders[orders.status == "refunded"].order_id)]
    cost = {p.sku: p.cost_fen for p in brand.products}
    cogs = kept["items"].map(lambda items: sum(i["quantity"] * cost[i["sku"]] for i in items)).sum()
    return 1 - cogs / kept.amount_fen.sum(), len(paid) / paid.member_id.nunique()


def test_realised_margins_and_frequencies_match_the_quadrants(tmp_path: Path) -> None:
    realised = {
        name: _realised(brand, _run(brand, tmp_path / brand.key, customers=3000, seed=5))
        for name, brand in BRANDS.items()
    }
    for axis, value in (("margin", 0), ("frequency", 1)):
        high = [realised[n][value] for n, b in BRANDS.items() if getattr(b, axis) == "high"]
        low = [realised[n][value] for n, b in BRANDS.items() if getattr(b, axis) == "low"]
        assert len(high) == len(low) == 2
        assert min(high) > max(low), (axis, realised)
    # Every brand earns on what it sells, the low-margin ones too.
    assert all(margin > 0 for margin, _ in realised.values()), realised
    # And clearly so: a high-frequency brand's buyers order at least twice as often.
    assert min(realised[n][1] for n in ("母婴", "生鲜")) > 2 * max(realised[n][1] for n in ("美妆", "家装"))


# -- calendar ---------------------------------------------------------------------------------------


def test_nianhuojie_before_a_late_new_year_starts_in_december() -> None:
    # 春节 2023 fell on January 22nd: 年货节 ran from December 28th, 2022.
    assert day_intensity(date(2022, 12, 28), 18)[1] == "年货节"
    assert day_intensity(date(2022, 12, 27), 18)[1] != "年货节"
    cal = build_calendar(FIRST_DAY, (LAST_DAY - FIRST_DAY).days + 1, 18)
    labels = np.array(cal.labels)
    expected = np.zeros(cal.days, dtype=bool)
    for cny in SPRING_FESTIVAL.values():
        for gap in range(5, 26):
            day = cny - timedelta(days=gap)
            if FIRST_DAY <= day <= LAST_DAY:
                expected[(day - FIRST_DAY).days] = True
    assert ((labels == "年货节") == expected).all()
    assert {cal.day_of(int(i)).month for i in np.flatnonzero(expected)} == {12, 1, 2}


def test_spring_festival_table_is_a_lunisolar_calendar() -> None:
    years = sorted(SPRING_FESTIVAL)
    assert years == list(range(FIRST_DAY.year, LAST_DAY.year + 2))
    assert all(date(y, 1, 21) <= SPRING_FESTIVAL[y] <= date(y, 2, 20) for y in years)
    # A lunar year has 12 or 13 months of 29–30 days: 353–355 or 383–385 days.
    lengths = {(SPRING_FESTIVAL[y + 1] - SPRING_FESTIVAL[y]).days for y in years[:-1]}
    assert lengths <= {353, 354, 355, 383, 384, 385}
    # Published dates, including the year of a leap 11th month (2033).
    assert [SPRING_FESTIVAL[y] for y in (2000, 2007, 2023, 2033, 2034)] == [
        date(2000, 2, 5),
        date(2007, 2, 18),
        date(2023, 1, 22),
        date(2033, 1, 31),
        date(2034, 2, 19),
    ]


@pytest.mark.parametrize(("start", "days"), [(date(1999, 12, 1), 60), (LAST_DAY - timedelta(days=30), 60)])
def test_dates_outside_the_calendar_are_refused(start: date, days: int, tmp_path: Path) -> None:
    with pytest.raises(OutsideCalendar, match="leaves the shopping calendar"):
        build_calendar(start, days, 18)
    with pytest.raises(ValueError, match="2000-01-01 – 2060-12-31"):
        day_intensity(start if start < FIRST_DAY else start + timedelta(days=days), 18)
    end = start + timedelta(days=days)
    with pytest.raises(ValueError, match="leaves the shopping calendar"):
        simulate(MOTHER_BABY, customers=1000, months=2, seed=1, out=tmp_path / "sim", end=end)
    assert not (tmp_path / "sim").exists()


def test_cli_refuses_an_end_outside_the_calendar(tmp_path: Path) -> None:
    args = ["simulate", "--customers", "1000", "--out", str(tmp_path / "sim"), "--end", "2070-01-01"]
    done = subprocess.run(
        [sys.executable, "-m", "siyu.cli", "--home", str(tmp_path / "home"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert "leaves the shopping calendar (2000-01-01 – 2060-12-31)" in done.stderr


# -- progress -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_progress_advances_within_a_block_and_ends_at_the_total(fmt: str, tmp_path: Path) -> None:
    steps: list[int] = []
    quiet = _run(MOTHER_BABY, tmp_path / "quiet", customers=3000, months=3, fmt=fmt)
    loud = _run(MOTHER_BABY, tmp_path / "loud", customers=3000, months=3, fmt=fmt, progress=steps.append)
    assert len(steps) >= 8, steps  # one block, seen advancing stage by stage
    assert all(n > 0 for n in steps) and sum(steps) == 3000
    assert max(steps) <= 3000 * 0.4
    assert folder_digest(loud) == folder_digest(quiet)  # reporting draws nothing


# -- 母婴: products suit the baby's age ----------------------------------------------------------


def test_mother_baby_orders_suit_the_baby_at_the_order(tmp_path: Path) -> None:
    out = _run(MOTHER_BABY, tmp_path / "sim", customers=6000, seed=3)
    orders = pd.read_parquet(out / "orders.parquet")
    orders = orders[orders.status == "paid"]
    truth = pd.read_parquet(out / "truth" / "persons.parquet").set_index("member_id")
    person = truth.loc[orders.member_id]
    age = person.baby_months_at_add.to_numpy() + (
        (orders.paid_at.to_numpy() - person.acquired_at.to_numpy()) / np.timedelta64(1, "D") / 30.4
    )
    ranges = {p.sku: (p.min_baby_months, p.max_baby_months) for p in MOTHER_BABY.products}
    lines = [(a, item["sku"]) for a, items in zip(age, orders["items"], strict=True) for item in items]
    unsuited = [(a, sku) for a, sku in lines if not ranges[sku][0] - 1e-3 <= a <= ranges[sku][1] + 1e-3]
    assert len(lines) > 10_000
    assert len(unsuited) <= len(lines) // 10_000, unsuited[:10]
    # The stages are all there: pregnancy, newborn, toddler purchases.
    assert (age < 0).sum() > 100 and (age < 6).sum() > 1000 and (age > 12).sum() > 1000


# -- order seasonality ---------------------------------------------------------------------------------


def _peak_ratio(out: Path, brand: Brand) -> float:
    """Paid orders a day on 618 and 双11 days against ordinary days (local dates)."""
    orders = pd.read_parquet(out / "orders.parquet")
    per_day = orders[orders.status == "paid"].paid_at.dt.tz_convert("Asia/Shanghai").dt.date.value_counts()
    start = date.fromisoformat(json.loads((out / "manifest.json").read_text())["start"])
    cal = build_calendar(start, (END - start).days, brand.member_day)
    counts = np.array([per_day.get(cal.day_of(i), 0) for i in range(cal.days)], dtype=float)
    labels = np.array(cal.labels)
    return float(counts[np.isin(labels, ["618", "双11"])].mean() / counts[labels == ""].mean())


def test_orders_follow_the_calendar_as_much_as_the_brand_says(tmp_path: Path) -> None:
    """Same customers and draws, only ``order_seasonality`` differs: its peaks stand out in the orders."""
    flat = dataclasses.replace(BRANDS["生鲜"], order_seasonality=0.0)
    warped = dataclasses.replace(BRANDS["生鲜"], order_seasonality=0.8)
    ratio_flat = _peak_ratio(_run(flat, tmp_path / "flat", customers=4000, seed=3), flat)
    ratio_warped = _peak_ratio(_run(warped, tmp_path / "warped", customers=4000, seed=3), warped)
    assert ratio_warped > 1.3, ratio_warped
    assert ratio_warped > 1.2 * ratio_flat, (ratio_flat, ratio_warped)
