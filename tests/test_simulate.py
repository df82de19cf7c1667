"""The brand simulator: determinism, both output paths, and the planted structure, checked
statistically against the generating parameters (fixed seeds)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import folder_digest
from siyu.config import Settings
from siyu.profiles.service import stats
from siyu.runtime import Runtime
from siyu.simulate import population as popmod
from siyu.simulate.behaviour import INDUCED_NUMBER, NEW_COUPON_THRESHOLD_FEN
from siyu.simulate.brands import BRANDS, MOTHER_BABY, brand_named
from siyu.simulate.calendar import build_calendar
from siyu.simulate.load import load_simulation
from siyu.simulate.pipeline import simulate_and_load
from siyu.simulate.run import simulate
from siyu.store.fingerprint import store_fingerprint

END = date(2026, 11, 20)


def _load(home: Path, folder: Path, ops_url: str | None = None) -> dict[str, str]:
    settings = Settings(home=home) if ops_url is None else Settings(home=home, ops_url=ops_url)
    with Runtime.open(settings) as rt:
        report = load_simulation(rt, folder)
        assert all(r.rejected == 0 for r in report.reports.values()), report.as_dict()
        return store_fingerprint(rt.engine, rt.events)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "parquet"
    simulate(MOTHER_BABY, customers=1500, months=6, seed=11, out=out, end=END)
    return out


def test_same_seed_same_files_other_seed_other_files(small: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    simulate(MOTHER_BABY, customers=1500, months=6, seed=11, out=again, end=END)
    assert folder_digest(again) == folder_digest(small)
    other = tmp_path / "other"
    simulate(MOTHER_BABY, customers=1500, months=6, seed=12, out=other, end=END)
    assert folder_digest(other) != folder_digest(small)


def test_both_output_paths_and_repeat_loads_give_identical_stores(small: Path, tmp_path: Path, ops_url: str) -> None:
    jsonl = tmp_path / "jsonl"
    simulate(MOTHER_BABY, customers=1500, months=6, seed=11, out=jsonl, end=END, fmt="jsonl")
    assert (jsonl / "events.jsonl").is_file() and not (jsonl / "events.parquet").exists()
    from_parquet = _load(tmp_path / "a", small, ops_url)
    from_jsonl = _load(tmp_path / "b", jsonl)
    assert from_parquet == from_jsonl
    assert int(from_parquet["events"].split(":")[0]) > 20_000
    # A second seed gives another store.
    other = tmp_path / "other"
    simulate(MOTHER_BABY, customers=1500, months=6, seed=12, out=other, end=END)
    assert _load(tmp_path / "c", other)["all"] != from_parquet["all"]


def test_loading_twice_changes_nothing(small: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = _load(home, small)
    with Runtime.open(Settings(home=home)) as rt:
        report = load_simulation(rt, small)
        assert sum(r.result.accepted for r in report.reports.values()) == 0
        assert store_fingerprint(rt.engine, rt.events) == first


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_simulating_and_loading_at_once_gives_the_same_files_and_store(small: Path, tmp_path: Path, fmt: str) -> None:
    """The pipeline imports the customers while the simulator's process draws events and orders:
    the files are byte-identical to simulate()'s and the store equals loading them afterwards."""
    out = tmp_path / "sim"
    simulated: list[int] = []
    known: list[int] = []
    with Runtime.open(Settings(home=tmp_path / "home")) as rt:
        summary, report = simulate_and_load(
            rt,
            MOTHER_BABY,
            customers=1500,
            months=6,
            seed=11,
            out=out,
            end=END,
            fmt=fmt,  # type: ignore[arg-type]
            simulated=simulated.append,
            rows_known=known.append,
        )
        together = store_fingerprint(rt.engine, rt.events)
    assert sum(simulated) == 1500 and summary.customers == 1500
    assert [r.rejected for r in report.reports.values()] == [0, 0, 0]
    rows = {kind: r.rows for kind, r in report.reports.items()}
    assert (rows["events"], rows["orders"]) == (summary.events, summary.orders)
    assert known == [rows["customers"], rows["events"] + rows["orders"]]
    if fmt == "parquet":
        assert folder_digest(out) == folder_digest(small)
    assert together == _load(tmp_path / "after", small)


def test_a_simulation_that_cannot_start_loads_nothing(tmp_path: Path) -> None:
    with Runtime.open(Settings(home=tmp_path / "home")) as rt:
        with pytest.raises(ValueError, match="months must be between 1 and 60"):
            simulate_and_load(rt, MOTHER_BABY, customers=1500, months=0, seed=1, out=tmp_path / "sim", end=END)
        assert stats(rt.engine, rt.events) == {"persons": 0, "identities": 0, "events": 0, "orders": 0}


