"""What customers do, block by block: WeCom adds and deletes, groups and chat, browsing,
favourites and carts, check-ins, referrals, coupons and BG/NBD orders with Gamma-Gamma spend.

Every draw comes from a generator seeded by (seed, block), so a block's output does not depend
on how many other blocks there are or in what order they run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from siyu.simulate.brands import Brand
from siyu.simulate.calendar import HOUR_WEIGHTS, Calendar
from siyu.simulate.population import Population, Staff

#: Browsing events per day of tenure for activity 1.0 (multiplied by the calendar).
BROWSE_RATES = {"view_product": 0.02, "view_content": 0.02, "favorite": 0.004, "add_to_cart": 0.003}
NEW_COUPON_VALUE_FEN = 2000
NEW_COUPON_THRESHOLD_FEN = 9900
NEW_COUPON_DAYS = 14.0
CAMPAIGN_REACH = 0.4  # share of eligible customers sent a campaign coupon (满减)
INDUCED_RATE = 0.35  # × responsiveness: chance a coupon brings an order that would not have happened
COUPON_KINDS = 8  # coupon code = customer number × COUPON_KINDS + kind (0 = 新人券, 1 + i = campaign i)
REFUND_RATE = 0.03
ABUSER_REFUND_RATE = 0.4
REVIEW_RATE = 0.06
SUPER_REVIEW_RATE = 0.6
CONTENT_TYPES = ("图文", "视频", "直播回放", "海报")
WECOM_EVENTS = {
    "add_contact",
    "delete_contact",
    "group_joined",
    "group_left",
    "group_message",
    "view_content",
    "referral_converted",
    "relation_transferred",
}
EVENT_NAMES = (
    "add_contact",
    "delete_contact",
    "relation_transferred",
    "referral_converted",
    "group_joined",
    "group_left",
    "group_message",
    *BROWSE_RATES,
    "check_in",
    "coupon_received",
    "coupon_redeemed",
    "review_posted",
)
#: Integer codes a block fills in, besides the integer properties themselves.
CODES = (
    "staff",
    "from_staff",
    "state",
    "channel",
    "inviter",
    "invitee",
    "chat",
    "product",
    "content",
    "coupon",
    "order",
)
ORDER_SLOTS = 4096  # order code = customer number × ORDER_SLOTS + purchase number
INDUCED_NUMBER = ORDER_SLOTS - COUPON_KINDS  # purchase numbers from here on: coupon-induced orders
CONTENT_ITEMS = 400

STRING_PROPS = (
    "staff_userid",
    "from_staff_userid",
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

    def campaign_terms(self) -> tuple[int, int]:
        """(threshold, value) in fen of the brand's campaign 满减 coupon: about 1.3 × the mean order, 15 % off."""
        s = self.brand.spend
        threshold = int(round(1.3 * s.p * s.gamma / (s.q - 1), -1)) * 100
        return threshold, int(round(threshold * 0.15, -2))

    def __post_init__(self) -> None:
        days = self.cal.days
        self.grid = np.arange(days + 1, dtype=np.float64)
        self.cum_browse = np.concatenate([[0.0], np.cumsum(self.cal.intensity)])
        k = self.brand.order_seasonality
        order = 1.0 + k * (self.cal.intensity - 1.0)
        order = order / order.mean()
        self.cum_order = np.concatenate([[0.0], np.cumsum(order)])

    def timestamps(self, days: np.ndarray) -> pa.Array:
        """UTC timestamps of simulated times (days since day 0); ``inf`` (never) becomes null."""
        finite = np.isfinite(days)
        micros = self.base_us + np.round(np.where(finite, days, 0.0) * 86_400e6).astype(np.int64)
        return pa.array(micros, pa.timestamp("us", tz="UTC"), mask=None if finite.all() else ~finite)

    def numbered(self, prefix: str, numbers: np.ndarray) -> pa.Array:
        """Identifiers of other numbered things (groups, content): ``wrmb1-000042``."""
        text = pc.utf8_lpad(pa.array(numbers, pa.int64()).cast(pa.string()), 6, "0")
        return pc.binary_join_element_wise(f"{prefix}{self.brand.key}{self.seed}-", text, "")

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
    """Events of one block as integer columns, filled one event kind at a time.

    Properties are integer codes (−1 = absent) that :func:`_event_table` turns into strings only
    after sorting: sorting and gathering integers is far cheaper than moving Python strings.
    """

    def __init__(self) -> None:
        self.parts: list[dict[str, Any]] = []

    def add(self, event: str, owner: np.ndarray, t: np.ndarray, **codes: Any) -> None:
        if len(owner):
            self.parts.append({"event": EVENT_NAMES.index(event), "owner": owner, "t": t, **codes})


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
        if k >= INDUCED_NUMBER:
            raise ValueError(f"more than {INDUCED_NUMBER} purchases by one customer: shorten the period")
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
) -> tuple[np.ndarray, np.ndarray]:
    """Per order, the product bought and the one that tops the basket up (indices of sellable products).

    Both suit the baby's age at the order (母婴): the product is drawn by tier among the suitable
    ones the amount affords, else it is the cheapest suitable one, which also tops baskets up.
    """
    products = [p for p in brand.products if p.price_fen > 0]
    price = np.array([p.price_fen for p in products], dtype=np.float64)
    tier_w = {"traffic": 3.0, "star": 3.0, "bespoke": 0.6, "premium": 0.4}
    suits = np.ones((len(amount_fen), len(products)), dtype=bool)
    if brand.has_baby:
        lo = np.array([p.min_baby_months for p in products])
        hi = np.array([p.max_baby_months for p in products])
        suits = (baby_months[:, None] >= lo[None, :]) & (baby_months[:, None] <= hi[None, :])
        suits[~suits.any(axis=1)] = True  # nothing in the catalogue fits: any product will do
    cheapest = np.argmin(np.where(suits, price[None, :], np.inf), axis=1)
    w = np.tile(np.array([tier_w[p.tier] for p in products]), (len(amount_fen), 1))
    w *= suits & (price[None, :] <= np.maximum(amount_fen, price[cheapest])[:, None] * 1.2)
    cum = np.cumsum(w, axis=1)
    u = rng.random(len(amount_fen)) * cum[:, -1]
    return np.minimum((cum < u[:, None]).sum(axis=1), len(products) - 1), cheapest


