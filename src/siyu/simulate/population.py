"""Who the customers are: acquisition, channel, staff, demographics and latent behaviour.

Everything here is drawn for the whole population at once (numpy arrays, one entry per customer),
so that cross-customer structure — referral trees, staff routing, group filling — is exact. The
per-event behaviour (:mod:`siyu.simulate.behaviour`) is then drawn block by block.

Time is measured in days (float) since local midnight of the first simulated day.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from siyu.simulate.brands import Brand
from siyu.simulate.calendar import HOUR_WEIGHTS, Calendar

SUPER_USER_SHARE = 0.03
ABUSER_SHARE = 0.02
HOLDOUT_SHARE = 0.1  # new contacts who get no 新人券: the control group of the planted coupon uplift
CAMPAIGN_HOLDOUT_SHARE = 0.1  # customers who never get campaign coupons: the control group of campaign uplift
COUPON_UPLIFT = 0.08  # true absolute lift of the 新人券 on the first-order probability
UNIONID_LINK_RATE = 0.92  # share whose WeCom contact carries the unionid that links it to the mall
RESIGN_SHARE = 0.06  # staff who resign mid-period (at least one whenever the team has two members)
CODE_STAFF = 3  # a channel code (活码) spreads its adds over this many staff beyond its own arc
LAMBDA_CAP = 0.3  # purchases per day: no one buys more often than every three days on average


@dataclass
class Staff:
    """The staff team: ids, and when (if) each resigns and who inherits their customers."""

    userids: list[str]
    resigned_at: np.ndarray  # day, or inf
    successor: np.ndarray  # index of the inheriting staff member, or -1


@dataclass
class Population:
    """One array per attribute, indexed by customer number 0..n-1."""

    n: int
    acquired: np.ndarray  # day of the WeCom add
    channel: np.ndarray  # index into brand.channels
    code: np.ndarray  # channel-code number over all the brand's codes, channel by channel (the add's `state`)
    codes_per_channel: np.ndarray  # channel codes of each channel (the brand's, more for a big team)
    staff: np.ndarray  # index of the staff member who added them
    city: np.ndarray  # index into brand.cities
    female: np.ndarray  # bool
    age: np.ndarray  # years
    baby_months: np.ndarray  # the baby's age in months at acquisition (母婴), else 0
    activity: np.ndarray  # browsing intensity multiplier (lognormal)
    lam: np.ndarray  # BG/NBD purchase rate per day
    p_drop: np.ndarray  # BG/NBD drop-out probability after each purchase
    nu: np.ndarray  # Gamma-Gamma scale of spend (rate of the per-order Gamma)
    buyer: np.ndarray  # ever places a first order
    first_delay: np.ndarray  # days from the add to the first order
    member: np.ndarray  # registers as a mall member
    member_delay: np.ndarray  # days from the add to registration
    linked: np.ndarray  # unionid links the WeCom contact to the mall account
    super_user: np.ndarray
    abuser: np.ndarray
    ring: np.ndarray  # abusers sharing one phone have the same ring number (else -1)
    holdout: np.ndarray  # no 新人券
    campaign_holdout: np.ndarray  # no campaign coupons
    responsiveness: np.ndarray  # chance of using a campaign coupon on an order, and of an extra order for it
    inviter: np.ndarray  # customer number of the inviter (referral channel), else -1
    group_join: np.ndarray  # day of joining a customer group, or inf
    group: np.ndarray  # group number, or -1
    group_leave: np.ndarray  # day of leaving the group, or inf
    chattiness: np.ndarray  # group messages per day while a member (heavy-tailed)
    checkin_rate: np.ndarray  # check-in streak starts per day (0 for most)
    churn: np.ndarray  # day the customer deletes the staff member, or inf


def local_times(rng: np.random.Generator, days: np.ndarray) -> np.ndarray:
    """Whole days plus a time of day drawn from the hourly activity profile."""
    hours = rng.choice(24, size=len(days), p=HOUR_WEIGHTS)
    return np.floor(days) + (hours + rng.random(len(days))) / 24.0


def _acquisition_days(rng: np.random.Generator, n: int, cal: Calendar) -> np.ndarray:
    # A growing pool: inflow ramps from 0.7× to 1.3× over the period, times the calendar.
    trend = np.linspace(0.7, 1.3, cal.days)
    weights = trend * cal.intensity
    day = rng.choice(cal.days, size=n, p=weights / weights.sum())
    return np.sort(local_times(rng, day.astype(np.float64)))


def build_staff(rng: np.random.Generator, brand: Brand, n: int, days: int, seed: int) -> Staff:
    """A team sized to the customer count; a few resign between 20 % and 80 % of the period.

    At least one resigns whenever the team has two members or more, so every run has a 离职继承
    (handover) to show; the first member always stays.
    """
    count = int(max(5, -(-n // brand.customers_per_staff)))
    userids = [f"{brand.key}{seed}-staff-{i:05d}" for i in range(count)]
    resigned = np.full(count, np.inf)
    successor = np.full(count, -1, dtype=np.int64)
    leavers = rng.random(count) < RESIGN_SHARE
    leavers[0] = False  # someone always stays
    if count >= 2 and not leavers.any():
        leavers[rng.integers(1, count)] = True
    idx = np.flatnonzero(leavers)
    resigned[idx] = rng.uniform(0.2 * days, 0.8 * days, len(idx))
    stayers = np.flatnonzero(~leavers)
    successor[idx] = rng.choice(stayers, len(idx))
    return Staff(userids, resigned, successor)


def channel_codes(brand: Brand, staff_count: int) -> np.ndarray:
    """Channel codes per channel: the brand's own, multiplied for a team too big to share them
    (a bigger team runs more stores, parcel-card batches and ad plans), so that a code still
    routes to a few staff: about one code per :data:`CODE_STAFF` staff at least."""
    base = np.array([c.codes for c in brand.channels], dtype=np.int64)
    return base * max(1, -(-staff_count // (int(base.sum()) * CODE_STAFF)))


def code_arcs(brand: Brand, codes_per_channel: np.ndarray, staff_count: int) -> tuple[np.ndarray, np.ndarray]:
    """Where each channel code routes: an arc (start, length) on the circle of staff ``0..count``.

    The codes, channel by channel, take consecutive arcs whose lengths are their share of the
    inflow, so together they cover the team exactly once. Codes are numbered channel by channel.
    """
    shares = np.array([c.share for c in brand.channels])
    load = np.repeat(shares / codes_per_channel, codes_per_channel)
    length = staff_count * load / load.sum()
    return np.cumsum(length) - length, length


def _route(
    rng: np.random.Generator, acquired: np.ndarray, code: np.ndarray, arcs: tuple[np.ndarray, np.ndarray], staff: Staff
) -> np.ndarray:
    """The staff member each contact adds; a resigned one's successor takes their adds from the day they leave.

    A contact lands at a uniform point of their code's arc (:func:`code_arcs`) moved on by a uniform
    spread of :data:`CODE_STAFF` staff: a code reaches the few staff its arc and the spread touch,
    and since the arcs tile the circle, every staff member expects exactly the same share of adds.
    """
    count = len(staff.userids)
    start, length = arcs
    point = start[code] + rng.random(len(acquired)) * length[code]
    point += rng.random(len(acquired)) * min(CODE_STAFF, count)
    pick = np.floor(point).astype(np.int64) % count
    gone = acquired >= staff.resigned_at[pick]
    pick[gone] = staff.successor[pick[gone]]
    return pick


def _pick_inviters(rng: np.random.Generator, invitee: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """For each invitee (customers are sorted by acquisition), an inviter among earlier customers."""
    inviter = np.full(len(weight), -1, dtype=np.int64)
    cum = np.cumsum(weight)
    idx = np.flatnonzero(invitee)
    idx = idx[idx > 0]
    u = rng.random(len(idx)) * cum[idx - 1]
    inviter[idx] = np.minimum(np.searchsorted(cum, u, side="right"), idx - 1)
    return inviter


def build_population(rng: np.random.Generator, brand: Brand, n: int, cal: Calendar, staff: Staff) -> Population:
    """Draw every customer-level attribute and latent parameter."""
    days = float(cal.days)
    acquired = _acquisition_days(rng, n, cal)
    shares = np.array([c.share for c in brand.channels])
    channel = rng.choice(len(brand.channels), size=n, p=shares / shares.sum())
    codes = channel_codes(brand, len(staff.userids))
    code = (np.cumsum(codes) - codes)[channel] + rng.integers(0, codes[channel])
    staff_idx = _route(rng, acquired, code, code_arcs(brand, codes, len(staff.userids)), staff)

    city_w = np.array([w for _, w in brand.cities])
    city = rng.choice(len(brand.cities), size=n, p=city_w / city_w.sum())
    female = rng.random(n) < brand.female_share
    age = np.clip(rng.normal(brand.age_mean, brand.age_sd, n), 18, 70).round()
    baby = rng.integers(-6, 31, n).astype(np.float64) if brand.has_baby else np.zeros(n)

    super_user = rng.random(n) < SUPER_USER_SHARE
    abuse_prone = np.isin(channel, [_channel_index(brand, "referral"), _channel_index(brand, "paid_ads")])
    abuser = ~super_user & (rng.random(n) < np.where(abuse_prone, ABUSER_SHARE * 3.0, ABUSER_SHARE * 0.4))
    ring = np.full(n, -1, dtype=np.int64)
    ab = np.flatnonzero(abuser)
    ring[ab] = np.arange(len(ab)) // 3  # rings of three accounts share one phone

    quality = np.array([c.quality for c in brand.channels])[channel]
    buy = brand.buy
    lam = rng.gamma(buy.r, 1.0 / buy.alpha, n) * quality
    p_drop = rng.beta(buy.a, buy.b, n)
    nu = rng.gamma(brand.spend.q, 1.0 / brand.spend.gamma, n)
    lam[super_user] *= 2.0
    lam = np.minimum(lam, LAMBDA_CAP)
    p_drop[super_user] *= 0.3
    nu[super_user] /= 1.5
    p_drop[abuser] = 1.0  # one discounted order, then gone

    holdout = rng.random(n) < HOLDOUT_SHARE
    campaign_holdout = rng.random(n) < CAMPAIGN_HOLDOUT_SHARE
    responsiveness = rng.beta(2.0, 5.0, n)
    responsiveness[super_user] = rng.beta(4.0, 4.0, int(super_user.sum()))
    responsiveness[abuser] = 0.95
    p_first = np.clip(brand.first_order_rate * quality + np.where(holdout, 0.0, COUPON_UPLIFT), 0, 0.98)
    p_first[super_user] = 1.0
    p_first[abuser] = 0.95
    buyer = rng.random(n) < p_first
    first_delay = rng.exponential(np.where(holdout, 14.0, 7.0))
    first_delay[abuser] = rng.uniform(0.01, 2.0, int(abuser.sum()))

    member_rate = np.array([c.member_rate for c in brand.channels])[channel]
    member = buyer | (rng.random(n) < member_rate)
    member_delay = np.minimum(rng.exponential(10.0, n), np.where(buyer, first_delay * 0.9, np.inf))
    linked = rng.random(n) < UNIONID_LINK_RATE

    activity = rng.lognormal(0.0, 0.8, n) * np.where(super_user, 3.0, 1.0)

    referral = channel == _channel_index(brand, "referral")
    invite_weight = rng.lognormal(0.0, 1.0, n) * np.where(super_user, 20.0, 1.0) * np.where(abuser, 5.0, 1.0)
    inviter = _pick_inviters(rng, referral, invite_weight)

    joins = rng.random(n) < brand.group_join_rate * np.where(super_user, 1.6, 1.0)
    group_join = np.where(joins, acquired + rng.exponential(3.0, n), np.inf)
    group_join[group_join >= days] = np.inf
    group = np.full(n, -1, dtype=np.int64)
    order = np.argsort(group_join, kind="stable")
    joined = order[np.isfinite(group_join[order])]
    group[joined] = np.arange(len(joined)) // brand.group_size  # groups fill up, then a new one opens
    group_leave = np.where(rng.random(n) < 0.25, group_join + rng.exponential(90.0, n), np.inf)
    # Heavy-tailed chat: Pareto rates, so a few core members write most messages.
    chattiness = 0.008 * (rng.pareto(1.2, n) + 0.05) * np.where(super_user, 4.0, 1.0)

    checkin_rate = np.where(rng.random(n) < 0.25, rng.uniform(0.005, 0.03, n), 0.0) * np.where(super_user, 3.0, 1.0)

    churn = np.full(n, np.inf)
    quitter = rng.random(n) < np.where(buyer, 0.25, 0.4)
    churn[quitter] = acquired[quitter] + rng.exponential(np.where(buyer, 120.0, 45.0))[quitter]
    quick = abuser & (rng.random(n) < 0.7)
    churn[quick] = acquired[quick] + first_delay[quick] + rng.uniform(0.1, 3.0, int(quick.sum()))
    churn[super_user] = np.inf
    churn[churn >= days] = np.inf
    group_leave = np.minimum(group_leave, churn)
    group_leave[~np.isfinite(group_join) | (group_leave >= days)] = np.inf

    return Population(
        n=n,
        acquired=acquired,
        channel=channel,
        code=code,
        codes_per_channel=codes,
        staff=staff_idx,
        city=city,
        female=female,
        age=age,
        baby_months=baby,
        activity=activity,
        lam=lam,
        p_drop=p_drop,
        nu=nu,
        buyer=buyer,
        first_delay=first_delay,
        member=member,
        member_delay=member_delay,
        linked=linked,
        super_user=super_user,
        abuser=abuser,
        ring=ring,
        holdout=holdout,
        campaign_holdout=campaign_holdout,
        responsiveness=responsiveness,
        inviter=inviter,
        group_join=group_join,
        group=group,
        group_leave=group_leave,
        chattiness=chattiness,
        checkin_rate=checkin_rate,
        churn=churn,
    )


def _channel_index(brand: Brand, key: str) -> int:
    return next(i for i, c in enumerate(brand.channels) if c.key == key)