@pytest.mark.parametrize("name", sorted(BRANDS))
def test_every_brand_loads_cleanly(name: str, tmp_path: Path) -> None:
    brand = brand_named(name)
    out = tmp_path / "sim"
    summary = simulate(brand, customers=1000, months=3, seed=2, out=out, end=END)
    assert summary.events > 5_000 and summary.orders > 50
    with Runtime.open(Settings(home=tmp_path / "home")) as rt:
        report = load_simulation(rt, out)
    for kind, r in report.reports.items():
        assert r.rejected == 0, (kind, r.as_dict())
        assert r.result.accepted == r.rows
    params = json.loads((out / "truth" / "params.json").read_text())
    assert params["brand"]["buy"] == dataclasses.asdict(brand.buy)


# -- planted structure ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    out = tmp_path_factory.mktemp("big") / "sim"
    # Orders in calendar time follow BG/NBD exactly when the seasonal warp is off.
    brand = dataclasses.replace(MOTHER_BABY, order_seasonality=0.0)
    simulate(brand, customers=40_000, months=12, seed=7, out=out, end=END)
    events = pd.read_parquet(out / "events.parquet")
    orders = pd.read_parquet(out / "orders.parquet")
    truth = pd.read_parquet(out / "truth" / "persons.parquet")
    return out, events, orders, truth


def _customer_no(ids: pd.Series) -> pd.Series:
    return ids.str.rsplit("x", n=1).str[1].astype(int)


def _natural(orders: pd.DataFrame) -> pd.DataFrame:
    """Orders of the BG/NBD process (not those a campaign coupon brought about)."""
    return orders[orders.order_id.str.rsplit("-", n=1).str[1].astype(int) < INDUCED_NUMBER]


