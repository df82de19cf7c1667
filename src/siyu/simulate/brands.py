"""The four simulated brands, one per business quadrant (purchase frequency × gross margin).

Every number here is a *generating parameter*: the simulator draws from it and writes it beside
the data as ground truth, so analytics (CLV, channel ROI, uplift …) can be scored against it.
Money is integer fen; rates are per day.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TIERS = ("traffic", "star", "bespoke", "premium")  # 引流 / 明星 / 个性化 / 贵族


@dataclass(frozen=True)
class Product:
    """One catalogue line."""

    sku: str
    name: str
    category: str
    tier: str  # one of TIERS
    price_fen: int
    cost_fen: int
    standardisation: float  # 1.0 = fully standard (easy to compare prices), 0.0 = made to order
    min_baby_months: int = -12  # 母婴 only: the baby's age range the product suits
    max_baby_months: int = 120


@dataclass(frozen=True)
class Channel:
    """An acquisition channel (渠道) and what its contacts are like."""

    key: str
    name: str
    share: float  # share of inflow
    cost_per_add_fen: int  # true cost of one new contact (ads, parcel cards, host fees …)
    quality: float  # multiplies the purchase rate λ of contacts from this channel
    member_rate: float  # share who register as mall members
    codes: int  # channel codes (活码) of this channel, each routing to a few staff


@dataclass(frozen=True)
class BuyTill:
    """BG/NBD purchase process (Fader, Hardie & Lee 2005), per day: λ ~ Gamma(r, α), p ~ Beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float


@dataclass(frozen=True)
class Spend:
    """Gamma-Gamma spend per order in yuan: ν ~ Gamma(q, γ), z ~ Gamma(p, ν); E[z] = pγ/(q−1)."""

    p: float
    q: float
    gamma: float


@dataclass(frozen=True)
class Brand:
    """Everything the simulator needs to know about one brand."""

    key: str  # ascii, used in ids
    name: str  # 中文 name used on the command line (`--brand 母婴`)
    english: str
    frequency: str  # high | low
    margin: str  # high | low
    products: tuple[Product, ...]
    channels: tuple[Channel, ...]
    buy: BuyTill
    spend: Spend
    first_order_rate: float  # share of contacts who ever place a first order
    female_share: float
    age_mean: float
    age_sd: float
    customers_per_staff: int
    group_size: int  # members a customer group holds before a new one opens
    group_join_rate: float  # share of contacts who join a customer group
    member_day: int  # day of month of the monthly 会员日
    order_seasonality: float = 0.5  # 0 = pure BG/NBD in calendar time; 1 = orders follow the full calendar
    has_baby: bool = False
    cities: tuple[tuple[str, float], ...] = field(
        default=(
            ("上海", 0.14),
            ("北京", 0.13),
            ("广州", 0.09),
            ("深圳", 0.09),
            ("杭州", 0.08),
            ("成都", 0.08),
            ("南京", 0.06),
            ("武汉", 0.06),
            ("重庆", 0.06),
            ("西安", 0.05),
            ("苏州", 0.05),
            ("长沙", 0.04),
            ("天津", 0.04),
            ("郑州", 0.03),
        )
    )


def _channels(paid_cost_fen: int, *, store_share: float = 0.25) -> tuple[Channel, ...]:
    rest = 1.0 - store_share
    return (
        Channel("store", "门店", store_share, 800, 1.3, 0.85, 40),
        Channel("parcel_card", "包裹卡", rest * 0.28, 350, 1.15, 0.9, 10),
        Channel("live", "直播", rest * 0.2, 1200, 0.9, 0.7, 12),
        Channel("official_account", "公众号", rest * 0.14, 150, 1.0, 0.6, 6),
        Channel("referral", "裂变", rest * 0.18, 500, 0.8, 0.65, 8),
        Channel("paid_ads", "付费投放", rest * 0.20, paid_cost_fen, 0.6, 0.5, 16),
    )


