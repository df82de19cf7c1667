"""Hypothesis strategies for random, valid segment trees.

``trees(vocab)`` draws trees that cover every condition and option of the language: field
conditions (every operator, ``in`` / ``not in``, ``between``, ``is [not] set``) on traits of every
type and on person fields, tags in every mode, ``did`` / ``never did`` / ``first did`` with counts
(every operator, zero included), ``where`` and every kind of window, sequences, every ``orders``
measure with ``where`` on every order field, segments, groups (by name and chat_id), owner, and
``and`` / ``or`` / ``not`` nesting. Values come mostly from the vocabulary's samples, so the
conditions often select someone. Every tree validates against ``vocab_catalogue(vocab)`` and
survives ``parse(to_text(tree)) == tree``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

from segment_vocab import DEFAULT_VOCAB, Typed, Vocab
from siyu.segments.nodes import (
    COUNT_OPS,
    MAX_INT,
    UNITS,
    AbsoluteDate,
    And,
    Between,
    Compare,
    Condition,
    CountCondition,
    DateRange,
    DateValue,
    Did,
    Duration,
    Ever,
    FieldCondition,
    FieldRef,
    FieldSource,
    HasTags,
    InGroup,
    InLast,
    InList,
    InSegment,
    IsSet,
    Not,
    Or,
    Orders,
    RelativeDate,
    Sequence,
    Step,
    Value,
    Window,
    as_date_literal,
)

#: Day offsets (back from ``now``) that dates are drawn from, so they meet the data's dates.
DAY_OFFSETS = (0, 1, 2, 6, 7, 29, 30, 31, 59, 60, 89, 90, 180, 365, 366, 400)
_DURATION_AMOUNTS = {"h": (1, 12, 24, 48), "d": (1, 7, 30, 60, 90, 365), "w": (1, 2, 4, 52), "m": (1, 3, 6, 12)}
_MAX_AMOUNT = {"h": 2_000, "d": 800, "w": 120, "m": 30}
_ORDER_NUMERIC = ("amount_fen", "discount_fen", "refund_fen", "item_count")
_ORDER_SAMPLES = {
    "amount_fen": (0, 990, 10000, 25000, 50000, 100000),
    "discount_fen": (0, 500, 1000),
    "refund_fen": (0, 500, 10000),
    "item_count": (0, 1, 2, 3, 5),
}

_safe_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=6)


def _pick(samples: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    return st.sampled_from(samples)


def _as_value(text: str) -> Value:
    """A string as the parser reads it: a date-shaped string is a date."""
    date = as_date_literal(text)
    return date if date is not None else text


# -- values ---------------------------------------------------------------------------------------------
def strings(samples: tuple[Any, ...]) -> st.SearchStrategy[Value]:
    """Strings: mostly samples, sometimes a part of one (for ``contains``), sometimes anything."""
    texts = [s for s in samples if isinstance(s, str)] or ["x"]
    part = st.sampled_from(texts).flatmap(
        lambda s: st.tuples(st.integers(0, len(s)), st.integers(0, len(s))).map(lambda ij: s[min(ij) : max(ij)])
    )
    return st.one_of(st.sampled_from(texts), st.sampled_from(texts), part, _safe_text).map(_as_value)


def integers(samples: tuple[Any, ...]) -> st.SearchStrategy[int]:
    """Integers: mostly samples and their neighbours, sometimes anything that fits 64 bits."""
    ints = [s for s in samples if isinstance(s, int) and not isinstance(s, bool)] or [0]
    near = st.tuples(st.sampled_from(ints), st.integers(-2, 2)).map(sum)
    return st.one_of(st.sampled_from(ints), near, st.integers(-MAX_INT, MAX_INT))


def numbers(samples: tuple[Any, ...]) -> st.SearchStrategy[int | float]:
    """Numbers: integers or finite floats."""
    floats = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6)
    return st.one_of(integers(samples), floats, st.sampled_from([s for s in samples if _is_num(s)] or [0.5]))


def _number(value: Value) -> float:
    assert isinstance(value, int | float)
    return value


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def relative_dates(zero: bool = True) -> st.SearchStrategy[RelativeDate]:
    """``N h|d|w|m ago``, mostly with common amounts."""
    return st.sampled_from(UNITS).flatmap(
        lambda unit: st.one_of(
            st.sampled_from(_DURATION_AMOUNTS[unit]), st.integers(0 if zero else 1, _MAX_AMOUNT[unit])
        ).map(lambda n: RelativeDate(n, unit))
    )


def absolute_dates(vocab: Vocab) -> st.SearchStrategy[AbsoluteDate]:
    """Dates near ``vocab.now``: date-only, date-time without offset, with an offset or ``Z``."""
    local_now = vocab.now.astimezone(ZoneInfo(vocab.tz))

    def build(offset: int, shape: int, hour: int, minute: int) -> AbsoluteDate:
        day = (local_now - timedelta(days=offset)).date().isoformat()
        if shape == 0:
            return AbsoluteDate(day)
        if shape == 1:
            return AbsoluteDate(f"{day} {hour:02d}:{minute:02d}")
        if shape == 2:
            return AbsoluteDate(f"{day}T{hour:02d}:{minute:02d}:00+08:00")
        return AbsoluteDate(f"{day}T{hour:02d}:{minute:02d}:00Z")

    return st.builds(
        build,
        st.one_of(st.sampled_from(DAY_OFFSETS), st.integers(-3, 500)),
        st.integers(0, 3),
        st.sampled_from((0, 0, 12, 23, local_now.hour)),
        st.sampled_from((0, 30, local_now.minute)),
    )


def dates(vocab: Vocab) -> st.SearchStrategy[DateValue]:
    """An absolute or a relative date."""
    return st.one_of(absolute_dates(vocab), relative_dates())


def values_for(kind: str, samples: tuple[Any, ...], vocab: Vocab) -> st.SearchStrategy[Value]:
    """A value that fits a field of type ``kind`` (for ``list``: an element, as ``contains`` takes)."""
    if kind == "string":
        return strings(samples)
    if kind == "integer":
        return integers(samples)
    if kind == "number":
        return numbers(samples)
    if kind == "boolean":
        return st.booleans()
    if kind == "datetime":
        return dates(vocab)
    scalars = [s for s in samples if not isinstance(s, list)]
    return st.one_of(st.sampled_from(scalars or ["x"]), strings(samples), st.integers(-3, 10))


# -- field conditions ----------------------------------------------------------------------------------------
def field_conditions(name: str, typed: Typed, source: FieldSource, vocab: Vocab) -> st.SearchStrategy[FieldCondition]:
    """Every condition valid for a field ``name`` of ``(type, samples)`` from ``source``."""
    kind, samples = typed
    ref = FieldRef(name, source)
    value = values_for(kind, samples, vocab)
    is_set = st.builds(IsSet, st.just(ref), st.booleans())
    if kind == "list":
        ops: tuple[str, ...] = ("contains", "not contains")
    elif kind == "string":
        ops = ("=", "!=", "contains", "not contains")
    elif kind == "boolean":
        ops = ("=", "!=")
    else:
        ops = ("=", "!=", "<", "<=", ">", ">=")
    options: list[st.SearchStrategy[FieldCondition]] = [
        is_set,
        st.builds(Compare, st.just(ref), st.sampled_from(ops), value),
        st.builds(Compare, st.just(ref), st.sampled_from(ops), value),
    ]
    if kind in ("string", "integer", "number", "boolean"):
        value_lists = st.lists(value, min_size=1, max_size=3).map(tuple)
        options.append(st.builds(InList, st.just(ref), value_lists, st.booleans()))
    if kind in ("integer", "number"):
        pairs = st.tuples(value, value)
        options.append(pairs.map(lambda lh: Between(ref, min(lh, key=_number), max(lh, key=_number))))
    if kind == "datetime":
        options.append(st.builds(Between, st.just(ref), value, value))
    return _either(options)


def _either(options: list[st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of ``options``, chosen uniformly (``st.one_of`` leans towards the first in practice)."""
    return st.integers(0, len(options) - 1).flatmap(lambda i: options[i])


