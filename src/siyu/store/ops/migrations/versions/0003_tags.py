"""tags: tag groups (six defaults), tag kinds, person-level tags, event-tag rules

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

Tag names become unique across all groups (the segment language names a tag by name only);
relation tags gain who tagged and why, as person-level tags have.
"""

from datetime import UTC, datetime

from alembic import op
import sqlalchemy as sa


revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

#: The six default groups (标签组), in display order.
DEFAULT_GROUPS = ("跟进状态", "客户来源", "客户属性", "产品类型", "内容类型", "营销活动")


def upgrade() -> None:
    groups = op.create_table(
        "tag_groups",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False, comment="display order"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_tag_groups")),
    )
    now = datetime.now(UTC)
    op.bulk_insert(groups, [{"name": n, "position": i, "created_at": now} for i, n in enumerate(DEFAULT_GROUPS)])

    op.add_column(
        "tags",
        sa.Column(
            "kind", sa.String(length=16), server_default="manual", nullable=False, comment="manual | rule | event"
        ),
    )
    op.add_column(
        "tags",
        sa.Column(
            "rule",
            sa.Text(),
            nullable=True,
            comment="a rule tag's segment expression (kept current by the segment engine)",
        ),
    )
    op.create_index("uq_tags_name", "tags", ["name"], unique=True)

    op.add_column("relation_tags", sa.Column("tagged_by", sa.String(length=128), nullable=True))
    op.add_column("relation_tags", sa.Column("reason", sa.String(length=256), nullable=True))
    op.add_column(
        "relation_tags",
        sa.Column("source", sa.String(length=16), nullable=True, comment="manual | rule | event | import"),
    )
    op.create_index("ix_relation_tags_tag_id", "relation_tags", ["tag_id"], unique=False)

    op.create_table(
        "person_tags",
        sa.Column("person_id", sa.String(length=32), nullable=False),
        sa.Column("tag_id", sa.String(length=64), nullable=False),
        sa.Column("tagged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tagged_by", sa.String(length=128), nullable=True),
        sa.Column("reason", sa.String(length=256), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=True, comment="manual | rule | event | import"),
        sa.ForeignKeyConstraint(["tag_id"], ["tags.id"], name=op.f("fk_person_tags_tag_id_tags")),
        sa.PrimaryKeyConstraint("person_id", "tag_id", name=op.f("pk_person_tags")),
    )
    op.create_index("ix_person_tags_tag_id", "person_tags", ["tag_id"], unique=False)

    op.create_table(
        "event_tag_rules",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("event_name", sa.String(length=128), nullable=False),
        sa.Column("property", sa.String(length=128), nullable=False),
        sa.Column("op", sa.String(length=16), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("tag_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(["tag_id"], ["tags.id"], name=op.f("fk_event_tag_rules_tag_id_tags")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_tag_rules")),
    )
    op.create_index(op.f("ix_event_tag_rules_event_name"), "event_tag_rules", ["event_name"], unique=False)
    op.create_index(op.f("ix_event_tag_rules_tag_id"), "event_tag_rules", ["tag_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_event_tag_rules_tag_id"), table_name="event_tag_rules")
    op.drop_index(op.f("ix_event_tag_rules_event_name"), table_name="event_tag_rules")
    op.drop_table("event_tag_rules")
    op.drop_index("ix_person_tags_tag_id", table_name="person_tags")
    op.drop_table("person_tags")
    op.drop_index("ix_relation_tags_tag_id", table_name="relation_tags")
    with op.batch_alter_table("relation_tags") as batch_op:
        batch_op.drop_column("source")
        batch_op.drop_column("reason")
        batch_op.drop_column("tagged_by")
    op.drop_index("uq_tags_name", table_name="tags")
    with op.batch_alter_table("tags") as batch_op:
        batch_op.drop_column("rule")
        batch_op.drop_column("kind")
    op.drop_table("tag_groups")
