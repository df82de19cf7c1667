"""identities as a WITHOUT ROWID table on SQLite

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

On SQLite a rowid table with a (type, value) primary key is two B-trees: the rows by rowid and
the key index. WITHOUT ROWID stores the rows in the key's B-tree itself, so a lookup by key is one
search and a bulk insert in key order writes one tree (see docs/decisions/005). PostgreSQL tables
are heaps with separate indexes either way: nothing changes there.
"""

from alembic import op
import sqlalchemy as sa


revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _rebuild_identities(*, with_rowid: bool) -> None:
    op.create_table(
        "_identities_new",
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        sa.Column("person_id", sa.String(length=32), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("type", "value", name=op.f("pk_identities")),
        sqlite_with_rowid=with_rowid,
    )
    op.execute(
        "INSERT INTO _identities_new (type, value, person_id, first_seen) "
        "SELECT type, value, person_id, first_seen FROM identities ORDER BY type, value"
    )
    op.drop_index("ix_identities_person_type", table_name="identities")
    op.drop_table("identities")
    op.rename_table("_identities_new", "identities")
    op.create_index("ix_identities_person_type", "identities", ["person_id", "type"], unique=False)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_identities(with_rowid=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_identities(with_rowid=True)