def person_conditions(vocab: Vocab) -> st.SearchStrategy[FieldCondition]:
    """Conditions on the built-in person fields (``owner`` compared only with known staff)."""
    owner = FieldRef("owner", "person")
    staff = st.sampled_from(vocab.staff)
    owner_conditions = st.one_of(
        st.builds(Compare, st.just(owner), st.sampled_from(("=", "!=", "contains", "not contains")), staff),
        st.builds(InList, st.just(owner), st.lists(staff, min_size=1, max_size=2).map(tuple), st.booleans()),
        st.builds(IsSet, st.just(owner), st.booleans()),
    )
    return _either(
        [
            field_conditions("first_seen", ("datetime", ()), "person", vocab),
            field_conditions("last_seen", ("datetime", ()), "person", vocab),
            field_conditions("order_count", ("integer", (0, 1, 2, 3)), "person", vocab),
            field_conditions("total_spend_fen", ("integer", (0, 10000, 50000, 100000)), "person", vocab),
            owner_conditions,
        ]
    )


def trait_conditions(vocab: Vocab) -> st.SearchStrategy[FieldCondition]:
    """Conditions on the vocabulary's traits."""
    return st.sampled_from(sorted(vocab.traits)).flatmap(
        lambda name: field_conditions(name, vocab.traits[name], "trait", vocab)
    )


