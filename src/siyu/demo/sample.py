"""A small, seeded 母婴 (mother & baby) sample: browsing, sign-ups, orders, refunds, merges."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from siyu.ingest.pipeline import Ingestor, IngestResult

CITIES = ("上海", "北京", "杭州", "深圳", "成都", "南京", "武汉", "广州")
CATEGORIES = {"奶粉": 29800, "纸尿裤": 12900, "辅食": 4500, "玩具": 8800, "洗护": 6900}
EVENTS = ("view_product", "favorite", "add_to_cart", "view_content", "check_in")
CHANNELS = ("门店", "包裹卡", "直播", "公众号", "裂变")


def sample_messages(
    customers: int = 400, seed: int = 7, end: datetime | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Messages and orders for ``customers`` people over the 90 days before ``end``."""
    rng = random.Random(seed)
    end = end or datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(days=90)
    messages: list[dict[str, Any]] = []
    orders: list[dict[str, Any]] = []
    for n in range(customers):
        anon = f"dev-{seed}-{n}"
        joined = start + timedelta(seconds=rng.randrange(int((end - start).total_seconds() * 0.9)))
        t = joined
        for k in range(rng.randint(1, 12)):
            t += timedelta(minutes=rng.randint(5, 4000))
            if t >= end:
                break
            messages.append(
                {
                    "type": "track",
                    "messageId": f"s{seed}-{n}-e{k}",
                    "event": rng.choice(EVENTS),
                    "anonymousId": anon,
                    "timestamp": t.isoformat(),
                    "properties": {"category": rng.choice(list(CATEGORIES))},
                }
            )
        if rng.random() < 0.7:
            member = f"M{seed}{n:06d}"
            phone = f"13{rng.randint(0, 9)}{rng.randint(10_000_000, 99_999_999)}"
            t = min(t + timedelta(minutes=3), end)
            messages.append(
                {
                    "type": "identify",
                    "messageId": f"s{seed}-{n}-id",
                    "anonymousId": anon,
                    "identities": {"member_id": member, "phone": phone, "unionid": f"un-{seed}-{n}"},
                    "timestamp": t.isoformat(),
                    "traits": {
                        "city": rng.choice(CITIES),
                        "gender": rng.choice(("女", "女", "女", "男")),
                        "baby_age_months": rng.randint(0, 36),
                        "channel": rng.choice(CHANNELS),
                    },
                }
            )
            for k in range(rng.choice((0, 1, 1, 2, 3, 5))):
                t = t + timedelta(days=rng.randint(1, 20))
                if t >= end:
                    break
                cats = rng.sample(list(CATEGORIES), rng.randint(1, 2))
                items: list[dict[str, Any]] = [
                    {"sku": f"SKU-{c}", "category": c, "quantity": rng.randint(1, 3), "price_fen": CATEGORIES[c]}
                    for c in cats
                ]
                gross = sum(i["quantity"] * i["price_fen"] for i in items)
                discount = rng.choice((0, 0, 1000, 3000)) if gross > 5000 else 0
                order = {
                    "order_id": f"O{seed}-{n}-{k}",
                    "status": "paid",
                    "identities": {"member_id": member},
                    "paid_at": t.isoformat(),
                    "updated_at": t.isoformat(),
                    "amount_fen": gross - discount,
                    "discount_fen": discount,
                    "items": items,
                    "channel": "小程序",
                }
                orders.append(order)
                if rng.random() < 0.05:
                    refund_at = min(t + timedelta(days=2), end)
                    orders.append(
                        {
                            **order,
                            "status": "refunded",
                            "refund_fen": order["amount_fen"],
                            "updated_at": refund_at.isoformat(),
                        }
                    )
    messages.sort(key=lambda m: m["timestamp"])
    return messages, orders


def load_sample(ingestor: Ingestor, customers: int = 400, seed: int = 7) -> IngestResult:
    """Ingest the sample through the normal checks and write path."""
    messages, orders = sample_messages(customers, seed)
    total = IngestResult()
    for i in range(0, len(messages), 1000):
        checked = ingestor.validator.messages(messages[i : i + 1000])
        if checked.errors:
            raise ValueError(f"sample data failed validation: {checked.errors[:3]}")
        total.add(ingestor.ingest_messages(checked.messages, source="sample"))
    for i in range(0, len(orders), 1000):
        checked = ingestor.validator.orders(orders[i : i + 1000])
        if checked.errors:
            raise ValueError(f"sample orders failed validation: {checked.errors[:3]}")
        total.add(ingestor.ingest_orders(checked.orders, source="sample"))
    return total
