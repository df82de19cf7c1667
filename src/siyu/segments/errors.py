"""Errors of the segment language, each with a message in Chinese and in English.

``str(error)`` is ``"<中文> / <English>"``; ``error.to_dict()`` is the JSON the API returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from siyu.segments.nodes import Span

#: Bilingual names of what the parser can expect, keyed by the English name.
EXPECTED_ZH: dict[str, str] = {
    "a condition": "条件",
    "a comparison operator": "比较运算符",
    "a value": "值",
    "a string": "字符串",
    "a number": "数字",
    "a whole number": "整数",
    "a date": "日期",
    "a duration like 30d": "时长（如 30d）",
    "a field name": "字段名",
    "an event name": "事件名",
    "a property name": "属性名",
    '"ago"': '"ago"',
    '"and"': '"and"',
    '"by"': '"by"',
    '"did"': '"did"',
    '"in"': '"in"',
    '"last"': '"last"',
    '"set"': '"set"',
    '"tag"': '"tag"',
    '"within"': '"within"',
    '"segment" or "group"': '"segment" 或 "group"',
    '"tag", "any", "all" or "no"': '"tag"、"any"、"all" 或 "no"',
    "an order measure (count, sum, avg, min, max, aov)": "订单指标（count、sum、avg、min、max、aov）",
    "an order field": "订单字段",
    '"("': '"("',
    '")"': '")"',
    '"," or ")"': '"," 或 ")"',
    "the end of the expression": "表达式结尾",
}


def _zh_expected(expected: tuple[str, ...]) -> str:
    names = [EXPECTED_ZH.get(e, e) for e in expected]
    return names[0] if len(names) == 1 else "、".join(names[:-1]) + " 或 " + names[-1]


def _en_expected(expected: tuple[str, ...]) -> str:
    return expected[0] if len(expected) == 1 else ", ".join(expected[:-1]) + " or " + expected[-1]


class SegmentError(ValueError):
    """Base of every segment-language error; carries the message in both languages."""

    def __init__(self, message_zh: str, message_en: str) -> None:
        super().__init__(f"{message_zh} / {message_en}")
        self.message_zh = message_zh
        self.message_en = message_en

    def to_dict(self) -> dict[str, Any]:
        """The error as JSON for the API: ``kind``, ``message`` (both languages), ``zh``, ``en``."""
        return {"kind": type(self).__name__, "message": str(self), "zh": self.message_zh, "en": self.message_en}


def _where(span: Span | None) -> tuple[str, str]:
    if span is None:
        return "", ""
    return f"第 {span.line} 行第 {span.column} 列：", f"line {span.line}, column {span.column}: "


class SegmentSyntaxError(SegmentError):
    """The text is not a segment expression: where (1-based line/column, 0-based character offset),
    what was found and what was expected."""

    def __init__(
        self,
        span: Span,
        found: str,
        expected: tuple[str, ...] = (),
        *,
        detail_zh: str | None = None,
        detail_en: str | None = None,
    ) -> None:
        at_zh, at_en = _where(span)
        if detail_zh is not None and detail_en is not None:
            zh, en = at_zh + detail_zh, at_en + detail_en
        else:
            zh = f"{at_zh}应为 {_zh_expected(expected)}，却是 {EXPECTED_ZH.get(found, found)}"
            en = f"{at_en}expected {_en_expected(expected)}, found {found}"
        super().__init__(zh, en)
        self.span = span
        self.line = span.line
        self.column = span.column
        self.offset = span.offset
        self.found = found
        self.expected = expected

    def to_dict(self) -> dict[str, Any]:
        """As :meth:`SegmentError.to_dict`, plus ``line``, ``column``, ``offset``, ``end``, ``found``, ``expected``."""
        return {
            **super().to_dict(),
            "line": self.line,
            "column": self.column,
            "offset": self.offset,
            "end": self.span.end,
            "found": self.found,
            "expected": list(self.expected),
        }


class SegmentLimitError(SegmentError):
    """An expression or tree over one of the :class:`~siyu.segments.limits.Limits`."""

    _NAMES: ClassVar[dict[str, tuple[str, str, str, str]]] = {
        "max_length": ("表达式过长", "expression too long", "个字符", "characters"),
        "max_nodes": ("条件过多", "too many conditions and values", "个节点", "nodes"),
        "max_depth": ("嵌套过深", "nesting too deep", "层", "levels"),
        "max_list_items": ("列表过长", "list too long", "项", "items"),
    }

    def __init__(self, limit: str, maximum: int, actual: int | None = None, span: Span | None = None) -> None:
        name_zh, name_en, unit_zh, unit_en = self._NAMES[limit]
        at_zh, at_en = _where(span)
        if actual is not None:
            # "列表过长：1001 项，上限为 1000 项" / "list too long: 1001 items, the limit is 1000 items"
            zh = f"{name_zh}：{actual} {unit_zh}，上限为 {maximum} {unit_zh}"
            en = f"{name_en}: {actual} {unit_en}, the limit is {maximum} {unit_en}"
        else:
            # Raised on the first item over the limit, before the total is known.
            zh = f"{name_zh}：超过上限 {maximum} {unit_zh}"
            en = f"{name_en}: more than the limit of {maximum} {unit_en}"
        super().__init__(at_zh + zh, at_en + en)
        self.limit = limit
        self.maximum = maximum
        self.actual = actual
        self.span = span

    def to_dict(self) -> dict[str, Any]:
        """As :meth:`SegmentError.to_dict`, plus ``limit``, ``maximum`` and the position if known."""
        out = {**super().to_dict(), "limit": self.limit, "maximum": self.maximum}
        if self.span is not None:
            out.update(line=self.span.line, column=self.span.column, offset=self.span.offset)
        return out


class SegmentJsonError(SegmentError):
    """A JSON tree that is not a well-formed segment; ``path`` points at the bad part (``$.items[1].op``)."""

    def __init__(self, path: str, detail_zh: str, detail_en: str) -> None:
        super().__init__(f"{path}：{detail_zh}", f"{path}: {detail_en}")
        self.path = path

    def to_dict(self) -> dict[str, Any]:
        """As :meth:`SegmentError.to_dict`, plus ``path``."""
        return {**super().to_dict(), "path": self.path}


@dataclass(frozen=True)
class Problem:
    """One finding of :func:`~siyu.segments.validate.check`: ``code`` (``unknown_trait``,
    ``type_mismatch`` …), where it is (tree ``path`` and, for parsed text, ``span``), the offending
    ``name``, ``suggestions``, and the message in both languages."""

    code: str
    path: str
    message_zh: str
    message_en: str
    name: str | None = None
    suggestions: tuple[str, ...] = ()
    span: Span | None = field(default=None, compare=False)

    def __str__(self) -> str:
        at_zh, at_en = _where(self.span)
        return f"{at_zh}{self.message_zh} / {at_en}{self.message_en}"

    def to_dict(self) -> dict[str, Any]:
        """The problem as JSON."""
        out: dict[str, Any] = {
            "code": self.code,
            "path": self.path,
            "message": str(self),
            "zh": self.message_zh,
            "en": self.message_en,
            "name": self.name,
            "suggestions": list(self.suggestions),
        }
        if self.span is not None:
            out.update(line=self.span.line, column=self.span.column, offset=self.span.offset, end=self.span.end)
        return out


class SegmentValidationError(SegmentError):
    """The expression parses but does not fit the catalogue: unknown names or type mismatches."""

    def __init__(self, problems: list[Problem]) -> None:
        first = problems[0]
        more_zh = f"（另有 {len(problems) - 1} 个问题）" if len(problems) > 1 else ""
        more_en = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        at_zh, at_en = _where(first.span)
        super().__init__(f"{at_zh}{first.message_zh}{more_zh}", f"{at_en}{first.message_en}{more_en}")
        self.problems = tuple(problems)

    def to_dict(self) -> dict[str, Any]:
        """As :meth:`SegmentError.to_dict`, plus every problem."""
        return {**super().to_dict(), "problems": [p.to_dict() for p in self.problems]}


#: The API's error code for an error with an HTTP ``status`` other than 422.
_STATUS_CODES = {404: "not_found", 409: "conflict"}


def error_status(exc: Exception) -> tuple[int, str]:
    """The HTTP status and error code the API answers ``exc`` with: 422 ``invalid_segment`` for a
    segment-language error or a tree the compiler refuses; an error carrying a ``status`` (a saved
    segment not found, a name in use) answers that status, 404 ``not_found`` or 409 ``conflict``."""
    status = 422 if isinstance(exc, SegmentError) else int(getattr(exc, "status", 422))
    return status, _STATUS_CODES.get(status, "invalid_segment")


def error_body(exc: Exception) -> dict[str, Any]:
    """The JSON error object the API answers ``exc`` with (the CLI prints the same with ``--json``):
    ``{"error": {"code", "message", "errors"?}}``, ``errors`` holding :meth:`SegmentError.to_dict`
    (with every validation problem, its position and suggestions) for a segment-language error."""
    _, code = error_status(exc)
    body: dict[str, Any] = {"code": code, "message": str(exc)}
    if isinstance(exc, SegmentError):
        body["errors"] = [exc.to_dict()]
    return {"error": body}