def test_group_chat_is_heavy_tailed(big: tuple[Path, pd.DataFrame, pd.DataFrame, pd.DataFrame]) -> None:
    _, events, _, _ = big
    chat = events[events.event == "group_message"].groupby("wecom_external_userid").size()
    members = events[events.event == "group_joined"].wecom_external_userid.nunique()
    per_member = np.sort(
        chat.reindex(events[events.event == "group_joined"].wecom_external_userid.unique(), fill_value=0)
    )
    top = per_member[-max(1, members // 10) :].sum() / per_member.sum()
    assert top > 0.5, f"the top 10 % of group members write {top:.0%} of the messages"
    assert (per_member == 0).mean() > 0.2  # lurkers


def test_seasonality_peaks_in_inflow(big: tuple[Path, pd.DataFrame, pd.DataFrame, pd.DataFrame]) -> None:
    out, events, _, _ = big
    adds = events[events.event == "add_contact"]
    local = adds.timestamp.dt.tz_convert("Asia/Shanghai").dt.date
    per_day = local.value_counts()
    start = date.fromisoformat(json.loads((out / "manifest.json").read_text())["start"])
    cal = build_calendar(start, (END - start).days, MOTHER_BABY.member_day)
    days = [cal.day_of(i) for i in range(cal.days)]
    counts = np.array([per_day.get(d, 0) for d in days], dtype=float)
    labels = np.array(cal.labels)
    ordinary = counts[labels == ""].mean()
    for label, least in (("618", 1.3), ("双11", 1.3), ("年货节", 1.3), ("会员日", 1.5)):
        assert counts[labels == label].mean() > least * ordinary, label
    assert counts[labels == "春节"].mean() < ordinary
    june18 = counts[days.index(date(2026, 6, 18))]
    assert june18 > 2.5 * ordinary


def test_purchases_follow_bgnbd(big: tuple[Path, pd.DataFrame, pd.DataFrame, pd.DataFrame]) -> None:
    _, _, orders, truth = big
    paid = _natural(orders[orders.status == "paid"]).copy()
    paid["no"] = _customer_no(paid.member_id)
    first = paid.groupby("no").paid_at.min()
    count = paid.groupby("no").size()
    end = pd.Timestamp(END, tz="Asia/Shanghai").tz_convert("UTC")
    t = truth.set_index("customer_no").loc[first.index]
    normal = ~t.abuser.to_numpy()
    span = ((end - first).dt.total_seconds() / 86400).to_numpy()[normal]
    lam, p = t.lam_per_day.to_numpy()[normal], t.p_drop.to_numpy()[normal]
    expected = (1 - np.exp(-lam * p * span)) / p  # E[X(t) | λ, p], Fader, Hardie & Lee (2005) eq. 7
    repeats = count.to_numpy()[normal] - 1
    z = (repeats.sum() - expected.sum()) / np.sqrt(((repeats - expected) ** 2).sum())
    assert abs(z) < 4, f"repeat purchases {repeats.sum()} vs BG/NBD expectation {expected.sum():.0f} (z={z:.1f})"
    # The drop-out draws match the brand: E[p] = a / (a + b) for p ~ Beta(a, b).
    buy = MOTHER_BABY.buy
    assert abs(truth.p_drop[~truth.abuser & ~truth.super_user].mean() - buy.a / (buy.a + buy.b)) < 0.01


def test_spend_follows_gamma_gamma(big: tuple[Path, pd.DataFrame, pd.DataFrame, pd.DataFrame]) -> None:
    _, _, orders, truth = big
    paid = _natural(orders[orders.status == "paid"]).copy()
    paid["no"] = _customer_no(paid.member_id)
    t = truth.set_index("customer_no")
    paid = paid[~t.abuser.loc[paid.no].to_numpy()]
    expected = t.expected_order_yuan.loc[paid.no].to_numpy() * 100
    observed = paid.amount_fen.to_numpy()
    assert abs(observed.sum() / expected.sum() - 1) < 0.03
    # Every basket adds up: items − discount = amount.
    gross = paid["items"].map(lambda items: sum(i["quantity"] * i["price_fen"] for i in items))
    assert ((gross - paid.discount_fen) == paid.amount_fen).all()
    assert (paid.discount_fen >= 0).all()


def test_abusers_look_like_abusers(big: tuple[Path, pd.DataFrame, pd.DataFrame, pd.DataFrame]) -> None:
    _, events, orders, truth = big
    orders = orders.assign(no=_customer_no(orders.member_id))
    abuser = truth.set_index("customer_no").abuser
    paid = orders[orders.status == "paid"]
    refunded = set(orders[orders.status == "refunded"].order_id)
    is_ab = abuser.loc[paid.no].to_numpy()
    refund_ab = paid[is_ab].order_id.isin(refunded).mean()
    refund_other = paid[~is_ab].order_id.isin(refunded).mean()
    assert refund_ab > 5 * refund_other
    near = paid[is_ab].amount_fen.between(NEW_COUPON_THRESHOLD_FEN, NEW_COUPON_THRESHOLD_FEN + 1000).mean()
    assert near > 0.95  # just over the 新人券 threshold
    assert _natural(paid[is_ab]).groupby("no").size().max() == 1  # never a second order of their own
    redeemed = events[events.event == "coupon_redeemed"].member_id.map(lambda m: int(m.rsplit("x", 1)[1]))
    used = truth.customer_no.isin(redeemed)
    assert used[truth.abuser].mean() > 0.8  # nearly every abuser cashes the 新人券 …
    assert used[truth.abuser].mean() > 2 * used[~truth.abuser].mean()  # … far more often than others
    # Rings share one phone: the identity limits refuse to merge their accounts.
    ring_sizes = truth[truth.abuser].groupby("abuser_ring").size()
    assert (ring_sizes > 1).any()


def test_super_users_and_referral_trees(big: tuple[Path, pd.DataFrame, pd.DataFrame, pd.DataFrame]) -> None:
    _, _, _, truth = big
    t = truth.set_index("customer_no")
    invited = t[t.inviter_no >= 0]
    assert (t.acquired_at.loc[invited.inviter_no].to_numpy() <= invited.acquired_at.to_numpy()).all()
    invites = invited.inviter_no.value_counts().reindex(t.index, fill_value=0)
    assert invites[t.super_user].mean() > 5 * invites[~t.super_user].mean()
    # Trees, not stars: some invitees invite in turn.
    assert invited.index.isin(invited.inviter_no).sum() > 10
    assert t.orders[t.super_user].mean() > 1.5 * t.orders[~t.super_user & t.buyer].mean()
    assert abs(t.super_user.mean() - popmod.SUPER_USER_SHARE) < 0.005


def test_coupon_uplift_matches_the_planted_lift(big: tuple[Path, pd.DataFrame, pd.DataFrame, pd.DataFrame]) -> None:
    _, _, _, truth = big
    t = truth[~truth.super_user & ~truth.abuser]
    early = t[t.acquired_at < t.acquired_at.quantile(0.5)]  # time to place the first order
    rate = early.groupby("holdout").apply(lambda g: (g.orders > 0).mean(), include_groups=False)
    lift = rate[False] - rate[True]
    n1, n0 = (~early.holdout).sum(), early.holdout.sum()
    se = np.sqrt(rate[False] * (1 - rate[False]) / n1 + rate[True] * (1 - rate[True]) / n0)
    assert abs(lift - popmod.COUPON_UPLIFT) < 4 * se + 0.01, (lift, se)


def test_campaign_coupons_follow_the_response_model(
    big: tuple[Path, pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> None:
    out, events, _, truth = big
    terms = json.loads((out / "truth" / "params.json").read_text())["campaign_coupons"]
    assert [c["name"] for c in terms["campaigns"]] == ["年货节", "618", "双11"]
    assert truth[truth.campaign_holdout].campaign_coupons.sum() == 0
    sent = truth[truth.campaign_coupons > 0]
    low, high = (
        sent[sent.responsiveness < sent.responsiveness.quantile(0.25)],
        sent[sent.responsiveness > sent.responsiveness.quantile(0.75)],
    )
    rate = lambda g: g.campaign_redemptions.sum() / g.campaign_coupons.sum()  # noqa: E731
    assert rate(high) > 2 * rate(low)
    # Every induced order used its coupon, and the coupon events agree with the truth.
    assert (sent.campaign_redemptions >= sent.induced_orders).all()
    used = events[(events.event == "coupon_redeemed") & (events.coupon_type == "满减")]
    assert len(used) == truth.campaign_redemptions.sum()
    got = events[(events.event == "coupon_received") & (events.coupon_type == "满减")]
    assert len(got) == truth.campaign_coupons.sum()
    assert (got.threshold_fen == terms["threshold_fen"]).all() and (got.value_fen == terms["value_fen"]).all()


def test_resigned_staff_take_no_new_contacts(big: tuple[Path, pd.DataFrame, pd.DataFrame, pd.DataFrame]) -> None:
    out, events, _, _ = big
    staff = pd.read_parquet(out / "staff.parquet")
    gone = staff.dropna(subset=["resigned_at"])
    assert len(gone) >= 1 and gone.successor.notna().all()
    adds = events[events.event == "add_contact"].merge(gone, left_on="staff_userid", right_on="userid")
    assert (adds.timestamp < adds.resigned_at).all()
    # 离职继承: each of their customers still reachable a day later passes to the successor, once.
    moved = events[events.event == "relation_transferred"].merge(gone, left_on="from_staff_userid", right_on="userid")
    assert len(moved) > 0 and moved.wecom_external_userid.is_unique
    assert (moved.staff_userid == moved.successor).all()
    assert ((moved.timestamp - moved.resigned_at).dt.total_seconds().round() == 86400).all()
    deleted_after = events[events.event == "delete_contact"].merge(
        moved, on="wecom_external_userid", suffixes=("", "_m")
    )
    later = deleted_after[deleted_after.timestamp > deleted_after.timestamp_m]
    assert (later.staff_userid == later.successor).all()


# -- CLI -----------------------------------------------------------------------------------------


def _siyu(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "siyu.cli", "--home", str(home), *args], capture_output=True, text=True, timeout=300
    )


def test_cli_simulate_and_load(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    done = _siyu(
        tmp_path / "home",
        "simulate",
        "--brand",
        "生鲜",
        "--customers",
        "1000",
        "--months",
        "2",
        "--seed",
        "4",
        "--out",
        str(out),
        "--end",
        "2026-10-01",
        "--load",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["customers"] == 1000 and report["start"] == "2026-08-01"
    assert report["loaded"]["events"]["accepted"] == report["events"]
    stats = json.loads(_siyu(tmp_path / "home", "stats", "--json").stdout)
    assert stats["orders"] > 0 and stats["persons"] >= 1000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--brand", "汽车"], "unknown brand '汽车'"),
        (["--customers", "10"], "--customers must be between 1,000 and 10,000,000"),
        (["--end", "2026-13-01"], "month must be in 1..12"),
        (["--format", "csv"], "unknown format 'csv'"),
        (["--months", "0"], "months must be between 1 and 60"),
    ],
)
def test_cli_simulate_rejects_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    done = _siyu(tmp_path / "home", "simulate", "--out", str(tmp_path / "sim"), *args)
    assert done.returncode == 1
    assert message in done.stderr
    assert not (tmp_path / "sim" / "events.parquet").exists()