def _campaign_coupons(
    rng: np.random.Generator,
    world: World,
    rows: _Rows,
    idx: np.ndarray,
    gone: np.ndarray,
    orders: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Send each campaign's 满减 coupon, redeem it on orders, add the orders it induces.

    Returns the orders extended with the induced ones, which campaign each order used (−1 none),
    and how many campaign coupons each customer received.
    """
    pop, lo = world.pop, int(idx[0])
    buyer, paid, number, amount, redeem = orders
    threshold, value = world.campaign_terms()
    used_by = np.full(len(paid), -1, dtype=np.int64)
    received = np.zeros(len(idx), dtype=np.int64)
    registered = np.where(pop.member[idx], pop.acquired[idx] + pop.member_delay[idx], np.inf)
    extra: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for ci, (_name, start, end) in enumerate(world.cal.campaigns()[: COUPON_KINDS - 1]):
        eligible = (pop.acquired[idx] < start) & (gone > start) & ~pop.campaign_holdout[idx]
        sent = eligible & (rng.random(len(idx)) < CAMPAIGN_REACH)
        at = start + rng.uniform(0.3, 0.5, len(idx))  # the campaign's first morning
        received += sent
        rows.add(
            "coupon_received",
            idx[sent],
            at[sent],
            coupon=idx[sent] * COUPON_KINDS + 1 + ci,
            value_fen=np.full(int(sent.sum()), value),
            threshold_fen=np.full(int(sent.sum()), threshold),
        )
        local = buyer - lo
        fits = sent[local] & (paid >= at[local]) & (paid < end) & ~redeem & (used_by < 0) & (amount >= threshold)
        fits &= rng.random(len(paid)) < pop.responsiveness[buyer]
        cand = np.flatnonzero(fits)
        cand = cand[np.lexsort((paid[cand], buyer[cand]))]
        firsts = cand[np.r_[True, buyer[cand][1:] != buyer[cand][:-1]]] if len(cand) else cand
        used_by[firsts] = ci
        has = np.zeros(len(idx), dtype=bool)
        has[buyer[firsts] - lo] = True
        stop = np.minimum(end, gone)
        induce = sent & ~has & (registered < at) & (stop > at)
        induce &= rng.random(len(idx)) < pop.responsiveness[idx] * INDUCED_RATE
        who = idx[induce]
        when = at[induce] + rng.random(len(who)) * (stop[induce] - at[induce])
        spend = np.round(rng.gamma(world.brand.spend.p, 1.0 / pop.nu[who]) * 100).astype(np.int64)
        spend = np.maximum(spend, threshold + rng.integers(0, 2000, len(who)))
        extra.append((who, when, np.full(len(who), INDUCED_NUMBER + ci), spend, np.full(len(who), ci)))
    if extra:
        buyer = np.concatenate([buyer, *[e[0] for e in extra]])
        paid = np.concatenate([paid, *[e[1] for e in extra]])
        number = np.concatenate([number, *[e[2] for e in extra]])
        amount = np.concatenate([amount, *[e[3] for e in extra]])
        redeem = np.concatenate([redeem, np.zeros(sum(len(e[0]) for e in extra), dtype=bool)])
        used_by = np.concatenate([used_by, *[e[4] for e in extra]])
    return buyer, paid, number, amount, redeem, used_by, received


def simulate_block(
    world: World, block: int, lo: int, hi: int, progress: Callable[[float], None] | None = None
) -> Block:
    """Events, orders and per-customer truth for customers ``lo..hi-1``.

    ``progress`` hears the share of the block done (0 to 1) after each stage; it draws nothing,
    so the output is the same with or without it.
    """
    tick = progress or _no_progress
    rng = np.random.default_rng([world.seed, 1_000 + block])
    brand, pop, days = world.brand, world.pop, world.cal.days
    idx = np.arange(lo, hi)
    rows = _Rows()
    acq = pop.acquired[idx]
    churn = pop.churn[idx]
    gone = np.minimum(churn, days)

    # WeCom: the add (through a channel code), the referral credit, the delete.
    inv = pop.inviter[idx]
    rows.add(
        "add_contact",
        idx,
        acq,
        staff=pop.staff[idx],
        state=pop.code[idx],
        channel=pop.channel[idx],
        inviter=inv,
    )
    referred = inv >= 0
    rows.add("referral_converted", inv[referred], acq[referred] + 1e-5, invitee=idx[referred])
    # 离职继承: a resigned staff member's customers pass to the successor a day later (WeCom's 24 h).
    own = pop.staff[idx]
    handed_at = world.staff.resigned_at[own] + 1.0
    handed = (acq < world.staff.resigned_at[own]) & (handed_at < gone)
    successor = world.staff.successor[own]
    rows.add("relation_transferred", idx[handed], handed_at[handed], staff=successor[handed], from_staff=own[handed])
    deleted = np.isfinite(churn)
    last_owner = np.where(handed & (churn > handed_at), successor, own)
    rows.add("delete_contact", idx[deleted], churn[deleted], staff=last_owner[deleted])
    tick(0.05)

    # Groups: join, chat (heavy-tailed), leave.
    gj, gl, grp = pop.group_join[idx], pop.group_leave[idx], pop.group[idx]
    member = np.isfinite(gj)
    rows.add("group_joined", idx[member], gj[member], chat=grp[member])
    left = member & np.isfinite(gl)
    rows.add("group_left", idx[left], gl[left], chat=grp[left])
    owner, t = poisson_times(rng, world, gj[member], np.minimum(gl[member], days), pop.chattiness[idx[member]])
    rows.add("group_message", idx[member][owner], t, chat=grp[member][owner])

    tick(0.1)

    # Browsing while engaged: it fades a month after a buyer drops out; stops at the delete.
    active_end = np.minimum(gone, acq + rng.exponential(240.0, len(idx)))
    for name, rate in BROWSE_RATES.items():
        owner, t = poisson_times(rng, world, acq, active_end, rate * pop.activity[idx])
        if name == "view_content":
            rows.add(name, idx[owner], t, content=rng.integers(0, CONTENT_ITEMS, len(owner)))
        else:
            rows.add(name, idx[owner], t, product=rng.integers(0, len(brand.products), len(owner)))

    tick(0.2)

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
    n_got = int(got.sum())
    rows.add(
        "coupon_received",
        idx[got],
        acq[got] + 0.002,
        coupon=idx[got] * COUPON_KINDS,
        value_fen=np.full(n_got, NEW_COUPON_VALUE_FEN),
        threshold_fen=np.full(n_got, NEW_COUPON_THRESHOLD_FEN),
    )

    tick(0.25)

    # Orders: BG/NBD times, Gamma-Gamma amounts, the funnel before them, reviews after.
    buyer_no, paid, number = _purchases(rng, world, idx)
    amount = np.maximum(100, np.round(rng.gamma(brand.spend.p, 1.0 / pop.nu[buyer_no]) * 100)).astype(np.int64)
    abuse = pop.abuser[buyer_no]
    amount[abuse] = NEW_COUPON_THRESHOLD_FEN + rng.integers(0, 900, int(abuse.sum()))
    first = number == 0
    redeem = first & got[buyer_no - lo] & (paid - acq[buyer_no - lo] <= NEW_COUPON_DAYS)
    redeem &= amount >= NEW_COUPON_THRESHOLD_FEN
    # Campaign coupons: natural orders in the window use them; responsive customers buy once more.
    buyer_no, paid, number, amount, redeem, campaign, counts = _campaign_coupons(
        rng, world, rows, idx, gone, (buyer_no, paid, number, amount, redeem)
    )
    o_local = buyer_no - lo
    abuse = pop.abuser[buyer_no]
    first = number == 0
    baby_now = pop.baby_months[buyer_no] + (paid - pop.acquired[buyer_no]) / 30.4
    sellable = np.array([i for i, p in enumerate(brand.products) if p.price_fen > 0])
    chosen, filler = _choose_products(rng, brand, amount.astype(np.float64), baby_now)
    product, top_up = sellable[chosen], sellable[filler]
    prices = np.array([p.price_fen for p in brand.products], dtype=np.int64)
    price, top_price = prices[product], prices[top_up]
    # The basket: as many of the chosen product as the amount buys, topped up with the cheapest
    # suitable product; what the basket costs over the amount paid is the discount (the coupon included).
    campaign_value = world.campaign_terms()[1]
    target = amount + np.where(redeem, NEW_COUPON_VALUE_FEN, 0) + np.where(campaign >= 0, campaign_value, 0)
    quantity = np.maximum(1, target // price)
    extra = np.maximum(0, -(-(target - quantity * price) // top_price))
    discount = quantity * price + extra * top_price - amount
    same = top_up == product  # one line, not two, when the top-up is the product itself
    quantity[same] += extra[same]
    extra[same] = 0
    order_code = buyer_no * ORDER_SLOTS + number
    refund = rng.random(len(amount)) < np.where(abuse, ABUSER_REFUND_RATE, REFUND_RATE)
    refund_at = np.minimum(paid + rng.uniform(0.5, 7.0, len(paid)), days - 1e-3)
    refund &= refund_at > paid
    n_red = int(redeem.sum())
    rows.add(
        "coupon_redeemed",
        buyer_no[redeem],
        paid[redeem],  # with the order (registration always comes before it)
        coupon=buyer_no[redeem] * COUPON_KINDS,
        order=order_code[redeem],
        value_fen=np.full(n_red, NEW_COUPON_VALUE_FEN),
    )
    used = campaign >= 0
    rows.add(
        "coupon_redeemed",
        buyer_no[used],
        paid[used],
        coupon=buyer_no[used] * COUPON_KINDS + 1 + campaign[used],
        order=order_code[used],
        value_fen=np.full(int(used.sum()), campaign_value),
    )
    view = rng.random(len(paid)) < 0.8
    rows.add(
        "view_product", buyer_no[view], paid[view] - rng.uniform(0.01, 2.0, int(view.sum())), product=product[view]
    )
    cart = rng.random(len(paid)) < 0.6
    rows.add(
        "add_to_cart", buyer_no[cart], paid[cart] - rng.uniform(0.002, 0.25, int(cart.sum())), product=product[cart]
    )
    review = rng.random(len(paid)) < np.where(pop.super_user[buyer_no], SUPER_REVIEW_RATE, REVIEW_RATE)
    rows.add(
        "review_posted",
        buyer_no[review],
        np.minimum(paid[review] + rng.uniform(1, 5, int(review.sum())), days - 1e-3),
        product=product[review],
        order=order_code[review],
    )

    tick(0.35)

    events = _event_table(world, block, rows, lambda f: tick(0.35 + 0.55 * f))
    orders = _order_table(
        world, buyer_no, paid, amount, discount, (product, quantity), (top_up, extra), order_code, refund, refund_at
    )
    tick(1.0)
    natural = number < INDUCED_NUMBER
    truth = {
        "orders": np.bincount(o_local[natural], minlength=len(idx)),
        "induced_orders": np.bincount(o_local[~natural], minlength=len(idx)),
        "redeemed_new_coupon": np.bincount(o_local[redeem], minlength=len(idx)) > 0,
        "campaign_coupons": counts,
        "campaign_redemptions": np.bincount(o_local[used], minlength=len(idx)),
    }
    return Block(events, orders, truth)


def _sparse(codes: np.ndarray, render: Callable[[np.ndarray], pa.Array]) -> pa.Array:
    """Strings for the present codes (≥ 0), nulls elsewhere; ``render`` sees only present codes."""
    present = codes >= 0
    if not present.any():
        return pa.nulls(len(codes), pa.string())
    rendered = render(codes[present])
    position = np.cumsum(present) - 1
    return pc.take(rendered, pa.array(position, mask=~present))


def _lookup(values: list[str]) -> Callable[[np.ndarray], pa.Array]:
    table = pa.array(values, pa.string())
    return lambda codes: pc.take(table, pa.array(codes))


def coupon_ids(world: World, codes: np.ndarray) -> pa.Array:
    """Coupon ids from coupon codes: ``NEW-…`` (新人券) or ``C2-…`` (the third campaign's 满减)."""
    customer, kind = np.divmod(codes, COUPON_KINDS)
    prefix = pc.if_else(
        pa.array(kind == 0), "NEW", pc.binary_join_element_wise("C", pa.array(kind - 1).cast(pa.string()), "")
    )
    return pc.binary_join_element_wise(prefix, world.customer_ids("-", customer), "")


def order_ids(world: World, codes: np.ndarray) -> pa.Array:
    """Order ids ``O…-k`` from order codes (customer number × ORDER_SLOTS + purchase number)."""
    customer, number = np.divmod(codes, ORDER_SLOTS)
    return pc.binary_join_element_wise(world.customer_ids("O", customer), pa.array(number).cast(pa.string()), "-")


def _no_progress(_fraction: float) -> None:
    pass


def _event_table(world: World, block: int, rows: _Rows, tick: Callable[[float], None] = _no_progress) -> pa.Table:
    """Concatenate the event kinds, sort by time, then turn codes into identities and properties."""
    brand, pop = world.brand, world.pop
    n = sum(len(p["owner"]) for p in rows.parts)
    owner = np.empty(n, dtype=np.int64)
    t = np.empty(n)
    name = np.empty(n, dtype=np.int64)
    codes = {c: np.full(n, -1, dtype=np.int64) for c in (*CODES, *INT_PROPS)}
    at = 0
    for part in rows.parts:
        k = len(part["owner"])
        sl = slice(at, at + k)
        owner[sl], t[sl], name[sl] = part["owner"], part["t"], part["event"]
        for key in codes:
            if key in part:
                codes[key][sl] = part[key]
        at += k
    order = np.lexsort((owner, t))
    tick(0.2)
    owner, t, name = owner[order], t[order], name[order]
    codes = {k: v[order] for k, v in codes.items()}

    # Identities: WeCom events carry the external userid, mall (mini-program) events the openid plus
    # the member id once the customer has registered; both carry the unionid when the accounts are
    # linked through the open platform — that is what stitches a contact to their shopper.
    wecom = np.isin(name, [EVENT_NAMES.index(e) for e in WECOM_EVENTS])
    registered_at = np.where(pop.member[owner], pop.acquired[owner] + pop.member_delay[owner], np.inf)
    is_member = t >= registered_at
    ids = lambda prefix: lambda c: world.customer_ids(prefix, c)  # noqa: E731
    ts = world.timestamps(t)
    msg = pc.binary_join_element_wise(
        f"{brand.key}{world.seed}-b{block}-", pa.array(np.arange(n)).cast(pa.string()), ""
    )
    product = codes["product"]
    # The state code is the channel code's number over all channels (channel by channel).
    states = [f"{c.key}-{i}" for c, k in zip(brand.channels, pop.codes_per_channel, strict=True) for i in range(k)]
    data: dict[str, pa.Array] = {
        "message_id": msg,
        "event": pc.take(pa.array(EVENT_NAMES, pa.string()), pa.array(name)),
        "timestamp": ts,
        "wecom_external_userid": _sparse(np.where(wecom, owner, -1), ids("wm")),
        "unionid": _sparse(np.where(pop.linked[owner], owner, -1), ids("un")),
        "openid": _sparse(np.where(wecom, -1, owner), ids("op")),
        "member_id": _sparse(np.where(~wecom & is_member, owner, -1), ids("M")),
    }
    tick(0.55)
    data |= {
        "staff_userid": _sparse(codes["staff"], _lookup(world.staff.userids)),
        "from_staff_userid": _sparse(codes["from_staff"], _lookup(world.staff.userids)),
        "state": _sparse(codes["state"], _lookup(states)),
        "channel": _sparse(codes["channel"], _lookup([c.name for c in brand.channels])),
        "inviter": _sparse(codes["inviter"], ids("wm")),
        "invitee": _sparse(codes["invitee"], ids("wm")),
        "chat_id": _sparse(codes["chat"], lambda c: world.numbered("wr", c)),
        "sku": _sparse(product, _lookup([p.sku for p in brand.products])),
        "category": _sparse(product, _lookup([p.category for p in brand.products])),
        "content_id": _sparse(codes["content"], lambda c: world.numbered("c", c)),
        "content_type": _sparse(codes["content"], lambda c: _lookup(list(CONTENT_TYPES))(c % len(CONTENT_TYPES))),
        "coupon_id": _sparse(codes["coupon"], lambda c: coupon_ids(world, c)),
        "coupon_type": _sparse(
            np.where(codes["coupon"] >= 0, np.minimum(codes["coupon"] % COUPON_KINDS, 1), -1),
            _lookup(["新人券", "满减"]),
        ),
        "order_id": _sparse(codes["order"], lambda c: order_ids(world, c)),
    }
    prices = np.array([p.price_fen for p in brand.products], dtype=np.int64)
    codes["price_fen"] = np.where(product >= 0, prices[np.maximum(product, 0)], -1)
    for key in INT_PROPS:
        data[key] = pa.array(codes[key], pa.int64(), mask=codes[key] < 0)
    table = pa.table(data, schema=EVENT_SCHEMA)
    tick(1.0)
    return table


def _order_table(
    world: World,
    buyer: np.ndarray,
    paid: np.ndarray,
    amount: np.ndarray,
    discount: np.ndarray,
    main: tuple[np.ndarray, np.ndarray],
    top_up: tuple[np.ndarray, np.ndarray],
    order_code: np.ndarray,
    refund: np.ndarray,
    refund_at: np.ndarray,
) -> pa.Table:
    """Paid orders, and a later refunded version of the refunded ones."""
    products = world.brand.products

    product, quantity = main
    filler, extra = top_up
    lines = 1 + (extra > 0)
    offsets = np.concatenate([[0], np.cumsum(lines)]).astype(np.int32)
    second = np.flatnonzero(extra > 0)
    pos = offsets[:-1].astype(np.int64)
    n_lines = int(offsets[-1])
    l_product = np.empty(n_lines, dtype=np.int64)
    l_qty = np.empty(n_lines, dtype=np.int64)
    l_product[pos], l_qty[pos] = product, quantity
    l_product[pos[second] + 1], l_qty[pos[second] + 1] = filler[second], extra[second]
    take = pa.array(l_product)
    items = pa.ListArray.from_arrays(
        offsets,
        pa.StructArray.from_arrays(
            [
                pc.take(pa.array([p.sku for p in products], pa.string()), take),
                pc.take(pa.array([p.category for p in products], pa.string()), take),
                pa.array(l_qty),
                pc.take(pa.array([p.price_fen for p in products], pa.int64()), take),
            ],
            fields=list(ITEM_TYPE),
        ),
    )
    members = world.customer_ids("M", buyer)
    paid_table = pa.table(
        {
            "order_id": order_ids(world, order_code),
            "status": pa.array(["paid"] * len(buyer), pa.string()),
            "member_id": members,
            "paid_at": world.timestamps(paid),
            "updated_at": world.timestamps(paid),
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
    refunded = refunded.set_column(4, "updated_at", world.timestamps(refund_at[r]))
    refunded = refunded.set_column(7, "refund_fen", pa.array(amount[r]))
    both = pa.concat_tables([paid_table, refunded])
    return both.take(pc.sort_indices(both, [("updated_at", "ascending"), ("order_id", "ascending")]))
