"""Tables of the ops store (SQLAlchemy Core). Changes here need an Alembic migration."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

TS = DateTime(timezone=True)
ID = String(32)

persons = Table(
    "persons",
    metadata,
    Column("id", ID, primary_key=True),
    Column("created_at", TS, nullable=False),
    Column("first_seen", TS),
    Column("last_seen", TS),
    Column("merged_into", ID, index=True, comment="set when this person was merged into another"),
    Column("owner_staff_id", String(64), index=True),
    # SQLite: rows live in the primary key's B-tree (ids are time-ordered: new rows append).
    sqlite_with_rowid=False,
)

identities = Table(
    "identities",
    metadata,
    Column("type", String(32), primary_key=True),
    Column("value", String(256), primary_key=True),
    Column("person_id", ID, nullable=False),
    Column("first_seen", TS, nullable=False),
    # SQLite: rows live in the primary key's B-tree (one tree to search and to bulk-load, not two).
    sqlite_with_rowid=False,
)

identity_merges = Table(
    "identity_merges",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("status", String(16), nullable=False, comment="applied | refused"),
    Column("from_person_id", ID, index=True),
    Column("into_person_id", ID, index=True),
    Column("reason", Text, nullable=False),
    Column("message_id", String(256)),
    Column("identities", JSON, comment="the identities that caused (or would have caused) the merge"),
    Column("created_at", TS, nullable=False),
)

#: The change feed: every state change, in commit order; applied to the event store as events.
changes = Table(
    "changes",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("person_id", ID, index=True),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("occurred_at", TS, nullable=False),
    Column("payload", JSON, nullable=False),
)

traits = Table(
    "traits",
    metadata,
    Column("person_id", ID, primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("value", JSON),
    Column("updated_at", TS, nullable=False, comment="timestamp of the message that set it"),
)

staff = Table(
    "staff",
    metadata,
    Column("userid", String(64), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("department", String(128)),
    Column("status", String(16), nullable=False, default="active", comment="active | resigned"),
    Column("created_at", TS, nullable=False),
    Column("resigned_at", TS),
)

#: A WeCom follow_user relation: one staff member's view of one external contact.
staff_relations = Table(
    "staff_relations",
    metadata,
    Column("external_userid", String(64), primary_key=True),
    Column("staff_userid", String(64), primary_key=True),
    Column("person_id", ID, nullable=False, index=True),
    Column("add_time", TS, nullable=False),
    Column("remark", String(128)),
    Column("description", String(256)),
    Column("state", String(30), comment="the channel code's state the contact came through"),
    Column("add_way", Integer),
    Column("deleted_at", TS),
    Column("deleted_by", String(16), comment="customer | staff"),
)

#: Tag groups (标签组); six defaults are seeded by migration 0003.
tag_groups = Table(
    "tag_groups",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("position", Integer, nullable=False, comment="display order"),
    Column("created_at", TS, nullable=False),
)

tags = Table(
    "tags",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("group_name", String(64), nullable=False),
    Column("name", String(64), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("kind", String(16), nullable=False, server_default="manual", comment="manual | rule | event"),
    Column("rule", Text, comment="a rule tag's segment expression (kept current by the segment engine)"),
    UniqueConstraint("group_name", "name", name="uq_tags_group_name"),
)

#: Tags held per WeCom relation (a staff member's tag on one external contact).
relation_tags = Table(
    "relation_tags",
    metadata,
    Column("external_userid", String(64), primary_key=True),
    Column("staff_userid", String(64), primary_key=True),
    Column("tag_id", String(64), ForeignKey("tags.id"), primary_key=True),
    Column("tagged_at", TS, nullable=False),
    Column("tagged_by", String(128)),
    Column("reason", String(256)),
    Column("source", String(16), comment="manual | rule | event | import"),
)

#: Tags held by a person directly (customers without a WeCom relation, imports, event rules).
person_tags = Table(
    "person_tags",
    metadata,
    Column("person_id", ID, primary_key=True),
    Column("tag_id", String(64), ForeignKey("tags.id"), primary_key=True),
    Column("tagged_at", TS, nullable=False),
    Column("tagged_by", String(128)),
    Column("reason", String(256)),
    Column("source", String(16), comment="manual | rule | event | import"),
)

#: Event tags: "when an event NAME arrives whose property P op V, add tag T".
event_tag_rules = Table(
    "event_tag_rules",
    metadata,
    Column("id", ID, primary_key=True),
    Column("event_name", String(128), nullable=False, index=True),
    Column("property", String(128), nullable=False),
    Column("op", String(16), nullable=False),
    Column("value", JSON, nullable=False),
    Column("tag_id", String(64), ForeignKey("tags.id"), nullable=False, index=True),
    Column("created_at", TS, nullable=False),
    Column("created_by", String(128), nullable=False),
)

groups = Table(
    "groups",
    metadata,
    Column("chat_id", String(64), primary_key=True),
    Column("name", String(128)),
    Column("owner_staff_id", String(64)),
    Column("created_at", TS, nullable=False),
    Column("dismissed_at", TS),
)

group_members = Table(
    "group_members",
    metadata,
    Column("chat_id", String(64), primary_key=True),
    Column("member_id", String(64), primary_key=True, comment="external_userid or staff userid"),
    Column("member_type", String(16), nullable=False, comment="customer | staff"),
    Column("person_id", ID, index=True),
    Column("join_time", TS, nullable=False),
    Column("join_scene", Integer),
    Column("left_at", TS),
)

#: A saved segment (人群): its definition; members and history live in the event store.
segments = Table(
    "segments",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("kind", String(16), nullable=False, comment="dynamic | static"),
    Column("expression", Text, nullable=False, comment="canonical text of the definition"),
    Column("description", String(256)),
    Column("created_by", String(128)),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("refreshed_at", TS, comment="when membership was last computed"),
    Column("member_count", Integer),
)

tracking_plan = Table(
    "tracking_plan",
    metadata,
    Column("event_name", String(128), primary_key=True),
    Column("json_schema", JSON, nullable=False),
    Column("description", Text),
    Column("updated_at", TS, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(128), nullable=False),
    Column("kind", String(16), nullable=False, comment="write | admin"),
    Column("prefix", String(16), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", TS, nullable=False),
    Column("revoked_at", TS),
)

#: What remains of an erased person: no personal data, only that an erasure happened.
erasures = Table(
    "erasures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("person_ref", String(64), nullable=False, comment="salted hash of the erased person id"),
    Column("requested_by", String(128), nullable=False),
    Column("erased_at", TS, nullable=False),
    Column("counts", JSON, nullable=False, comment="how many rows of each kind were erased"),
)

Index("ix_identities_person_type", identities.c.person_id, identities.c.type)
# Tag names are unique across groups: the segment language names a tag by name only.
Index("uq_tags_name", tags.c.name, unique=True)
Index("ix_person_tags_tag_id", person_tags.c.tag_id)
Index("ix_relation_tags_tag_id", relation_tags.c.tag_id)

__all__ = [
    "api_keys",
    "changes",
    "erasures",
    "event_tag_rules",
    "group_members",
    "groups",
    "identities",
    "identity_merges",
    "metadata",
    "person_tags",
    "persons",
    "relation_tags",
    "segments",
    "staff",
    "staff_relations",
    "tag_groups",
    "tags",
    "tracking_plan",
    "traits",
]
