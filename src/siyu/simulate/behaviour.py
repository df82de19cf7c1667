"""What customers do, block by block: WeCom adds and deletes, groups and chat, browsing,
favourites and carts, check-ins, referrals, coupons and BG/NBD orders with Gamma-Gamma spend.

Every draw comes from a generator seeded by (seed, block), so a block's output does not depend
on how many other blocks there are or in what order they run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from siyu.simulate.brands import Brand, Product
from siyu.simulate.calendar import HOUR_WEIGHTS, Calendar
from siyu.simulate.population import Population, Staff

#: Browsing events per day of tenure for activity 1.0 (multiplied by the calendar).
BROWSE_RATES = {"view_product": 0.02, "view_content": 0.02, "favorite": 0.004, "add_to_cart": 0.003}
NEW_COUPON_VALUE_FEN = 2000
NEW_COUPON_THRESHOLD_FEN = 9900
NEW_COUPON_DAYS = 14.0
REFUND_RATE = 0.03
ABUSER_REFUND_RATE = 0.4
REVIEW_RATE = 0.06
SUPER_REVIEW_RATE = 0.6
CONTENT_TYPES = ("图文", "视频", "直播回放", "海报")
WECOM_EVENTS = {"add_contact", "delete_contact", "group_joined", "group_left", "group_message", "view_content"}

STRING_PROPS = (
    "staff_userid",
    "state",
    "channel",
    "inviter",
    "invitee",
    "chat_id",
    "sku",
    "category",
    "content_id",
    "content_type",
    "coupon_id",
    "coupon_type",
    "order_id",
)
INT_PROPS = ("price_fen", "value_fen", "threshold_fen", "streak", "points")

EVENT_SCHEMA = pa.schema(
    [
        ("message_id", pa.string()),
        ("event", pa.string()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("wecom_external_userid", pa.string()),
        ("unionid", pa.string()),
        ("openid", pa.string()),
        ("member_id", pa.string()),
        *[(name, pa.string()) for name in STRING_PROPS],
        *[(name, pa.int64()) for name in INT_PROPS],
    ]
)

ITEM_TYPE = pa.struct(
    [("sku", pa.string()), ("category", pa.string()), ("quantity", pa.int64()), ("price_fen", pa.int64())]
)
ORDER_SCHEMA = pa.schema(
    [
        ("order_id", pa.string()),
        ("status", pa.string()),
        ("member_id", pa.string()),
        ("paid_at", pa.timestamp("us", tz="UTC")),
        ("updated_at", pa.timestamp("us", tz="UTC")),
        ("amount_fen", pa.int64()),
        ("discount_fen", pa.int64()),
        ("refund_fen", pa.int64()),
        ("items", pa.list_(ITEM_TYPE)),
        ("channel", pa.string()),
    ]
)


@dataclass
class World:
    """Everything shared by the blocks."""

    brand: Brand
    seed: int
    cal: Calendar
    pop: Population
    staff: Staff
    base_us: int  # UTC microseconds of local midnight of day 0
    grid: np.ndarray = field(init=False)  # day boundaries 0..days
    cum_browse: np.ndarray = field(init=False)  # cumulative calendar intensity at the boundaries
    cum_order: np.ndarray = field(init=False)  # cumulative order intensity (operational time)

    def __post_init__(self) -> None:
        days = self.cal.days
        self.grid = np.arange(days + 1, dtype=np.float64)
        self.cum_browse = np.concatenate([[0.0], np.cumsum(self.cal.intensity)])
        k = self.brand.order_seasonality
        order = 1.0 + k * (self.cal.intensity - 1.0)
        order = order / order.mean()
        self.cum_order = np.concatenate([[0.0], np.cumsum(order)])

    def customer_ids(self, prefix: str, numbers: np.ndarray) -> pa.Array:
        """Deterministic identifier strings such as ``wm…`` / ``M…`` for customer numbers."""
        text = pc.utf8_lpad(pa.array(numbers, pa.int64()).cast(pa.string()), 9, "0")
        return pc.binary_join_element_wise(f"{prefix}{self.brand.key}{self.seed}x", text, "")


@dataclass
class Block:
    """The events and orders of one block of customers (ground truth per customer beside them)."""

    events: pa.Table
    orders: pa.Table
    truth: dict[str, np.ndarray]


class _Rows:
    """Column buffers for a block's events, filled one event kind at a time."""

    def __init__(self) -> None:
        self.parts: list[dict[str, Any]] = []

    def add(self, event: str, owner: np.ndarray, t: np.ndarray, **props: Any) -> None:
        if len(owner):
            self.parts.append({"event": event, "owner": owner, "t": t, **props})