def _p(sku: str, name: str, category: str, tier: str, price: int, margin: float, std: float, **ages: int) -> Product:
    return Product(sku, name, category, tier, price, int(price * (1 - margin)), std, **ages)


MOTHER_BABY = Brand(
    key="mb",
    name="母婴",
    english="mother & baby",
    frequency="high",
    margin="high",
    products=(
        _p("MB-FM1", "婴儿配方奶粉 1段 800g", "奶粉", "star", 32800, 0.42, 0.95, max_baby_months=6),
        _p(
            "MB-FM2",
            "较大婴儿配方奶粉 2段 800g",
            "奶粉",
            "star",
            31800,
            0.42,
            0.95,
            min_baby_months=6,
            max_baby_months=12,
        ),
        _p("MB-FM3", "幼儿配方奶粉 3段 800g", "奶粉", "star", 29800, 0.4, 0.95, min_baby_months=12, max_baby_months=36),
        _p("MB-WIP", "婴儿湿巾 80 抽×5 包", "湿巾", "traffic", 3990, 0.2, 1.0),
        _p("MB-DPS", "纸尿裤 S 码 84 片", "纸尿裤", "traffic", 9900, 0.12, 1.0, max_baby_months=6),
        _p("MB-DPM", "纸尿裤 M 码 64 片", "纸尿裤", "traffic", 9900, 0.12, 1.0, min_baby_months=4, max_baby_months=14),
        _p(
            "MB-DPL", "拉拉裤 L 码 46 片", "纸尿裤", "traffic", 10900, 0.12, 1.0, min_baby_months=10, max_baby_months=36
        ),
        _p("MB-RCE", "高铁米粉 250g", "辅食", "traffic", 4500, 0.25, 0.9, min_baby_months=6, max_baby_months=24),
        _p("MB-PUR", "果泥组合 6 袋", "辅食", "star", 5900, 0.45, 0.8, min_baby_months=6, max_baby_months=30),
        _p("MB-WSH", "婴儿洗护礼盒", "洗护", "star", 16800, 0.55, 0.7),
        _p("MB-TOY", "早教积木", "玩具", "bespoke", 12900, 0.5, 0.4, min_baby_months=9),
        _p("MB-PRG", "孕妇营养包", "孕产", "star", 19800, 0.5, 0.6, min_baby_months=-12, max_baby_months=0),
        _p("MB-STR", "高景观婴儿推车", "出行", "premium", 268000, 0.45, 0.5, max_baby_months=36),
        _p("MB-PHO", "百天写真定制", "服务", "bespoke", 59900, 0.6, 0.1, min_baby_months=2, max_baby_months=5),
    ),
    channels=_channels(3500),
    buy=BuyTill(r=0.9, alpha=25.0, a=0.7, b=5.0),
    spend=Spend(p=6.0, q=4.0, gamma=70.0),
    first_order_rate=0.55,
    female_share=0.85,
    age_mean=30.0,
    age_sd=4.0,
    customers_per_staff=800,
    group_size=400,
    group_join_rate=0.55,
    member_day=18,
    has_baby=True,
)

BEAUTY = Brand(
    key="bt",
    name="美妆",
    english="beauty",
    # 平价美妆: a mass-market brand — thin margins (big-platform prices, heavy promotion) and a
    # replenishment every few months at most, with shoppers who switch brands easily.
    frequency="low",
    margin="low",
    products=(
        _p("BT-CLN", "氨基酸洁面 120g", "洁面", "traffic", 3900, 0.18, 0.95),
        _p("BT-MSK", "补水面膜 10 片", "面膜", "traffic", 2990, 0.15, 0.95),
        _p("BT-ESS", "烟酰胺精华 30ml", "精华", "star", 9900, 0.38, 0.85),
        _p("BT-CRM", "保湿面霜 50g", "面霜", "star", 7900, 0.35, 0.85),
        _p("BT-LIP", "哑光口红", "彩妆", "star", 5900, 0.4, 0.8),
        _p("BT-SKN", "肤质定制护肤套装", "服务", "bespoke", 19900, 0.42, 0.2),
        _p("BT-SET", "节日彩妆礼盒", "礼盒", "premium", 29900, 0.35, 0.6),
    ),
    channels=_channels(3000, store_share=0.3),
    buy=BuyTill(r=0.6, alpha=60.0, a=1.0, b=3.0),
    spend=Spend(p=5.0, q=4.0, gamma=60.0),
    first_order_rate=0.5,
    female_share=0.9,
    age_mean=26.0,
    age_sd=6.0,
    customers_per_staff=1200,
    group_size=450,
    group_join_rate=0.4,
    member_day=8,
)

