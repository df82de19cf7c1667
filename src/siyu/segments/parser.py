"""A hand-written recursive-descent parser for the segment language.

Precedence, loosest first: ``or``, ``and``, ``not``, then a condition or a parenthesised
expression. The grammar is in docs/segments.md; the short form::

    expr      := and ("or" and)*
    and       := unary ("and" unary)*
    unary     := "not" unary | "(" expr ")" | condition
    condition := FIELD cmp | "trait" NAME cmp | "has" tags | "in" ("segment"|"group") STRING
               | "owned" "by" STRING | ["never"|"first"] "did" EVENT … | "orders" MEASURE …

``where`` lists are greedy only where a mandatory word ends them (the window of ``did``, ``then`` /
``within`` of a sequence, the operator of ``orders``); a ``where`` written *after* a window takes a
single condition or a parenthesised list, so a following ``and`` belongs to the outer expression.
"""

from __future__ import annotations

from typing import cast

from siyu.segments.errors import SegmentLimitError, SegmentSyntaxError
from siyu.segments.lexer import END, Token, tokenize
from siyu.segments.limits import DEFAULT_LIMITS, Limits
from siyu.segments.nodes import (
    COUNT_OPS,
    FIELD_MEASURES,
    MAX_DURATION,
    MEASURES,
    PERSON_FIELDS,
    And,
    Between,
    Compare,
    Condition,
    CountCondition,
    CountOp,
    DateRange,
    DateValue,
    Did,
    DidMode,
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
    Measure,
    Not,
    Or,
    Orders,
    RelativeDate,
    Sequence,
    Span,
    Step,
    Value,
    Window,
    as_date_literal,
)

#: Words that cannot be a bare trait, event or property name (write ``trait "in"`` / ``did "in"``).
RESERVED: frozenset[str] = frozenset(
    {"and", "or", "not", "did", "never", "first", "any", "has", "in", "orders", "owned", "trait"}
    | {"where", "then", "within", "between", "ever", "is", "contains", "true", "false"}
)

_COMPARISON = "a comparison operator"
_WINDOW = ('"in last"', '"between"', '"ever"')