# -- windows -----------------------------------------------------------------------------------------------
def durations() -> st.SearchStrategy[Duration]:
    """``30d``, ``12h``, ``2w``, ``6m``."""
    return st.sampled_from(UNITS).flatmap(
        lambda unit: st.one_of(st.sampled_from(_DURATION_AMOUNTS[unit]), st.integers(1, _MAX_AMOUNT[unit])).map(
            lambda n: Duration(n, unit)
        )
    )


def windows(vocab: Vocab) -> st.SearchStrategy[Window]:
    """``in last``, ``between`` (absolute date-only / date-time / relative ends) and ``ever``."""
    return st.one_of(
        durations().map(InLast),
        st.builds(DateRange, dates(vocab), dates(vocab)),
        st.just(Ever()),
    )


# -- behaviour ---------------------------------------------------------------------------------------------
def _event_names(vocab: Vocab) -> st.SearchStrategy[str | None]:
    return st.one_of(st.none(), st.sampled_from(sorted(vocab.events)))


def _properties(vocab: Vocab, event: str | None) -> dict[str, Typed]:
    return vocab.property_types() if event is None else dict(vocab.events[event])


def where_lists(vocab: Vocab, event: str | None, max_size: int = 2) -> st.SearchStrategy[tuple[FieldCondition, ...]]:
    """Up to ``max_size`` property conditions of ``event``."""
    props = _properties(vocab, event)
    if not props:
        return st.just(())
    one = st.sampled_from(sorted(props)).flatmap(lambda p: field_conditions(p, props[p], "property", vocab))
    return st.lists(one, max_size=max_size).map(tuple)


def counts() -> st.SearchStrategy[CountCondition | None]:
    """No count, or ``op N`` with every operator (``< 1``, ``= 0`` … hold at zero)."""
    return st.one_of(st.none(), st.builds(CountCondition, st.sampled_from(COUNT_OPS), st.integers(0, 5)))


def dids(vocab: Vocab) -> st.SearchStrategy[Did]:
    """``did`` (with or without a count), ``never did`` and ``first did``."""

    def build(event: str | None) -> st.SearchStrategy[Did]:
        mode = st.sampled_from(("did", "did", "never", "first"))
        return mode.flatmap(
            lambda m: st.builds(
                Did,
                st.just(event),
                windows(vocab),
                st.just(m),
                counts() if m == "did" else st.none(),
                where_lists(vocab, event),
            )
        )

    return _event_names(vocab).flatmap(build)