FRESH = Brand(
    key="fr",
    name="生鲜",
    english="fresh food",
    frequency="high",
    margin="low",
    products=(
        _p("FR-EGG", "散养鸡蛋 30 枚", "蛋品", "traffic", 3990, 0.16, 1.0),
        _p("FR-VEG", "时令蔬菜组合", "蔬菜", "traffic", 2990, 0.22, 0.8),
        _p("FR-FRU", "当季水果 3kg", "水果", "star", 6990, 0.3, 0.7),
        _p("FR-MEA", "冷鲜猪肉 1kg", "肉禽", "star", 5990, 0.24, 0.9),
        _p("FR-SEA", "鲜活海鲜礼盒", "海鲜", "premium", 39900, 0.36, 0.5),
        _p("FR-BOX", "企业团购定制果蔬礼盒", "团购", "bespoke", 19900, 0.3, 0.2),
        _p("FR-MIL", "鲜牛奶 950ml×2", "乳品", "traffic", 2590, 0.16, 1.0),
    ),
    channels=_channels(1500, store_share=0.45),
    buy=BuyTill(r=1.4, alpha=12.0, a=0.9, b=6.0),
    spend=Spend(p=8.0, q=5.0, gamma=40.0),
    first_order_rate=0.7,
    female_share=0.7,
    age_mean=38.0,
    age_sd=9.0,
    customers_per_staff=1500,
    group_size=480,
    group_join_rate=0.7,
    member_day=28,
    order_seasonality=0.3,
)

HOME_DECOR = Brand(
    key="hd",
    name="家装",
    english="home decoration",
    frequency="low",
    margin="high",
    products=(
        _p("HD-DSN", "免费量房设计", "设计", "traffic", 0, 0.0, 0.9),
        _p("HD-CAB", "全屋定制柜体（每延米）", "定制", "bespoke", 180000, 0.45, 0.2),
        _p("HD-SOF", "真皮沙发", "家具", "premium", 1280000, 0.5, 0.5),
        _p("HD-LMP", "智能灯具套装", "灯具", "star", 299900, 0.4, 0.85),
        _p("HD-PKG", "整装套餐（每平米）", "整装", "premium", 129900, 0.35, 0.3),
    ),
    channels=_channels(12000, store_share=0.35),
    buy=BuyTill(r=0.25, alpha=300.0, a=1.2, b=2.0),
    spend=Spend(p=3.0, q=3.0, gamma=6000.0),
    first_order_rate=0.15,
    female_share=0.55,
    age_mean=34.0,
    age_sd=6.0,
    customers_per_staff=300,
    group_size=200,
    group_join_rate=0.3,
    member_day=16,
    order_seasonality=0.2,
)

BRANDS: dict[str, Brand] = {b.name: b for b in (MOTHER_BABY, BEAUTY, FRESH, HOME_DECOR)}


def brand_named(name: str) -> Brand:
    """A brand by its 中文 name, English name or key (``母婴``, ``mother & baby``, ``mb``)."""
    for brand in BRANDS.values():
        if name in (brand.name, brand.english, brand.key):
            return brand
    known = ", ".join(f"{b.name} ({b.key})" for b in BRANDS.values())
    raise ValueError(f"unknown brand {name!r}: choose one of {known}")