class _Parser:
    def __init__(self, source: str, limits: Limits) -> None:
        self.source = source
        self.limits = limits
        self.tokens = tokenize(source)
        self.i = 0
        self.nodes = 0
        self.depth = 0

    # -- token helpers ------------------------------------------------------------------------------
    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def take(self) -> Token:
        token = self.tokens[self.i]
        if token.kind != "eof":
            self.i += 1
        return token

    def at(self, word: str, ahead: int = 0) -> bool:
        token = self.peek(ahead)
        return token.kind == "word" and token.value == word

    def error(self, *expected: str, token: Token | None = None) -> SegmentSyntaxError:
        token = token or self.peek()
        return SegmentSyntaxError(token.span, token.describe(), expected)

    def expect_word(self, word: str) -> Token:
        if not self.at(word):
            raise self.error(f'"{word}"')
        return self.take()

    def since(self, start: Token) -> Span:
        end = self.tokens[self.i - 1].span.end if self.i > 0 else start.span.end
        return Span(
            offset=start.span.offset, end=max(end, start.span.end), line=start.span.line, column=start.span.column
        )

    def count(self, n: int = 1) -> None:
        self.nodes += n
        if self.nodes > self.limits.max_nodes:
            raise SegmentLimitError("max_nodes", self.limits.max_nodes, span=self.peek().span)

    def enter(self, token: Token) -> None:
        self.depth += 1
        if self.depth > self.limits.max_depth:
            raise SegmentLimitError("max_depth", self.limits.max_depth, span=token.span)

    # -- boolean structure --------------------------------------------------------------------------
    def parse(self) -> Condition:
        tree = self.expression()
        if self.peek().kind != "eof":
            raise self.error('"and"', '"or"', END)
        return tree

    def expression(self) -> Condition:
        start = self.peek()
        items = [self.conjunction()]
        while self.at("or"):
            self.take()
            items.append(self.conjunction())
        if len(items) == 1:
            return items[0]
        self.count()
        return Or(tuple(items), span=self.since(start))

    def conjunction(self) -> Condition:
        start = self.peek()
        items = [self.unary()]
        while self.at("and"):
            self.take()
            items.append(self.unary())
        if len(items) == 1:
            return items[0]
        self.count()
        return And(tuple(items), span=self.since(start))

    def unary(self) -> Condition:
        start = self.peek()
        if self.at("not"):
            self.enter(self.take())
            item = self.unary()
            self.depth -= 1
            self.count()
            return Not(item, span=self.since(start))
        if start.kind == "lparen":
            self.enter(self.take())
            inner = self.expression()
            if self.peek().kind != "rparen":
                raise self.error('"and"', '"or"', '")"')
            self.take()
            self.depth -= 1
            return inner
        return self.condition()

    # -- conditions ---------------------------------------------------------------------------------
    def condition(self) -> Condition:
        token = self.peek()
        if token.kind != "word":
            raise self.error("a condition")
        word = token.value
        if word == "did":
            return self.did("did", token)
        if word in ("never", "first"):
            self.take()
            if not self.at("did"):
                raise self.error('"did"')
            return self.did("never" if word == "never" else "first", token)
        if word == "has":
            return self.has_tags()
        if word == "in":
            return self.membership()
        if word == "orders":
            return self.orders()
        if word == "owned":
            self.take()
            self.expect_word("by")
            staff = self.string()
            self.count(2)
            return Compare(FieldRef("owner", "person", span=token.span), "=", staff, span=self.since(token))
        if word == "trait":
            self.take()
            ref = FieldRef(self.name("a field name"), "trait", span=self.since(token))
            self.count()
            return self.field_condition(ref, token)
        if word in RESERVED:
            raise self.error("a condition")
        self.take()
        self.count()
        ref = FieldRef(str(word), "person" if word in PERSON_FIELDS else "trait", span=token.span)
        return self.field_condition(ref, token)

    def field_condition(self, ref: FieldRef, start: Token) -> FieldCondition:
        token = self.peek()
        self.count()
        if token.kind == "op":
            self.take()
            return Compare(ref, token.value, self.value(), span=self.since(start))  # type: ignore[arg-type]
        if self.at("contains"):
            self.take()
            return Compare(ref, "contains", self.value(), span=self.since(start))
        if self.at("not"):
            self.take()
            if self.at("contains"):
                self.take()
                return Compare(ref, "not contains", self.value(), span=self.since(start))
            if self.at("in"):
                self.take()
                return InList(ref, self.value_list(), negated=True, span=self.since(start))
            raise self.error('"in"', '"contains"')
        if self.at("in"):
            self.take()
            return InList(ref, self.value_list(), span=self.since(start))
        if self.at("between"):
            self.take()
            low = self.value()
            self.expect_word("and")
            return Between(ref, low, self.value(), span=self.since(start))
        if self.at("is"):
            self.take()
            negated = self.at("not")
            if negated:
                self.take()
            self.expect_word("set")
            return IsSet(ref, negated, span=self.since(start))
        raise self.error(_COMPARISON)

    def name(self, what: str) -> str:
        """A name: a non-reserved word, or any non-empty string."""
        token = self.peek()
        if token.kind == "word" and token.value not in RESERVED:
            self.take()
            return str(token.value)
        if token.kind == "string":
            if not token.value:
                raise SegmentSyntaxError(token.span, '""', detail_zh="名称不能为空", detail_en="a name cannot be empty")
            self.take()
            return str(token.value)
        raise self.error(what)

    def string(self) -> str:
        token = self.peek()
        if token.kind != "string":
            raise self.error("a string")
        if not token.value:
            raise SegmentSyntaxError(token.span, '""', detail_zh="名称不能为空", detail_en="a name cannot be empty")
        self.take()
        return str(token.value)

    # -- values -------------------------------------------------------------------------------------
    def value(self) -> Value:
        token = self.peek()
        self.count()
        if token.kind == "string":
            self.take()
            text = str(token.value)
            date = as_date_literal(text)
            if date is not None:
                return type(date)(date.text, span=token.span)
            return text
        if token.kind == "number":
            self.take()
            return token.value  # type: ignore[return-value]
        if token.kind == "duration":
            amount, unit = self.duration_token(allow_zero=True)
            self.expect_word("ago")
            return RelativeDate(amount, unit, span=self.since(token))  # type: ignore[arg-type]
        if self.at("true") or self.at("false"):
            self.take()
            return token.value == "true"
        raise self.error("a value")

    def value_list(self) -> tuple[Value, ...]:
        if self.peek().kind != "lparen":
            raise self.error('"("')
        self.take()
        values = [self.value()]
        while self.peek().kind == "comma":
            self.take()
            item = self.peek()  # the error points at the first item over the limit
            values.append(self.value())
            if len(values) > self.limits.max_list_items:
                raise SegmentLimitError("max_list_items", self.limits.max_list_items, span=item.span)
        if self.peek().kind != "rparen":
            raise self.error('"," or ")"')
        self.take()
        return tuple(values)

    def duration_token(self, *, allow_zero: bool = False) -> tuple[int, str]:
        token = self.peek()
        if token.kind != "duration":
            raise self.error("a duration like 30d")
        amount, unit = cast(tuple[int, str], token.value)
        lowest = 0 if allow_zero else 1
        if not lowest <= amount <= MAX_DURATION[unit]:
            raise SegmentSyntaxError(
                token.span,
                token.describe(),
                detail_zh=f"时长 {token.text} 超出范围（{lowest} 到 {MAX_DURATION[unit]}{unit}）",
                detail_en=f"duration {token.text} out of range ({lowest} to {MAX_DURATION[unit]}{unit})",
            )
        self.take()
        return amount, unit

    def duration(self) -> Duration:
        start = self.peek()
        amount, unit = self.duration_token()
        self.count()
        return Duration(amount, unit, span=start.span)  # type: ignore[arg-type]

    def date(self) -> DateValue:
        token = self.peek()
        self.count()
        if token.kind == "string":
            date = as_date_literal(str(token.value))
            if date is None:
                raise self.error("a date")
            self.take()
            return type(date)(date.text, span=token.span)
        if token.kind == "duration":
            amount, unit = self.duration_token(allow_zero=True)
            self.expect_word("ago")
            return RelativeDate(amount, unit, span=self.since(token))  # type: ignore[arg-type]
        raise self.error("a date")

    def at_window(self) -> bool:
        return (self.at("in") and self.at("last", 1)) or self.at("between") or self.at("ever")

    def window(self) -> Window:
        start = self.peek()
        self.count()
        if self.at("ever"):
            self.take()
            return Ever(span=start.span)
        if self.at("between"):
            self.take()
            begin = self.date()
            self.expect_word("and")
            return DateRange(begin, self.date(), span=self.since(start))
        if self.at("in"):
            self.take()
            self.expect_word("last")
            return InLast(self.duration(), span=self.since(start))
        raise self.error(*_WINDOW)

    # -- behaviour ----------------------------------------------------------------------------------
    def event(self) -> str | None:
        if self.at("any"):
            self.take()
            return None
        return self.name("an event name")

    def where_list(self, source: FieldSource) -> tuple[FieldCondition, ...]:
        """Conditions after ``where`` joined by ``and``, up to the first word that is not ``and``."""
        items = [self.where_item(source)]
        while self.at("and"):
            self.take()
            items.append(self.where_item(source))
        return tuple(items)

    def trailing_where(self, source: FieldSource) -> tuple[FieldCondition, ...]:
        """A ``where`` after the window: one condition, or a parenthesised ``and`` list."""
        if self.peek().kind == "lparen":
            self.take()
            items = self.where_list(source)
            if self.peek().kind != "rparen":
                raise self.error('"and"', '")"')
            self.take()
            return items
        return (self.where_item(source),)

    def where_item(self, source: FieldSource) -> FieldCondition:
        start = self.peek()
        what = "an order field" if source == "order" else "a property name"
        ref = FieldRef(self.name(what), source, span=start.span)
        self.count()
        return self.field_condition(ref, start)

    def did(self, mode: DidMode, start: Token) -> Condition:
        self.expect_word("did")
        self.count()
        first_step = self.peek()
        event = self.event()
        if self.at("then"):
            if mode != "did":
                raise SegmentSyntaxError(
                    self.peek().span,
                    '"then"',
                    detail_zh=f'"{mode} did" 不能用于序列；请写 not (did A then B …)',
                    detail_en=f'"{mode} did" cannot start a sequence; write not (did A then B …)',
                )
            return self.sequence(start, Step(event, span=self.since(first_step)))
        count = None
        if self.peek().kind == "op":
            op_token = self.take()
            if mode != "did":
                raise SegmentSyntaxError(
                    op_token.span,
                    op_token.describe(),
                    detail_zh=f'"{mode} did" 后不能跟次数条件',
                    detail_en=f'"{mode} did" takes no count condition',
                )
            number = self.peek()
            if number.kind != "number" or not isinstance(number.value, int) or number.value < 0:
                raise self.error("a whole number")
            self.take()
            if self.at("times") or self.at("time"):
                self.take()
            self.count()
            count = CountCondition(op_token.value, number.value, span=self.since(op_token))  # type: ignore[arg-type]
        where: tuple[FieldCondition, ...] = ()
        if self.at("where"):
            self.take()
            where = self.where_list("property")
            if self.at("then"):
                if mode != "did" or count is not None:
                    raise self.error(*_WINDOW)
                return self.sequence(start, Step(event, where, span=self.since(first_step)))
        if not self.at_window():
            expected = _WINDOW if where or count else (_COMPARISON, '"where"', '"then"', *_WINDOW)
            raise self.error(*expected)
        window = self.window()
        if self.at("where") and not where:
            self.take()
            where = self.trailing_where("property")
        return Did(event, window, mode, count, where, span=self.since(start))

    def sequence(self, start: Token, first: Step) -> Sequence:
        steps = [first]
        while self.at("then"):
            self.take()
            step_start = self.peek()
            event = self.event()
            where: tuple[FieldCondition, ...] = ()
            if self.at("where"):
                self.take()
                where = self.where_list("property")
            self.count()
            steps.append(Step(event, where, span=self.since(step_start)))
        if not self.at("within"):
            raise self.error('"then"', '"where"', '"within"')
        self.take()
        within = self.duration()
        window: Window = self.window() if self.at_window() else Ever()
        return Sequence(tuple(steps), within, window, span=self.since(start))

    # -- tags, membership, orders --------------------------------------------------------------------
    def has_tags(self) -> HasTags:
        start = self.take()
        self.count()
        if self.at("tag"):
            self.take()
            name = self.string()
            return HasTags((name,), "any", span=self.since(start))
        for word, mode in (("any", "any"), ("all", "all"), ("no", "none")):
            if self.at(word):
                self.take()
                if not (self.at("tag") or self.at("tags")):
                    raise self.error('"tag"')
                self.take()
                self.expect_word("in")
                names = self.string_list()
                return HasTags(names, mode, span=self.since(start))  # type: ignore[arg-type]
        raise self.error('"tag", "any", "all" or "no"')

    def string_list(self) -> tuple[str, ...]:
        if self.peek().kind != "lparen":
            raise self.error('"("')
        self.take()
        names = [self.string()]
        while self.peek().kind == "comma":
            self.take()
            item = self.peek()  # the error points at the first item over the limit
            names.append(self.string())
            if len(names) > self.limits.max_list_items:
                raise SegmentLimitError("max_list_items", self.limits.max_list_items, span=item.span)
        if self.peek().kind != "rparen":
            raise self.error('"," or ")"')
        self.take()
        self.count(len(names))
        return tuple(names)

    def membership(self) -> Condition:
        start = self.take()
        self.count()
        if self.at("segment"):
            self.take()
            return InSegment(self.string(), span=self.since(start))
        if self.at("group"):
            self.take()
            return InGroup(self.string(), span=self.since(start))
        raise self.error('"segment" or "group"')

    def orders(self) -> Orders:
        start = self.take()
        self.count()
        token = self.peek()
        if token.kind != "word" or token.value not in MEASURES:
            raise self.error("an order measure (count, sum, avg, min, max, aov)")
        measure = self.take().value
        field = self.name("an order field") if measure in FIELD_MEASURES else None
        where: tuple[FieldCondition, ...] = ()
        if self.at("where"):
            self.take()
            where = self.where_list("order")
        op_token = self.peek()
        if op_token.kind != "op" or op_token.value not in COUNT_OPS:
            raise self.error(*((_COMPARISON,) if where else (_COMPARISON, '"where"')))
        self.take()
        number = self.peek()
        if number.kind != "number":
            raise self.error("a number")
        self.take()
        window: Window = self.window() if self.at_window() else Ever()
        if self.at("where") and not where:
            self.take()
            where = self.trailing_where("order")
        return Orders(
            cast(Measure, measure),
            cast(CountOp, op_token.value),
            cast(int | float, number.value),
            field,
            where,
            window,
            span=self.since(start),
        )


def parse(text: str, *, limits: Limits = DEFAULT_LIMITS) -> Condition:
    """Parse a segment expression into its tree.

    Raises :class:`~siyu.segments.errors.SegmentSyntaxError` (with position, what was found and what
    was expected) or :class:`~siyu.segments.errors.SegmentLimitError`. Names are not checked against
    any catalogue here; see :func:`~siyu.segments.validate.validate`.
    """
    if len(text) > limits.max_length:
        raise SegmentLimitError("max_length", limits.max_length, len(text))
    return _Parser(text, limits).parse()
