"""identities and persons as WITHOUT ROWID tables on SQLite

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

On SQLite a rowid table with a text primary key is two B-trees: the rows by rowid and the key
index. WITHOUT ROWID stores the rows in the key's B-tree itself, so a lookup by key is one search
and a bulk insert in key order writes one tree (docs/decisions/005-identity-bulk-writes.md).
PostgreSQL tables are heaps with separate indexes either way: nothing changes there.
"""

from typing import Any

from alembic import op
import sqlalchemy as sa


revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _identities() -> list[Any]:
    return [
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        sa.Column("person_id", sa.String(length=32), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("type", "value", name=op.f("pk_identities")),
    ]


def _persons() -> list[Any]:
    return [
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("merged_into", sa.String(length=32), nullable=True),
        sa.Column("owner_staff_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_persons")),
    ]


#: table → (its columns and key, the key's columns, its secondary indexes as name → columns)
_TABLES = {
    "identities": (_identities, "type, value", {"ix_identities_person_type": ["person_id", "type"]}),
    "persons": (
        _persons,
        "id",
        {"ix_persons_merged_into": ["merged_into"], "ix_persons_owner_staff_id": ["owner_staff_id"]},
    ),
}


def _rebuild(*, with_rowid: bool) -> None:
    for table, (items, keys, indexes) in _TABLES.items():
        columns = [i.name for i in items() if isinstance(i, sa.Column)]
        op.create_table(f"_{table}_new", *items(), sqlite_with_rowid=with_rowid)
        names = ", ".join(columns)
        op.execute(f"INSERT INTO _{table}_new ({names}) SELECT {names} FROM {table} ORDER BY {keys}")
        for name in indexes:
            op.drop_index(name, table_name=table)
        op.drop_table(table)
        op.rename_table(f"_{table}_new", table)
        for name, cols in indexes.items():
            op.create_index(name, table, cols, unique=False)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(with_rowid=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(with_rowid=True)
