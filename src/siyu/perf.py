"""Small performance helpers."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small objects.

    Resolving identities creates millions of tuples, sets and dicts that are never cyclic
    garbage; with the collector on, its repeated full-heap passes took ~60 % of the time.
    Reference counting still frees everything; the collector resumes (and runs once) after.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
