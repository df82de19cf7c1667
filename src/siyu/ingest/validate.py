"""Turning raw messages and orders into checked, normalised records, or per-field errors.

The API and the file importers share this module, so a message is accepted or rejected for the
same reasons wherever it comes from.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from pydantic import ValidationError

from siyu.config import Settings
from siyu.identity.graph import IdentityRules, Key
from siyu.identity.normalize import IdentityScreen, IdentityValueError
from siyu.ingest.schemas import Message, Order
from siyu.ingest.tracking_plan import CompiledPlan

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_C0 = re.compile(r"[\x00-\x1f]")
_INT64 = 2**63


@dataclass(frozen=True)
class FieldError:
    """Why one message (``index`` in its batch or line in its file) was rejected."""

    index: int
    field: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"index": self.index, "field": self.field, "reason": self.reason}


@dataclass
class PreparedMessage:
    """A message that passed every check, with its identities normalised and in priority order."""

    index: int
    message_id: str
    type: str
    name: str
    ts: datetime
    keys: list[Key]
    properties: dict[str, Any]
    traits: dict[str, Any] | None = None
    previous_id: str | None = None
    # The JSON the event store keeps (filled by the write path, or ahead of it by a batch-check
    # worker process, see siyu.api.checkpool); None means not encoded yet.
    properties_json: str | None = None
    identities_json: str | None = None

    def encode(self) -> None:
        """Fill :attr:`properties_json` and :attr:`identities_json` from the fields."""
        body: dict[str, Any] = self.properties
        if self.traits is not None:
            body = {"traits": self.traits, **({"properties": self.properties} if self.properties else {})}
        self.properties_json = orjson.dumps(body).decode()
        self.identities_json = orjson.dumps(self.keys).decode()


@dataclass
class PreparedOrder:
    """An order that passed every check."""

    index: int
    order: Order
    keys: list[Key]
    updated_at: datetime
    paid_at: datetime | None
    content_hash: str = ""


@dataclass
class Checked:
    """The outcome of checking a batch: records and errors."""

    messages: list[PreparedMessage] = field(default_factory=list)
    orders: list[PreparedOrder] = field(default_factory=list)
    errors: list[FieldError] = field(default_factory=list)


class Validator:
    """Checks messages and orders against the schema, limits, identity rules and tracking plan."""

    def __init__(
        self,
        settings: Settings,
        plan: CompiledPlan | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.plan = plan
        self.now = now
        self.tz: ZoneInfo = settings.tz
        self.rules = IdentityRules(tuple(settings.identity_priority), dict(settings.identity_limits))
        self.screen = IdentityScreen.from_lists(settings.blocked_values, settings.test_phones)

    # -- shared checks --------------------------------------------------------------------------
    def _time(
        self, value: datetime | None, where: str, errors: list[str], now: datetime, default: datetime | None = None
    ) -> datetime:
        if value is None:
            return default or now
        if value.tzinfo is None:
            value = value.replace(tzinfo=self.tz)
        try:
            value = value.astimezone(UTC)
        except (OverflowError, ValueError):
            errors.append(f"{where}\x00out of the supported range: {value.isoformat()}")
            return default or now
        latest = now.timestamp() + self.settings.max_future_seconds
        if value < EARLIEST:
            errors.append(f"{where}\x00is before 2000-01-01: {value.isoformat()}")
        elif value.timestamp() > latest:
            errors.append(f"{where}\x00is in the future: {value.isoformat()}")
        return value

    def _walk(self, value: Any, where: str, depth: int, errors: list[str]) -> None:
        """Check nesting depth, string length, NUL characters and number range of JSON values."""
        if depth > self.settings.max_json_depth:
            errors.append(f"{where}\x00nested deeper than {self.settings.max_json_depth} levels")
            return
        if isinstance(value, str):
            if len(value) > self.settings.max_string_chars:
                errors.append(f"{where}\x00string longer than {self.settings.max_string_chars} characters")
            elif "\x00" in value:
                errors.append(f"{where}\x00contains a NUL character")
        elif isinstance(value, bool) or value is None:
            return
        elif isinstance(value, int):
            if not -_INT64 <= value < _INT64:
                errors.append(f"{where}\x00integer out of the 64-bit range")
        elif isinstance(value, float):
            if not math.isfinite(value):
                errors.append(f"{where}\x00not a finite number")
        elif isinstance(value, dict):
            if len(value) > 1000:
                errors.append(f"{where}\x00more than 1000 keys")
                return
            # Plain strings, ints, booleans and nulls one level down are checked here, as the
            # recursive call would check them (most properties are flat: this halves the calls).
            flat = depth + 1 <= self.settings.max_json_depth
            max_chars = self.settings.max_string_chars
            for k, v in value.items():
                if not k or len(k) > 128 or "\x00" in k:
                    errors.append(f"{where}\x00invalid key {k[:40]!r} (1–128 characters, no NUL)")
                    continue
                kind = type(v)
                if flat and kind is str:
                    if len(v) > max_chars or "\x00" in v:
                        self._walk(v, f"{where}.{k}", depth + 1, errors)
                elif flat and kind is int:
                    if not -_INT64 <= v < _INT64:
                        self._walk(v, f"{where}.{k}", depth + 1, errors)
                elif not (flat and (v is None or kind is bool)):
                    self._walk(v, f"{where}.{k}", depth + 1, errors)
        elif isinstance(value, list):
            if len(value) > 1000:
                errors.append(f"{where}\x00more than 1000 items")
                return
            for i, v in enumerate(value):
                self._walk(v, f"{where}[{i}]", depth + 1, errors)

    def _keys(self, pairs: Sequence[tuple[str, str, object]], errors: list[str]) -> list[Key]:
        keys: list[Key] = []
        for id_type, where, raw in pairs:
            try:
                value = self.screen.clean(id_type, raw)
            except IdentityValueError as exc:
                errors.append(f"{where}\x00{exc}")
                continue
            if value is not None:
                keys.append((id_type, value))
        if len(keys) == 1:  # the common case: IdentityRules.sort would return it as is
            return keys
        return self.rules.sort(keys)

    @staticmethod
    def _identity_pairs(model: Message | Order) -> list[tuple[str, str, object]]:
        pairs: list[tuple[str, str, object]] = [
            ("user_id", "userId", model.userId),
            ("anonymous_id", "anonymousId", model.anonymousId),
        ]
        if isinstance(model, Message) and model.previousId is not None:
            pairs.append(("anonymous_id", "previousId", model.previousId))
        if model.identities is not None:
            # The model's fields in declaration order (what iterating it yields; extras are forbidden).
            pairs += [
                (name, f"identities.{name}", raw) for name, raw in vars(model.identities).items() if raw is not None
            ]
        return [p for p in pairs if p[2] is not None]

    def _parse(self, kind: type[Message] | type[Order], raw: Any, index: int, out: Checked) -> Any:
        if not isinstance(raw, dict):
            out.errors.append(FieldError(index, "", f"must be a JSON object, got {type(raw).__name__}"))
            return None
        try:
            size = len(orjson.dumps(raw))
        except (TypeError, orjson.JSONEncodeError) as exc:
            out.errors.append(FieldError(index, "", f"not JSON-serialisable: {exc}"))
            return None
        if size > self.settings.max_message_bytes:
            out.errors.append(
                FieldError(index, "", f"{size} bytes; a message may have at most {self.settings.max_message_bytes}")
            )
            return None
        try:
            return kind.model_validate(raw)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                where = ".".join(str(p) for p in err["loc"])
                out.errors.append(FieldError(index, where, err["msg"]))
            return None

    @staticmethod
    def _flush(index: int, problems: list[str], out: Checked) -> bool:
        for problem in problems:
            where, _, reason = problem.partition("\x00")
            out.errors.append(FieldError(index, where, reason))
        return not problems

    # -- messages -----------------------------------------------------------------------------
    def messages(self, raws: Sequence[Any], *, first_index: int = 0, now: datetime | None = None) -> Checked:
        """Check a batch of messages (``now``, default ``self.now()``, bounds future timestamps)."""
        out = Checked()
        now = now or self.now()
        strict = self.settings.tracking_plan_mode == "strict"
        for offset, raw in enumerate(raws):
            index = first_index + offset
            msg = self._parse(Message, raw, index, out)
            if msg is None:
                continue
            problems: list[str] = []
            if _CONTROL.search(msg.messageId):
                problems.append("messageId\x00contains control characters")
            ts = self._time(msg.timestamp, "timestamp", problems, now)
            keys = self._keys(self._identity_pairs(msg), problems)
            if not keys and not problems:
                problems.append(
                    "userId\x00no usable identity: userId, anonymousId and identities are all missing or blocked values"
                )
            properties = msg.properties or {}
            self._walk(properties, "properties", 1, problems)
            if msg.traits is not None:
                self._walk(msg.traits, "traits", 1, problems)
            if msg.type == "track":
                name = msg.event or ""
                if name.startswith("$") or _C0.search(name):
                    problems.append("event\x00event names may not start with $ or contain control characters")
                elif self.plan is not None:
                    if strict and not self.plan.has(name):
                        problems.append(f"event\x00{name!r} is not in the tracking plan (strict mode)")
                    else:
                        reason = self.plan.check(name, properties)
                        if reason:
                            problems.append(f"properties\x00does not match the tracking plan for {name!r}: {reason}")
            else:
                name = "$" + msg.type
            if self._flush(index, problems, out):
                previous = None
                if msg.previousId is not None:
                    previous = self.screen.clean("anonymous_id", msg.previousId)
                out.messages.append(
                    PreparedMessage(index, msg.messageId, msg.type, name, ts, keys, properties, msg.traits, previous)
                )
        return out

    # -- orders -------------------------------------------------------------------------------
    def orders(self, raws: Sequence[Any], *, first_index: int = 0) -> Checked:
        """Check a batch of orders."""
        out = Checked()
        now = self.now()
        for offset, raw in enumerate(raws):
            index = first_index + offset
            order = self._parse(Order, raw, index, out)
            if order is None:
                continue
            problems: list[str] = []
            paid_at = self._time(order.paid_at, "paid_at", problems, now) if order.paid_at else None
            updated_at = self._time(order.updated_at, "updated_at", problems, now, paid_at)
            keys = self._keys(self._identity_pairs(order), problems)
            if not keys and not problems:
                problems.append(
                    "userId\x00no usable identity: userId, anonymousId and identities are all missing or blocked values"
                )
            for name in ("order_id", "channel"):
                text = getattr(order, name)
                if text is not None and _CONTROL.search(text):
                    problems.append(f"{name}\x00contains control characters")
            for i, item in enumerate(order.items):
                for name in ("sku", "category"):
                    text = getattr(item, name)
                    if text is not None and _CONTROL.search(text):
                        problems.append(f"items.{i}.{name}\x00contains control characters")
            if self._flush(index, problems, out):
                out.orders.append(PreparedOrder(index, order, keys, updated_at, paid_at))
        return out
