"""Alembic environment: runs migrations on the engine handed over in ``config.attributes``."""

from alembic import context

from siyu.store.ops.schema import metadata

config = context.config
engine = config.attributes.get("engine")


def run() -> None:
    """Run migrations online against the configured engine."""
    if engine is None:
        from sqlalchemy import create_engine

        connectable = create_engine(config.get_main_option("sqlalchemy.url") or "")
    else:
        connectable = engine
    with connectable.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()


run()
