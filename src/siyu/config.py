"""Settings: built once (by the CLI or the app factory) and passed down, never imported as a global."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Identity types siyu understands, highest priority first. ``user_id`` is the source system's
#: own user id (Segment's ``userId``); ``anonymous_id`` a device / session id.
IDENTITY_TYPES: tuple[str, ...] = (
    "member_id",
    "user_id",
    "unionid",
    "wecom_external_userid",
    "phone",
    "email",
    "openid",
    "anonymous_id",
)

#: How many values of each type one person may hold. A merge that would exceed a limit is refused.
DEFAULT_IDENTITY_LIMITS: dict[str, int] = {
    "member_id": 1,
    "user_id": 1,
    "unionid": 1,
    "wecom_external_userid": 3,
    "phone": 3,
    "email": 5,
    "openid": 10,
    "anonymous_id": 1000,
}

#: Values that never identify anybody (compared case-insensitively after trimming).
DEFAULT_BLOCKED_VALUES: tuple[str, ...] = ("", "null", "none", "nil", "undefined", "0", "-1", "nan", "unknown")


class Settings(BaseSettings):
    """Everything configurable about one siyu installation. Read from ``SIYU_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="SIYU_", extra="ignore")

    home: Path = Field(default=Path(".siyu"), description="Data directory (SIYU_HOME).")
    ops_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the ops store; default a SQLite file under SIYU_HOME. "
        "Production: postgresql+psycopg://user:pass@host/db",
    )
    events_path: Path | None = Field(
        default=None, description="DuckDB file of the event store; default SIYU_HOME/events.duckdb."
    )
    timezone: str = Field(default="Asia/Shanghai", description="Brand time zone for calendar periods.")
    write_keys: list[str] = Field(
        default_factory=list, description="Extra write keys accepted besides those created with `siyu keys`."
    )
    admin_keys: list[str] = Field(
        default_factory=list, description="Extra admin keys accepted besides those created with `siyu keys`."
    )
    tracking_plan_mode: Literal["strict", "lenient"] = Field(
        default="lenient",
        description="strict: events without a schema in the tracking plan are rejected; "
        "lenient: they are accepted (events with a schema are always validated).",
    )
    identity_limits: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_IDENTITY_LIMITS),
        description="Maximum values per identity type per person.",
    )
    identity_priority: list[str] = Field(
        default_factory=lambda: list(IDENTITY_TYPES), description="Identity types, highest priority first."
    )
    blocked_values: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BLOCKED_VALUES), description="Identity values that are ignored."
    )
    test_phones: list[str] = Field(
        default_factory=list, description="Phone numbers used for testing; ignored as identities."
    )
    trait_strategies: dict[str, Literal["latest", "first", "max", "min"]] = Field(
        default_factory=dict, description="Per-trait merge strategy; default `latest` (latest timestamp wins)."
    )
    max_batch_messages: int = Field(default=2000, description="Most messages in one /v1/batch call.")
    max_body_bytes: int = Field(default=8 * 1024 * 1024, description="Largest accepted request body.")
    max_message_bytes: int = Field(default=32 * 1024, description="Largest accepted single message.")
    max_string_chars: int = Field(default=4096, description="Longest accepted string value.")
    max_json_depth: int = Field(default=8, description="Deepest accepted nesting of properties / traits.")
    max_future_seconds: int = Field(default=86400, description="How far in the future a timestamp may lie.")
    ingest_workers: int = Field(
        default=1,
        ge=0,
        le=32,
        description="Processes that parse and check /v1/batch bodies beside the single writer "
        "(0: in the request's thread).",
    )
    host: str = Field(default="127.0.0.1", description="Address `siyu serve` listens on.")
    port: int = Field(default=8000, description="Port `siyu serve` listens on.")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Asia/Shanghai)") from exc
        return value

    @field_validator("identity_limits")
    @classmethod
    def _limits_over_defaults(cls, value: dict[str, int]) -> dict[str, int]:
        # Setting one limit must not lift the others: start from the defaults.
        unknown = set(value) - set(IDENTITY_TYPES)
        if unknown:
            raise ValueError(f"unknown identity types in identity_limits: {sorted(unknown)}")
        if any(n < 1 for n in value.values()):
            raise ValueError("identity limits must be at least 1")
        return {**DEFAULT_IDENTITY_LIMITS, **value}

    @field_validator("identity_priority")
    @classmethod
    def _priority_complete(cls, value: list[str]) -> list[str]:
        unknown = set(value) - set(IDENTITY_TYPES)
        if unknown:
            raise ValueError(f"unknown identity types in identity_priority: {sorted(unknown)}")
        missing = [t for t in IDENTITY_TYPES if t not in value]
        return [*dict.fromkeys(value), *missing]  # a type named twice keeps its first place

    @property
    def resolved_ops_url(self) -> str:
        """The ops-store URL, defaulting to ``SIYU_HOME/ops.sqlite``."""
        return self.ops_url or f"sqlite:///{(self.home / 'ops.sqlite').resolve()}"

    @property
    def resolved_events_path(self) -> Path:
        """The event-store file, defaulting to ``SIYU_HOME/events.duckdb``."""
        return self.events_path or self.home / "events.duckdb"

    @property
    def tz(self) -> ZoneInfo:
        """The brand time zone."""
        return ZoneInfo(self.timezone)
