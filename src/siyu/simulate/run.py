"""Run the simulator: draw the population, write the data files and the ground truth beside them.

Output directory layout::

    customers.parquet   identify rows: the WeCom contact profile at the add, the registration
    events.parquet      track rows (flat: one column per identity and per property)
    orders.parquet      paid orders and later refunded versions
    staff.parquet       the staff team (who resigned, when, and who inherited)
    truth/params.json   every generating parameter (brand, BG/NBD, Gamma-Gamma, calendar, shares)
    truth/persons.parquet  per customer: latent parameters, super user / abuser flags, inviter …
    truth/channels.parquet true contacts and cost of each acquisition channel
    manifest.json       what was simulated, with row counts

With ``fmt="jsonl"`` the three data files are JSONL in the ``/v1/batch`` message shape instead.
All of them go through ``siyu import``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from siyu.simulate import behaviour
from siyu.simulate import population as popmod
from siyu.simulate.behaviour import EVENT_SCHEMA, ORDER_SCHEMA, World, simulate_block
from siyu.simulate.brands import Brand
from siyu.simulate.calendar import PEAKS, build_calendar, check_period
from siyu.simulate.population import build_population, build_staff

Format = Literal["parquet", "jsonl"]
MAX_CUSTOMERS = 10_000_000
MAX_MONTHS = 60
FORMATS: tuple[Format, ...] = get_args(Format)
BLOCK = 100_000  # customers drawn at once; a block's random streams are seeded by its number
_JSONL_SLICE = 50_000  # rows written between two progress reports
_PHONE_STEP = 7_919_993  # odd and not a multiple of 5: i ↦ i·step mod 10⁹ is a bijection


@dataclass(frozen=True)
class SimulationSummary:
    """What a run wrote."""

    out: Path
    customers: int
    events: int
    orders: int
    start: date
    end: date

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "out": str(self.out),
            "customers": self.customers,
            "events": self.events,
            "orders": self.orders,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
        }


def months_before(end: date, months: int) -> date:
    """The same day of the month ``months`` months before ``end`` (clamped to the month's length)."""
    year, month = divmod(end.year * 12 + end.month - 1 - months, 12)
    month += 1
    for day in (end.day, 30, 29, 28):
        try:
            return date(year, month, min(end.day, day))
        except ValueError:
            continue
    raise AssertionError("unreachable")


def check_arguments(*, customers: int, months: int, end: date) -> None:
    """Refuse what :func:`simulate` would refuse, before anything is written: a customer count or a
    number of months out of range, or a period the shopping calendar does not cover
    (:class:`~siyu.simulate.calendar.OutsideCalendar`). Each is a :class:`ValueError`."""
    if not 1 <= customers <= MAX_CUSTOMERS:
        raise ValueError(f"customers must be between 1 and {MAX_CUSTOMERS:,}, not {customers:,}")
    if not 1 <= months <= MAX_MONTHS:
        raise ValueError(f"months must be between 1 and {MAX_MONTHS}, not {months}")
    check_period(months_before(end, months), end - timedelta(days=1))


def simulate(
    brand: Brand,
    *,
    customers: int,
    months: int,
    seed: int,
    out: Path,
    end: date | None = None,
    time_zone: str = "Asia/Shanghai",
    fmt: Format = "parquet",
    progress: Callable[[int], None] | None = None,
    on_first_files: Callable[[], None] | None = None,
) -> SimulationSummary:
    """Simulate ``customers`` customers of ``brand`` over the ``months`` months before ``end``.

    Deterministic: the same arguments give byte-identical data files. ``progress`` is called with
    the number of customers finished since its last call, several times per block (after each
    stage of drawing and writing it), so the calls add up to ``customers``; it draws nothing, so
    the files do not depend on it. The staff and customers files are complete before the first
    block is drawn; ``on_first_files`` is called then (an importer may start on them while events
    and orders are still being simulated: :mod:`siyu.simulate.pipeline`).
    """
    tz = ZoneInfo(time_zone)
    end = end or datetime.now(tz).date()
    check_arguments(customers=customers, months=months, end=end)
    start = months_before(end, months)
    days = (end - start).days
    cal = build_calendar(start, days, brand.member_day)
    base = datetime(start.year, start.month, start.day, tzinfo=tz).astimezone(UTC)
    base_us = int(base.timestamp()) * 1_000_000
    rng = np.random.default_rng([seed, 0])
    staff = build_staff(rng, brand, customers, days, seed)
    pop = build_population(rng, brand, customers, cal, staff)
    world = World(brand, seed, cal, pop, staff, base_us)

    out.mkdir(parents=True, exist_ok=True)
    (out / "truth").mkdir(exist_ok=True)
    writer = _Writer(out, fmt)
    n_events = n_orders = 0
    per_customer: dict[str, np.ndarray] = {}
    try:
        writer.customers(_customer_table(world))
        pq.write_table(_staff_table(world), out / "staff.parquet")
        if on_first_files:
            on_first_files()
        done = _Progress(progress)
        for block, lo in enumerate(range(0, customers, BLOCK)):
            hi = min(customers, lo + BLOCK)
            # The block's customers count as done stage by stage: drawing, then writing.
            result = simulate_block(world, block, lo, hi, progress=done.stage(lo, hi, 0.0, 0.6))
            writer.events(result.events, done.stage(lo, hi, 0.6, 0.95))
            writer.orders(result.orders, done.stage(lo, hi, 0.95, 1.0))
            n_events += result.events.num_rows
            n_orders += result.orders.num_rows
            for key, values in result.truth.items():
                per_customer.setdefault(key, np.zeros(customers, dtype=values.dtype))[lo:hi] = values
            done.to(hi)
    finally:
        writer.close()
    _write_truth(world, out / "truth", per_customer, start, end, time_zone)
    summary = SimulationSummary(out, customers, n_events, n_orders, start, end)
    manifest = {**summary.as_dict(), "brand": brand.name, "seed": seed, "months": months, "format": fmt}
    manifest["out"] = "."
    (out / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n")
    return summary


class _Progress:
    """Turns "customers done so far" into the increments the ``progress`` callback expects."""

    def __init__(self, report: Callable[[int], None] | None) -> None:
        self.report, self.done = report, 0

    def to(self, customers: float) -> None:
        n = int(customers)
        if self.report and n > self.done:
            self.report(n - self.done)
            self.done = n

    def stage(self, lo: int, hi: int, first: float, last: float) -> Callable[[float], None]:
        """A stage of block ``lo..hi`` that takes its share from ``first`` to ``last``: hears 0 to 1."""
        return lambda f: self.to(lo + (first + (last - first) * f) * (hi - lo))


def phones(world: World, numbers: np.ndarray) -> pa.Array:
    """A distinct mobile number per customer; the accounts of one abuser ring share their first one's."""
    ring = world.pop.ring[numbers]
    leader = np.where(ring >= 0, _ring_leaders(world)[np.maximum(ring, 0)], numbers)
    digits = 13_000_000_000 + (leader * _PHONE_STEP + world.seed * 104_729) % 1_000_000_000
    return pa.array(digits).cast(pa.string())


def _ring_leaders(world: World) -> np.ndarray:
    ring = world.pop.ring
    members = np.flatnonzero(ring >= 0)
    if not len(members):
        return np.zeros(1, dtype=np.int64)
    leaders = np.full(int(ring.max()) + 1, -1, dtype=np.int64)
    leaders[ring[members][::-1]] = members[::-1]  # the lowest customer number of each ring
    return leaders


def _customer_table(world: World) -> pa.Table:
    """Two identify rows per member, one per other contact: the WeCom profile, then registration."""
    brand, pop, days = world.brand, world.pop, world.cal.days
    n = pop.n
    every = np.arange(n)
    null = pa.nulls(n, pa.string())
    city = np.array([c for c, _ in brand.cities], dtype=object)[pop.city]
    gender = np.where(pop.female, "女", "男").astype(object)
    channel = np.array([c.name for c in brand.channels], dtype=object)[pop.channel]
    linked = pa.array(pop.linked)
    profile = {
        "message_id": world.customer_ids("cp-", every),
        "timestamp": world.timestamps(pop.acquired),
        "wecom_external_userid": world.customer_ids("wm", every),
        "unionid": pc.if_else(linked, world.customer_ids("un", every), null),
        "member_id": null,
        "phone": null,
        "openid": null,
        "city": pa.array(city, pa.string()),
        "gender": pa.array(gender, pa.string()),
        "source_channel": pa.array(channel, pa.string()),
        "age": pa.nulls(n, pa.int64()),
        "baby_age_months": pa.nulls(n, pa.int64()),
    }
    reg_at = pop.acquired + pop.member_delay
    reg = np.flatnonzero(pop.member & (reg_at < days))
    m = len(reg)
    baby = np.round(pop.baby_months[reg] + (reg_at[reg] - pop.acquired[reg]) / 30.4).astype(np.int64)
    registration = {
        "message_id": world.customer_ids("cr-", reg),
        "timestamp": world.timestamps(reg_at[reg]),
        "wecom_external_userid": pa.nulls(m, pa.string()),
        "unionid": pc.if_else(pa.array(pop.linked[reg]), world.customer_ids("un", reg), pa.nulls(m, pa.string())),
        "member_id": world.customer_ids("M", reg),
        "phone": phones(world, reg),
        "openid": world.customer_ids("op", reg),
        "city": pa.nulls(m, pa.string()),
        "gender": pa.nulls(m, pa.string()),
        "source_channel": pa.nulls(m, pa.string()),
        "age": pa.array(pop.age[reg].astype(np.int64)),
        "baby_age_months": pa.array(baby, mask=np.full(m, not brand.has_baby)),
    }
    both = pa.concat_tables([pa.table(profile), pa.table(registration)])
    return both.take(pc.sort_indices(both, [("timestamp", "ascending"), ("message_id", "ascending")]))


def _staff_table(world: World) -> pa.Table:
    staff = world.staff
    names = [f"员工{i + 1:03d}" for i in range(len(staff.userids))]
    return pa.table(
        {
            "userid": pa.array(staff.userids, pa.string()),
            "name": pa.array(names, pa.string()),
            "resigned_at": world.timestamps(staff.resigned_at),
            "successor": pa.array([staff.userids[s] if s >= 0 else None for s in staff.successor], pa.string()),
        }
    )


def _write_truth(
    world: World, folder: Path, per_customer: dict[str, np.ndarray], start: date, end: date, tz: str
) -> None:
    brand, pop = world.brand, world.pop
    every = np.arange(pop.n)
    ext = world.customer_ids("wm", every)
    persons = pa.table(
        {
            "customer_no": pa.array(every),
            "wecom_external_userid": ext,
            "member_id": pc.if_else(pa.array(pop.member), world.customer_ids("M", every), pa.nulls(pop.n, pa.string())),
            "acquired_at": world.timestamps(pop.acquired),
            "channel": pa.array([brand.channels[c].key for c in pop.channel], pa.string()),
            "staff_userid": pa.array([world.staff.userids[s] for s in pop.staff], pa.string()),
            "lam_per_day": pa.array(pop.lam),
            "p_drop": pa.array(pop.p_drop),
            "nu": pa.array(pop.nu),
            "expected_order_yuan": pa.array(brand.spend.p / pop.nu),
            "baby_months_at_add": pa.array(pop.baby_months),  # 母婴: the baby's age (months), else 0
            "activity": pa.array(pop.activity),
            "chattiness": pa.array(pop.chattiness),
            "buyer": pa.array(pop.buyer),
            "orders": pa.array(per_customer["orders"]),  # from the BG/NBD process
            "induced_orders": pa.array(per_customer["induced_orders"]),  # brought by a campaign coupon
            "redeemed_new_coupon": pa.array(per_customer["redeemed_new_coupon"]),
            "campaign_coupons": pa.array(per_customer["campaign_coupons"]),
            "campaign_redemptions": pa.array(per_customer["campaign_redemptions"]),
            "responsiveness": pa.array(pop.responsiveness),
            "campaign_holdout": pa.array(pop.campaign_holdout),
            "member": pa.array(pop.member),
            "unionid_linked": pa.array(pop.linked),
            "super_user": pa.array(pop.super_user),
            "abuser": pa.array(pop.abuser),
            "abuser_ring": pa.array(pop.ring),
            "holdout": pa.array(pop.holdout),
            "inviter_no": pa.array(pop.inviter),
            "group_no": pa.array(pop.group),
            "churn_at": world.timestamps(pop.churn),
        }
    )
    pq.write_table(persons, folder / "persons.parquet")
    counts = np.bincount(pop.channel, minlength=len(brand.channels))
    channels = pa.table(
        {
            "channel": [c.key for c in brand.channels],
            "name": [c.name for c in brand.channels],
            "contacts": pa.array(counts),
            "cost_per_add_fen": [c.cost_per_add_fen for c in brand.channels],
            "cost_fen": pa.array(counts * np.array([c.cost_per_add_fen for c in brand.channels])),
            "quality": [c.quality for c in brand.channels],
        }
    )
    pq.write_table(channels, folder / "channels.parquet")
    params = {
        "brand": dataclasses.asdict(brand),
        "seed": world.seed,
        "customers": pop.n,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "time_zone": tz,
        "time_unit": "day",
        "shares": {
            "super_users": popmod.SUPER_USER_SHARE,
            "abusers": popmod.ABUSER_SHARE,
            "holdout": popmod.HOLDOUT_SHARE,
            "unionid_linked": popmod.UNIONID_LINK_RATE,
            "staff_resigning": popmod.RESIGN_SHARE,
        },
        "channel_codes": {c.key: int(k) for c, k in zip(brand.channels, world.pop.codes_per_channel, strict=True)},
        "staff_per_code": popmod.CODE_STAFF,
        "new_customer_coupon_uplift": popmod.COUPON_UPLIFT,
        "campaign_coupons": {
            "reach": behaviour.CAMPAIGN_REACH,
            "induced_rate_per_responsiveness": behaviour.INDUCED_RATE,
            "holdout": popmod.CAMPAIGN_HOLDOUT_SHARE,
            "threshold_fen": world.campaign_terms()[0],
            "value_fen": world.campaign_terms()[1],
            "campaigns": [
                {
                    "name": name,
                    "first_day": world.cal.day_of(a).isoformat(),
                    "last_day": world.cal.day_of(b - 1).isoformat(),
                }
                for name, a, b in world.cal.campaigns()[: behaviour.COUPON_KINDS - 1]
            ],
        },
        "calendar_peaks": PEAKS,
        "staff": len(world.staff.userids),
    }
    (folder / "params.json").write_text(json.dumps(params, ensure_ascii=False, indent=2) + "\n")


class _Writer:
    """Streams the three data files, block by block, as Parquet or JSONL."""

    def __init__(self, out: Path, fmt: Format) -> None:
        self.out, self.fmt = out, fmt
        self._parquet: dict[str, pq.ParquetWriter] = {}
        self._jsonl: dict[str, Any] = {}

    def _emit(
        self,
        name: str,
        table: pa.Table,
        shape: Callable[[dict[str, Any]], dict[str, Any]],
        tick: Callable[[float], None] | None = None,
    ) -> None:
        if self.fmt == "parquet":
            if name not in self._parquet:
                self._parquet[name] = pq.ParquetWriter(self.out / f"{name}.parquet", table.schema)
            self._parquet[name].write_table(table, row_group_size=1_000_000)
        else:
            if name not in self._jsonl:
                self._jsonl[name] = (self.out / f"{name}.jsonl").open("wb")
            fh = self._jsonl[name]
            # JSONL is slow to write: report progress every slice (the bytes are the same).
            for at in range(0, table.num_rows, _JSONL_SLICE):
                for row in table.slice(at, _JSONL_SLICE).to_pylist():
                    fh.write(orjson.dumps(shape(row)) + b"\n")
                if tick:
                    tick(min(table.num_rows, at + _JSONL_SLICE) / table.num_rows)
        if tick:
            tick(1.0)

    def customers(self, table: pa.Table) -> None:
        """All the customers at once: the file is complete (closed) when this returns."""
        self._emit("customers", table, lambda r: _message(r, "identify", "traits"))
        if "customers" in self._parquet:
            self._parquet.pop("customers").close()
        if "customers" in self._jsonl:
            self._jsonl.pop("customers").close()

    def events(self, table: pa.Table, tick: Callable[[float], None] | None = None) -> None:
        assert table.schema == EVENT_SCHEMA
        self._emit("events", table, lambda r: _message(r, "track", "properties"), tick)

    def orders(self, table: pa.Table, tick: Callable[[float], None] | None = None) -> None:
        assert table.schema == ORDER_SCHEMA
        self._emit("orders", table, _order_message, tick)

    def close(self) -> None:
        for w in self._parquet.values():
            w.close()
        for fh in self._jsonl.values():
            fh.close()


_IDS = ("wecom_external_userid", "unionid", "openid", "phone", "member_id")


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _message(row: dict[str, Any], kind: str, bag: str) -> dict[str, Any]:
    message: dict[str, Any] = {"type": kind, "messageId": row["message_id"], "timestamp": _iso(row["timestamp"])}
    if kind == "track":
        message["event"] = row["event"]
    ids = {k: row[k] for k in _IDS if row.get(k) is not None}
    if ids:
        message["identities"] = ids
    rest = {
        k: v
        for k, v in row.items()
        if v is not None and k not in _IDS and k not in ("message_id", "timestamp", "event")
    }
    if rest:
        message[bag] = rest
    return message


def _order_message(row: dict[str, Any]) -> dict[str, Any]:
    order = {k: v for k, v in row.items() if v is not None and k != "member_id"}
    order["identities"] = {"member_id": row["member_id"]}
    for key in ("paid_at", "updated_at"):
        order[key] = _iso(row[key])
    return order
