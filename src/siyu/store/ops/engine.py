"""Engine creation and schema migration for the ops store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event

_MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for the ops store. SQLite gets WAL mode, a busy timeout and foreign keys on."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA secure_delete=ON")  # erased personal data is overwritten, not left in free pages
            cur.execute("PRAGMA busy_timeout=30000")
            # Identity keys arrive in random order; with SQLite's default 2 MB cache every index
            # insert past a few hundred thousand rows goes to disk. 1 GiB (an upper bound, not an
            # allocation) keeps the hot index pages in memory.
            cur.execute("PRAGMA cache_size=-1048576")
            cur.execute("PRAGMA temp_store=MEMORY")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


#: SQLite's default: a commit that leaves the write-ahead log past this many pages copies it back.
_AUTOCHECKPOINT_PAGES = 1000


@contextmanager
def checkpoint_deferred(conn: Connection) -> Iterator[None]:
    """Commits inside the block leave the write-ahead log as it is (SQLite; elsewhere a no-op).

    After a bulk write the log holds hundreds of megabytes, and copying them back at the commit
    would keep the writer waiting; :func:`checkpoint` does it later, when the time is free.
    """
    if conn.dialect.name != "sqlite":
        yield
        return
    conn.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA wal_autocheckpoint={_AUTOCHECKPOINT_PAGES}")


def checkpoint(engine: Engine) -> None:
    """Copy SQLite's write-ahead log into the database file (PASSIVE: readers are not waited for)."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")


def alembic_config(engine: Engine) -> Config:
    """An Alembic config pointing at siyu's migrations and the given engine."""
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the ops store's schema up to ``revision`` (idempotent)."""
    command.upgrade(alembic_config(engine), revision)
