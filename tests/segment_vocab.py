"""A small vocabulary of names and sample values shared by the random segment trees
(:mod:`segment_strategies`) and the random data sets (:mod:`segment_data`).

Trees and data draw from the same sample values, so random conditions often select someone.
Property names keep one type across every event (built-in events included), so ``did any where
p …`` has one meaning.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from siyu.segments import Catalogue, parse
from siyu.segments.nodes import Node

#: ``(type, sample values)`` of a trait or a property.
Typed = tuple[str, tuple[Any, ...]]


@dataclass(frozen=True)
class Vocab:
    """Names and sample values for random trees and data.

    ``now`` anchors both (data lies around it, absolute dates are drawn near it); ``events`` maps
    an event name to its properties, ``message_types`` an event name to the ``message_type`` its
    rows carry (default ``track``). ``groups`` are ``(chat_id, name)`` pairs. ``segments`` maps a
    saved segment's name to its definition (text without ``in segment``, so there is no cycle).
    """

    now: datetime
    tz: str
    traits: Mapping[str, Typed]
    events: Mapping[str, Mapping[str, Typed]]
    message_types: Mapping[str, str]
    tags: tuple[str, ...]
    staff: tuple[str, ...]
    groups: tuple[tuple[str, str], ...]
    segments: Mapping[str, str]
    categories: tuple[str, ...]
    skus: tuple[str, ...]
    channels: tuple[str, ...]
    statuses: tuple[str, ...] = ("created", "paid", "shipped", "completed", "refunded", "cancelled")
    extra: Mapping[str, Any] = field(default_factory=dict)

    def message_type(self, event: str) -> str:
        """The ``message_type`` of rows of ``event``."""
        return self.message_types.get(event, "track")

    def property_types(self) -> dict[str, Typed]:
        """Every property of every event (the properties ``did any where …`` may use)."""
        return {name: typed for props in self.events.values() for name, typed in props.items()}


_DATES = ("2025-03-31", "2026-01-01", "2026-02-28T23:30:00+08:00", "2026-03-01 00:00", "2026-03-31T12:00:00Z")

DEFAULT_VOCAB = Vocab(
    # 12:00 on 31 March in Shanghai: "1m ago" clamps to 28 February
    now=datetime(2026, 3, 31, 4, 0, tzinfo=UTC),
    tz="Asia/Shanghai",
    traits={
        "city": ("string", ("北京", "上海", "广州", "深圳")),
        "gender": ("string", ("女", "男")),
        "nickname": ("string", ("宝妈小李", "测试账号", "Amy", "烘焙达人", "2026-01-01")),
        "age": ("integer", (18, 25, 30, 42, 0, -1)),
        "score": ("number", (3.5, 4.5, 4, 5, 0.1)),
        "vip": ("boolean", (True, False)),
        "birthday": ("datetime", ("1990-05-01", "2000-01-01T08:00:00+08:00", "2000-01-01", *_DATES)),
        "interests": ("list", ("烘焙", "母婴", "运动", 1, True)),
        "会员 等级": ("string", ("金卡", "银卡")),
        "first_seen": ("datetime", _DATES),
        "context.page": ("string", ("/home", "/cart")),
        "balance_fen": ("integer", (0, 100, 10000, 500000)),
    },
    events={
        "view_product": {
            "sku": ("string", ("SKU-1", "SKU-2", "SKU-3")),
            "price_fen": ("integer", (990, 10000, 29900)),
            "category": ("string", ("奶粉", "纸尿裤", "玩具")),
        },
        "favorite": {"sku": ("string", ("SKU-1", "SKU-2", "SKU-3"))},
        "add_contact": {"state": ("string", ("渠道A", "渠道B"))},
        "加购": {"sku": ("string", ("SKU-1", "SKU-2")), "quantity": ("integer", (1, 2, 3))},
        "page_view": {
            "context.page": ("string", ("/home", "/cart", "/item")),
            "duration_s": ("number", (0.5, 3, 12.25, 60)),
            "is_new": ("boolean", (True, False)),
            "labels": ("list", ("促销", "新品", 7)),
        },
        "sign up": {"plan": ("string", ("free", "pro")), "at": ("datetime", _DATES)},
        "order_paid": {
            "order_id": ("string", ("o-1", "o-2")),
            "channel": ("string", ("mall", "miniapp", "store")),
            "amount_fen": ("integer", (990, 10000, 25000, 100000)),
            "discount_fen": ("integer", (0, 500, 1000)),
            "item_count": ("integer", (1, 2, 5)),
            "skus": ("list", ("SKU-1", "SKU-2", "SKU-3")),
            "categories": ("list", ("奶粉", "纸尿裤", "玩具")),
        },
        "order_refunded": {
            "channel": ("string", ("mall", "miniapp", "store")),
            "refund_fen": ("integer", (500, 10000)),
        },
        "$identify": {},
        "$group_joined": {"chat_id": ("string", ("wrA1", "wrB2", "wrC3"))},
        "$trait_changed": {
            "key": ("string", ("city", "vip")),
            "old": ("string", ("北京", "上海")),
            "new": ("string", ("上海", "广州")),
        },
    },
    message_types={
        "order_paid": "order",
        "order_refunded": "order",
        "$identify": "identify",
        "$group_joined": "change",
        "$trait_changed": "change",
    },
    tags=("高意向", "已流失", "宝妈", "奶粉用户", "复购"),
    staff=("zhangsan", "lisi", "wangwu"),
    groups=(("wrA1", "宝妈交流群 1"), ("wrB2", "宝妈交流群 2"), ("wrC3", "wrA1")),
    segments={
        "超级用户": 'orders sum amount_fen >= 50000 or has tag "高意向"',
        "新客": "first_seen >= 30d ago",
        "沉睡": "not did any in last 30d and did order_paid ever",
    },
    categories=("奶粉", "纸尿裤", "玩具", "辅食"),
    skus=("SKU-1", "SKU-2", "SKU-3", "SKU-4"),
    channels=("mall", "miniapp", "store"),
)


def vocab_catalogue(vocab: Vocab = DEFAULT_VOCAB) -> Catalogue:
    """The catalogue that matches ``vocab`` (built-in events included, groups by name and chat_id)."""
    return Catalogue.from_dict(
        {
            "traits": {name: kind for name, (kind, _) in vocab.traits.items()},
            "events": {e: {p: kind for p, (kind, _) in props.items()} for e, props in vocab.events.items()},
            "tags": list(vocab.tags),
            "segments": list(vocab.segments),
            "groups": sorted({part for pair in vocab.groups for part in pair}),
            "staff": list(vocab.staff),
        }
    )


def vocab_segments(vocab: Vocab = DEFAULT_VOCAB) -> dict[str, Node]:
    """The saved segments' trees, for ``evaluate(..., segments=…)``."""
    return {name: parse(text) for name, text in vocab.segments.items()}