def sequences(vocab: Vocab) -> st.SearchStrategy[Sequence]:
    """``did A [where …] then B [where …] [then C …] within W [WINDOW]``."""
    step = _event_names(vocab).flatmap(lambda e: st.builds(Step, st.just(e), where_lists(vocab, e, 1)))
    return st.builds(Sequence, st.lists(step, min_size=2, max_size=3).map(tuple), durations(), windows(vocab))


def order_wheres(vocab: Vocab) -> st.SearchStrategy[tuple[FieldCondition, ...]]:
    """Up to two conditions on order fields, including per-item ``category`` and ``sku``."""
    fields: dict[str, Typed] = {name: ("integer", samples) for name, samples in _ORDER_SAMPLES.items()}
    fields |= {
        "channel": ("string", vocab.channels),
        "status": ("string", vocab.statuses),
        "category": ("string", vocab.categories),
        "sku": ("string", vocab.skus),
    }
    one = st.sampled_from(sorted(fields)).flatmap(lambda f: field_conditions(f, fields[f], "order", vocab))
    return st.lists(one, max_size=2).map(tuple)


def orders(vocab: Vocab) -> st.SearchStrategy[Orders]:
    """Every measure; values whole where the validator wants whole fen or counts."""

    def build(measure: str) -> st.SearchStrategy[Orders]:
        field = st.sampled_from(_ORDER_NUMERIC) if measure in ("sum", "avg", "min", "max") else st.none()

        def finish(name: str | None) -> st.SearchStrategy[Orders]:
            samples = (0, 1, 2, 3) if measure == "count" else _ORDER_SAMPLES[name or "amount_fen"]
            whole = measure == "count" or ((name or "amount_fen").endswith("_fen") and measure != "avg")
            value = integers(samples) if whole else numbers(samples)
            return st.builds(
                Orders,
                st.just(measure),
                st.sampled_from(COUNT_OPS),
                value,
                st.just(name),
                order_wheres(vocab),
                windows(vocab),
            )

        return field.flatmap(finish)

    return st.sampled_from(("count", "sum", "avg", "min", "max", "aov")).flatmap(build)


# -- person-level and the whole tree -----------------------------------------------------------------------------
def has_tags(vocab: Vocab) -> st.SearchStrategy[HasTags]:
    """``has tag``, ``has any|all|no tag in (…)``."""
    names = st.lists(st.sampled_from(vocab.tags), min_size=1, max_size=3, unique=True).map(tuple)
    return st.builds(HasTags, names, st.sampled_from(("any", "all", "none")))


def groups(vocab: Vocab) -> st.SearchStrategy[InGroup]:
    """``in group`` by name or by chat_id."""
    return st.sampled_from(sorted({part for pair in vocab.groups for part in pair})).map(InGroup)


def conditions(vocab: Vocab = DEFAULT_VOCAB) -> st.SearchStrategy[Condition]:
    """One condition of any kind (no ``and`` / ``or`` / ``not``)."""
    return _either(
        [
            trait_conditions(vocab),
            trait_conditions(vocab),
            person_conditions(vocab),
            has_tags(vocab),
            dids(vocab),
            sequences(vocab),
            orders(vocab),
            st.sampled_from(sorted(vocab.segments)).map(InSegment),
            groups(vocab),
            st.sampled_from(vocab.staff).map(lambda u: Compare(FieldRef("owner", "person"), "=", u)),
        ]
    )


def trees(vocab: Vocab = DEFAULT_VOCAB, max_leaves: int = 6) -> st.SearchStrategy[Condition]:
    """A random valid tree: conditions joined by ``and`` / ``or`` / ``not`` (depth about 3)."""

    def extend(inner: st.SearchStrategy[Condition]) -> st.SearchStrategy[Condition]:
        items = st.lists(inner, min_size=2, max_size=3).map(tuple)
        return st.one_of(items.map(lambda i: And(i)), items.map(lambda i: Or(i)), inner.map(lambda i: Not(i)))

    return st.recursive(conditions(vocab), extend, max_leaves=max_leaves)