def _retime(rng: np.random.Generator, t: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Keep the day, draw the hour from the activity profile, and stay inside [lo, hi)."""
    hours = rng.choice(24, size=len(t), p=HOUR_WEIGHTS)
    out = np.floor(t) + (hours + rng.random(len(t))) / 24.0
    out = np.where(out < lo, lo + (t - lo) * 0.5 + 1e-4, out)
    return np.where(out >= hi, np.maximum(lo, hi - 1e-3), out)


def poisson_times(
    rng: np.random.Generator,
    world: World,
    start: np.ndarray,
    stop: np.ndarray,
    rate: np.ndarray,
    cum: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Event times of inhomogeneous Poisson processes (rate × calendar), one per row: (row, time)."""
    cum = world.cum_browse if cum is None else cum
    days = world.cal.days
    stop = np.minimum(stop, days)
    live = stop > start
    a = np.interp(np.where(live, start, 0.0), world.grid, cum)
    b = np.interp(np.where(live, stop, 0.0), world.grid, cum)
    mean = np.where(live, rate * (b - a), 0.0)
    counts = rng.poisson(mean)
    owner = np.repeat(np.arange(len(start)), counts)
    u = a[owner] + rng.random(len(owner)) * (b - a)[owner]
    t = np.interp(u, cum, world.grid)
    return owner, _retime(rng, t, start[owner], stop[owner])


def _purchases(rng: np.random.Generator, world: World, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BG/NBD purchase times for customers ``idx``: (customer, day, purchase number); plus drop-out flags."""
    pop, days = world.pop, world.cal.days
    first = pop.acquired[idx] + pop.first_delay[idx]
    ok = pop.buyer[idx] & (first < days)
    who = idx[ok]
    t = first[ok]
    owners, times, numbers = [who], [t], [np.zeros(len(who), dtype=np.int64)]
    u = np.interp(t, world.grid, world.cum_order)
    lam, p = pop.lam[who], pop.p_drop[who]
    # BG/NBD: everyone is alive after the first (trial) purchase; drop-out may follow each repeat.
    # Abusers take their coupon and never come back.
    alive = ~pop.abuser[who]
    k = 0
    end_u = world.cum_order[-1]
    while alive.any():
        k += 1
        sel = np.flatnonzero(alive)
        u[sel] = u[sel] + rng.exponential(1.0 / lam[sel])
        inside = u[sel] < end_u
        sel_in = sel[inside]
        alive[sel[~inside]] = False
        if not len(sel_in):
            break
        owners.append(who[sel_in])
        times.append(np.interp(u[sel_in], world.cum_order, world.grid))
        numbers.append(np.full(len(sel_in), k, dtype=np.int64))
        drop = rng.random(len(sel_in)) < p[sel_in]
        alive[sel_in[drop]] = False
    owner = np.concatenate(owners)
    when = np.concatenate(times)
    number = np.concatenate(numbers)
    return owner, when, number


def _choose_products(
    rng: np.random.Generator, brand: Brand, amount_fen: np.ndarray, baby_months: np.ndarray
) -> np.ndarray:
    """One product per order: suited to the baby's age (母婴) and affordable for the amount."""
    products = [p for p in brand.products if p.price_fen > 0]
    price = np.array([p.price_fen for p in products], dtype=np.float64)
    tier_w = {"traffic": 3.0, "star": 3.0, "bespoke": 0.6, "premium": 0.4}
    w = np.tile(np.array([tier_w[p.tier] for p in products]), (len(amount_fen), 1))
    w *= price[None, :] <= np.maximum(amount_fen, price.min())[:, None] * 1.2
    if brand.has_baby:
        lo = np.array([p.min_baby_months for p in products])
        hi = np.array([p.max_baby_months for p in products])
        suits = (baby_months[:, None] >= lo[None, :]) & (baby_months[:, None] <= hi[None, :])
        w = np.where(suits & (w > 0), w, w * 0.02)
    w[w.sum(axis=1) == 0, int(np.argmin(price))] = 1.0
    cum = np.cumsum(w, axis=1)
    u = rng.random(len(amount_fen)) * cum[:, -1]
    return np.minimum((cum < u[:, None]).sum(axis=1), len(products) - 1)


def simulate_block(world: World, block: int, lo: int, hi: int) -> Block:
    """Events, orders and per-customer truth for customers ``lo..hi-1``."""
    rng = np.random.default_rng([world.seed, 1_000 + block])
    brand, pop, days = world.brand, world.pop, world.cal.days
    idx = np.arange(lo, hi)
    rows = _Rows()
    acq = pop.acquired[idx]
    churn = pop.churn[idx]
    gone = np.minimum(churn, days)
    staff_ids = np.array(world.staff.userids, dtype=object)
    channel_keys = np.array([c.key for c in brand.channels], dtype=object)
    channel_names = np.array([c.name for c in brand.channels], dtype=object)

    # WeCom: the add (through a channel code), the referral credit, the delete.
    state = channel_keys[pop.channel[idx]] + "-" + pop.code[idx].astype(str)
    inv = pop.inviter[idx]
    rows.add(
        "add_contact",
        idx,
        acq,
        staff_userid=staff_ids[pop.staff[idx]],
        state=state,
        channel=channel_names[pop.channel[idx]],
        inviter_no=inv,
    )
    referred = inv >= 0
    rows.add("referral_converted", inv[referred], acq[referred] + 1e-5, invitee_no=idx[referred], wecom=True)
    deleted = np.isfinite(churn)
    rows.add("delete_contact", idx[deleted], churn[deleted], staff_userid=staff_ids[pop.staff[idx[deleted]]])

    # Groups: join, chat (heavy-tailed), leave.
    gj, gl, grp = pop.group_join[idx], pop.group_leave[idx], pop.group[idx]
    member = np.isfinite(gj)
    chat = np.array([f"wr{brand.key}{world.seed}g{g:06d}" for g in grp[member]], dtype=object)
    rows.add("group_joined", idx[member], gj[member], chat_id=chat)
    left = member & np.isfinite(gl)
    rows.add("group_left", idx[left], gl[left], chat_id=chat[np.isfinite(gl[member])])
    owner, t = poisson_times(rng, world, gj[member], np.minimum(gl[member], days), pop.chattiness[idx[member]])
    rows.add("group_message", idx[member][owner], t, chat_id=chat[owner])

    # Browsing while engaged: it fades a month after a buyer drops out; stops at the delete.
    active_end = np.minimum(gone, acq + rng.exponential(240.0, len(idx)))
    for name, rate in BROWSE_RATES.items():
        owner, t = poisson_times(rng, world, acq, active_end, rate * pop.activity[idx])
        props: dict[str, Any] = {}
        if name == "view_content":
            content = rng.integers(0, 400, len(owner))
            props = {
                "content_id": np.array([f"c{brand.key}{c:04d}" for c in content], dtype=object),
                "content_type": np.array(CONTENT_TYPES, dtype=object)[content % len(CONTENT_TYPES)],
            }
        else:
            props = {"product_no": rng.integers(0, len(brand.products), len(owner))}
        rows.add(name, idx[owner], t, **props)

    # Check-in streaks.
    owner, t = poisson_times(rng, world, acq, gone, pop.checkin_rate[idx])
    length = rng.geometric(0.25, len(owner))
    who = np.repeat(owner, length)
    step = np.arange(len(who)) - np.repeat(np.cumsum(length) - length, length)
    when = np.floor(t)[np.repeat(np.arange(len(owner)), length)] + step + 0.3 + rng.random(len(who)) * 0.5
    keep = when < gone[who]
    rows.add("check_in", idx[who[keep]], when[keep], streak=step[keep] + 1, points=np.minimum(step[keep] + 1, 7) * 10)

    # 新人券 for everyone outside the holdout, at the add.
    got = ~pop.holdout[idx]
    coupon_t = acq + 0.002
    coupon_ids = world.customer_ids("NEW-", idx).to_numpy(zero_copy_only=False)
    rows.add(
        "coupon_received",
        idx[got],
        coupon_t[got],
        coupon_id=coupon_ids[got],
        coupon_type=np.full(int(got.sum()), "新人券", dtype=object),
        value_fen=np.full(int(got.sum()), NEW_COUPON_VALUE_FEN),
        threshold_fen=np.full(int(got.sum()), NEW_COUPON_THRESHOLD_FEN),
    )

    # Orders: BG/NBD times, Gamma-Gamma amounts, the funnel before them, reviews after.
    buyer_no, paid, number = _purchases(rng, world, idx)
    o_local = buyer_no - lo
    amount = np.maximum(100, np.round(rng.gamma(brand.spend.p, 1.0 / pop.nu[buyer_no]) * 100)).astype(np.int64)
    abuse = pop.abuser[buyer_no]
    amount[abuse] = NEW_COUPON_THRESHOLD_FEN + rng.integers(0, 900, int(abuse.sum()))
    first = number == 0
    redeem = first & got[o_local] & (paid - acq[o_local] <= NEW_COUPON_DAYS) & (amount >= NEW_COUPON_THRESHOLD_FEN)
    baby_now = pop.baby_months[buyer_no] + (paid - pop.acquired[buyer_no]) / 30.4
    products = [p for p in brand.products if p.price_fen > 0]
    pick = _choose_products(rng, brand, amount.astype(np.float64), baby_now)
    price = np.array([p.price_fen for p in products], dtype=np.int64)[pick]
    # The basket: as many of the chosen product as the amount buys, topped up with the cheapest
    # product; what the basket costs over the amount paid is the discount (the coupon included).
    target = amount + np.where(redeem, NEW_COUPON_VALUE_FEN, 0)
    quantity = np.maximum(1, target // price)
    cheapest = min(products, key=lambda p: p.price_fen)
    extra = np.maximum(0, -(-(target - quantity * price) // cheapest.price_fen))
    discount = quantity * price + extra * cheapest.price_fen - amount
    order_ids = pc.binary_join_element_wise(
        world.customer_ids("O", buyer_no), pa.array(number).cast(pa.string()), "-"
    ).to_numpy(zero_copy_only=False)
    refund = rng.random(len(amount)) < np.where(abuse, ABUSER_REFUND_RATE, REFUND_RATE)
    refund_at = np.minimum(paid + rng.uniform(0.5, 7.0, len(paid)), days - 1e-3)
    refund &= refund_at > paid
    sku = np.array([p.sku for p in products], dtype=object)[pick]
    cat = np.array([p.category for p in products], dtype=object)[pick]
    rows.add(
        "coupon_redeemed",
        buyer_no[redeem],
        paid[redeem],  # with the order (registration always comes before it)
        coupon_id=coupon_ids[o_local[redeem]],
        coupon_type=np.full(int(redeem.sum()), "新人券", dtype=object),
        order_id=order_ids[redeem],
        value_fen=np.full(int(redeem.sum()), NEW_COUPON_VALUE_FEN),
    )
    view = rng.random(len(paid)) < 0.8
    rows.add(
        "view_product",
        buyer_no[view],
        paid[view] - rng.uniform(0.01, 2.0, int(view.sum())),
        sku=sku[view],
        category=cat[view],
        price_fen=price[view],
    )
    cart = rng.random(len(paid)) < 0.6
    rows.add(
        "add_to_cart",
        buyer_no[cart],
        paid[cart] - rng.uniform(0.002, 0.25, int(cart.sum())),
        sku=sku[cart],
        category=cat[cart],
        price_fen=price[cart],
    )
    review = rng.random(len(paid)) < np.where(pop.super_user[buyer_no], SUPER_REVIEW_RATE, REVIEW_RATE)
    rows.add(
        "review_posted",
        buyer_no[review],
        np.minimum(paid[review] + rng.uniform(1, 5, int(review.sum())), days - 1e-3),
        sku=sku[review],
        order_id=order_ids[review],
    )

    events = _event_table(world, rng, block, rows)
    orders = _order_table(
        world,
        buyer_no,
        paid,
        amount,
        discount,
        (sku, cat, quantity, price),
        (cheapest, extra),
        order_ids,
        refund,
        refund_at,
    )
    counts = np.bincount(o_local, minlength=len(idx))
    truth = {"orders": counts, "redeemed_new_coupon": np.bincount(o_local[redeem], minlength=len(idx)) > 0}
    return Block(events, orders, truth)


def _event_table(world: World, rng: np.random.Generator, block: int, rows: _Rows) -> pa.Table:
    """Concatenate the event kinds, resolve identities and properties, sort by time."""
    brand, pop = world.brand, world.pop
    n = sum(len(p["owner"]) for p in rows.parts)
    owner = np.empty(n, dtype=np.int64)
    t = np.empty(n)
    name = np.empty(n, dtype=object)
    wecom = np.zeros(n, dtype=bool)
    cols: dict[str, np.ndarray] = {c: np.full(n, None, dtype=object) for c in STRING_PROPS}
    ints: dict[str, np.ndarray] = {c: np.full(n, -1, dtype=np.int64) for c in INT_PROPS}
    product_no = np.full(n, -1, dtype=np.int64)
    inviter_no = np.full(n, -1, dtype=np.int64)
    invitee_no = np.full(n, -1, dtype=np.int64)
    at = 0
    for part in rows.parts:
        o = part["owner"]
        k = len(o)
        sl = slice(at, at + k)
        owner[sl], t[sl], name[sl] = o, part["t"], part["event"]
        wecom[sl] = part["event"] in WECOM_EVENTS or bool(part.get("wecom", False))
        for key, value in part.items():
            if key in cols:
                cols[key][sl] = value
            elif key in ints:
                ints[key][sl] = value
            elif key == "product_no":
                product_no[sl] = value
            elif key == "inviter_no":
                inviter_no[sl] = value
            elif key == "invitee_no":
                invitee_no[sl] = value
        at += k
    order = np.lexsort((owner, t))
    owner, t, name, wecom = owner[order], t[order], name[order], wecom[order]
    cols = {k: v[order] for k, v in cols.items()}
    ints = {k: v[order] for k, v in ints.items()}
    product_no, inviter_no, invitee_no = product_no[order], inviter_no[order], invitee_no[order]

    has_product = product_no >= 0
    products = brand.products
    cols["sku"][has_product] = np.array([p.sku for p in products], dtype=object)[product_no[has_product]]
    cols["category"][has_product] = np.array([p.category for p in products], dtype=object)[product_no[has_product]]
    ints["price_fen"][has_product] = np.array([p.price_fen for p in products])[product_no[has_product]]
    ext = world.customer_ids("wm", np.arange(pop.n)).to_numpy(zero_copy_only=False)
    has_inv = inviter_no >= 0
    cols["inviter"][has_inv] = ext[inviter_no[has_inv]]
    has_invitee = invitee_no >= 0
    cols["invitee"][has_invitee] = ext[invitee_no[has_invitee]]

    # Identities: WeCom events carry the external userid, mall (mini-program) events the openid plus
    # the member id once the customer has registered; both carry the unionid when the accounts are
    # linked through the open platform — that is what stitches a contact to their shopper.
    linked = pop.linked[owner]
    registered_at = np.where(pop.member[owner], pop.acquired[owner] + pop.member_delay[owner], np.inf)
    is_member = t >= registered_at
    ts = pa.array(world.base_us + np.round(t * 86_400e6).astype(np.int64), pa.timestamp("us", tz="UTC"))
    numbers = np.arange(n)
    msg = pc.binary_join_element_wise(f"{brand.key}{world.seed}-b{block}-", pa.array(numbers).cast(pa.string()), "")
    data: dict[str, pa.Array] = {
        "message_id": msg,
        "event": pa.array(name, pa.string()),
        "timestamp": ts,
        "wecom_external_userid": _masked(world.customer_ids("wm", owner), wecom),
        "unionid": _masked(world.customer_ids("un", owner), linked),
        "openid": _masked(world.customer_ids("op", owner), ~wecom),
        "member_id": _masked(world.customer_ids("M", owner), ~wecom & is_member),
    }
    for key in STRING_PROPS:
        data[key] = pa.array(cols[key], pa.string())
    for key in INT_PROPS:
        data[key] = pa.array(ints[key], pa.int64(), mask=ints[key] < 0)
    return pa.table(data, schema=EVENT_SCHEMA)


def _masked(values: pa.Array, keep: np.ndarray) -> pa.Array:
    return pc.if_else(pa.array(keep), values, pa.scalar(None, pa.string()))


def _order_table(
    world: World,
    buyer: np.ndarray,
    paid: np.ndarray,
    amount: np.ndarray,
    discount: np.ndarray,
    main: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    top_up: tuple[Product, np.ndarray],
    order_ids: np.ndarray,
    refund: np.ndarray,
    refund_at: np.ndarray,
) -> pa.Table:
    """Paid orders, and a later refunded version of the refunded ones."""
    to_ts = lambda d: pa.array(world.base_us + np.round(d * 86_400e6).astype(np.int64), pa.timestamp("us", tz="UTC"))  # noqa: E731
    sku, cat, quantity, price = main
    cheapest, extra = top_up
    lines = 1 + (extra > 0)
    offsets = np.concatenate([[0], np.cumsum(lines)]).astype(np.int32)
    second = np.flatnonzero(extra > 0)
    pos = offsets[:-1].astype(np.int64)
    n_lines = int(offsets[-1])
    l_sku = np.empty(n_lines, dtype=object)
    l_cat = np.empty(n_lines, dtype=object)
    l_qty = np.empty(n_lines, dtype=np.int64)
    l_price = np.empty(n_lines, dtype=np.int64)
    l_sku[pos], l_cat[pos], l_qty[pos], l_price[pos] = sku, cat, quantity, price
    at = pos[second] + 1
    l_sku[at], l_cat[at], l_qty[at], l_price[at] = cheapest.sku, cheapest.category, extra[second], cheapest.price_fen
    items = pa.ListArray.from_arrays(
        offsets,
        pa.StructArray.from_arrays(
            [pa.array(l_sku, pa.string()), pa.array(l_cat, pa.string()), pa.array(l_qty), pa.array(l_price)],
            fields=list(ITEM_TYPE),
        ),
    )
    members = world.customer_ids("M", buyer)
    paid_table = pa.table(
        {
            "order_id": pa.array(order_ids, pa.string()),
            "status": pa.array(np.full(len(buyer), "paid", dtype=object), pa.string()),
            "member_id": members,
            "paid_at": to_ts(paid),
            "updated_at": to_ts(paid),
            "amount_fen": pa.array(amount),
            "discount_fen": pa.array(discount),
            "refund_fen": pa.array(np.zeros(len(buyer), dtype=np.int64)),
            "items": items,
            "channel": pa.array(np.full(len(buyer), "小程序", dtype=object), pa.string()),
        },
        schema=ORDER_SCHEMA,
    )
    r = np.flatnonzero(refund)
    refunded = paid_table.take(pa.array(r)).set_column(1, "status", pa.array(["refunded"] * len(r), pa.string()))
    refunded = refunded.set_column(4, "updated_at", to_ts(refund_at[r]))
    refunded = refunded.set_column(7, "refund_fen", pa.array(amount[r]))
    both = pa.concat_tables([paid_table, refunded])
    return both.take(pc.sort_indices(both, [("updated_at", "ascending"), ("order_id", "ascending")]))
