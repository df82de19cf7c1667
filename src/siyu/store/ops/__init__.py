"""The ops store: persons, identities, staff, relations, groups, traits, tracking plan, keys."""

from siyu.store.ops.engine import make_engine, upgrade
from siyu.store.ops.schema import metadata

__all__ = ["make_engine", "metadata", "upgrade"]
