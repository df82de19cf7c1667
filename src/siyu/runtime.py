"""The objects one running installation needs, built from :class:`~siyu.config.Settings`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from siyu.config import Settings
from siyu.ingest.pipeline import Ingestor
from siyu.store.events import EventStore
from siyu.store.ops.engine import make_engine, upgrade


@dataclass
class Runtime:
    """Ops engine, event store and ingestor of one installation. Close it when done."""

    settings: Settings
    engine: Engine
    events: EventStore
    ingestor: Ingestor = field(init=False)
    _segments: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.ingestor = Ingestor(self.settings, self.engine, self.events)
        # Event-tag rules run after each committed ingest batch (siyu.tags.rules).
        from siyu.tags.rules import EventTagger
        from siyu.tags.service import TagService

        self.ingestor.event_hooks.append(EventTagger(TagService(self.ingestor)))

    @classmethod
    def open(cls, settings: Settings) -> Runtime:
        """Open (and migrate) the stores under ``settings``."""
        settings.home.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.resolved_ops_url)
        upgrade(engine)
        events = EventStore(settings.resolved_events_path)
        return cls(settings, engine, events)

    def segments(self) -> Any:
        """The installation's :class:`~siyu.segments.service.SegmentService` (one, so its catalogue cache is shared)."""
        if self._segments is None:
            from siyu.segments.service import SegmentService

            self._segments = SegmentService(self)
        return self._segments

    def close(self) -> None:
        """Release both stores."""
        self.events.close()
        self.engine.dispose()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
