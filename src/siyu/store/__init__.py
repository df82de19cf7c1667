"""Stores: the ops store (SQLAlchemy: SQLite / PostgreSQL) and the event store (DuckDB / Parquet)."""
