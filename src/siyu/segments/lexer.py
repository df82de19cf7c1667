"""Tokens of the segment language.

Keywords are English words; identifiers (trait, event, property names) may be any Unicode letters
(``城市``), digits, ``_``, ``.`` inside (``context.page``) and a leading ``$`` (``$group_joined``).
Strings take double or single quotes with ``\\" \\' \\\\ \\n \\t \\r \\uXXXX`` escapes.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from siyu.segments.errors import SegmentSyntaxError
from siyu.segments.nodes import MAX_INT, UNITS, Span

TokenKind = Literal["word", "string", "number", "duration", "op", "lparen", "rparen", "comma", "eof"]

END = "the end of the expression"
#: Builds a syntax error: (offset, found, message_zh, message_en[, end offset]).
Fail = Callable[..., SegmentSyntaxError]

_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_OPS = ("<=", ">=", "!=", "<", ">", "=")
_WHITESPACE = " \t\n\r\u3000"
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "n": "\n", "t": "\t", "r": "\r"}
#: Full-width punctuation an IME slips in, with the ASCII character meant.
_FULL_WIDTH = {"“": '"', "”": '"', "‘": "'", "’": "'", "（": "(", "）": ")", "，": ",", "＝": "=", "！": "!"}


@dataclass(frozen=True)
class Token:
    """One token: its ``kind``, its ``value`` (decoded string, number, ``(amount, unit)``) and ``span``."""

    kind: TokenKind
    value: object
    text: str
    span: Span

    def describe(self) -> str:
        """How an error message shows this token: ``"北京"``, ``"city"``, or the end of input."""
        if self.kind == "eof":
            return END
        text = self.text if len(self.text) <= 40 else self.text[:40] + "…"
        return text if self.kind == "string" else f'"{text}"'


class Positions:
    """Maps character offsets of one source text to 1-based line and column."""

    def __init__(self, source: str) -> None:
        self._starts = [0] + [i + 1 for i, ch in enumerate(source) if ch == "\n"]

    def span(self, offset: int, end: int) -> Span:
        """The span from ``offset`` to ``end``."""
        line = bisect.bisect_right(self._starts, offset)
        return Span(offset=offset, end=end, line=line, column=offset - self._starts[line - 1] + 1)


def _is_ident_start(ch: str) -> bool:
    return ch.isalpha() or ch in "_$"


def _is_ident_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _char_name(ch: str) -> str:
    return f"U+{ord(ch):04X}"


def tokenize(source: str) -> list[Token]:
    """The tokens of ``source``, ending with an ``eof`` token; raises :class:`SegmentSyntaxError`."""
    pos = Positions(source)
    tokens: list[Token] = []
    i, n = 0, len(source)

    def fail(at: int, found: str, zh: str, en: str, end: int | None = None) -> SegmentSyntaxError:
        return SegmentSyntaxError(pos.span(at, end if end is not None else at + 1), found, detail_zh=zh, detail_en=en)

    while i < n:
        ch = source[i]
        if ch in _WHITESPACE:
            i += 1
            continue
        start = i
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs"):
            raise fail(
                i,
                _char_name(ch),
                f"不允许的控制字符 {_char_name(ch)}",
                f"control character {_char_name(ch)} is not allowed",
            )
        if ch in "\"'":
            value, i = _string(source, i, fail)
            tokens.append(Token("string", value, source[start:i], pos.span(start, i)))
        elif ch == "(":
            i += 1
            tokens.append(Token("lparen", "(", "(", pos.span(start, i)))
        elif ch == ")":
            i += 1
            tokens.append(Token("rparen", ")", ")", pos.span(start, i)))
        elif ch == ",":
            i += 1
            tokens.append(Token("comma", ",", ",", pos.span(start, i)))
        elif ch.isascii() and (
            ch.isdigit() or (ch == "-" and i + 1 < n and source[i + 1].isascii() and source[i + 1].isdigit())
        ):
            token, i = _number(source, i, pos, fail)
            tokens.append(token)
        elif any(source.startswith(op, i) for op in _OPS):
            op = next(op for op in _OPS if source.startswith(op, i))
            i += len(op)
            tokens.append(Token("op", op, op, pos.span(start, i)))
        elif _is_ident_start(ch):
            i += 1
            while i < n and (
                _is_ident_char(source[i]) or (source[i] == "." and i + 1 < n and _is_ident_char(source[i + 1]))
            ):
                i += 1
            word = source[start:i]
            tokens.append(Token("word", word, word, pos.span(start, i)))
        elif ch in _FULL_WIDTH:
            meant = _FULL_WIDTH[ch]
            raise fail(
                i, f'"{ch}"', f'全角字符 "{ch}"，请改用半角 {meant}', f'full-width "{ch}": use ASCII {meant} instead'
            )
        else:
            raise fail(i, f'"{ch}"', f'意外的字符 "{ch}"', f'unexpected character "{ch}"')
    tokens.append(Token("eof", None, "", pos.span(n, n)))
    return tokens


def _string(source: str, i: int, fail: Fail) -> tuple[str, int]:
    quote, start = source[i], i
    out: list[str] = []
    i += 1
    while True:
        if i >= len(source) or source[i] == "\n":
            raise fail(start, source[start : start + 20], "字符串缺少结束引号", "unterminated string", i)
        ch = source[i]
        if ch == quote:
            return "".join(out), i + 1
        if ch == "\\":
            nxt = source[i + 1 : i + 2]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", source[i + 2 : i + 6]):
                code = int(source[i + 2 : i + 6], 16)
                if 0xD800 <= code <= 0xDFFF:
                    raise fail(
                        i,
                        source[i : i + 6],
                        "字符串中的代理码点无效",
                        "a surrogate code point is not a character",
                        i + 6,
                    )
                out.append(chr(code))
                i += 6
                continue
            raise fail(i, f'"\\{nxt}"', f'无效的转义 "\\{nxt}"', f'invalid escape "\\{nxt}"', i + 2)
        if unicodedata.category(ch) in ("Cc", "Cs"):
            raise fail(
                i,
                _char_name(ch),
                f"字符串中不允许控制字符 {_char_name(ch)}，请用转义",
                f"control character {_char_name(ch)} in a string: use an escape",
            )
        out.append(ch)
        i += 1


def _number(source: str, i: int, pos: Positions, fail: Fail) -> tuple[Token, int]:
    start = i
    match = _NUMBER.match(source, i)
    assert match is not None  # the caller saw a digit
    text = match.group()
    i = match.end()
    is_plain_int = text.lstrip("-").isdigit()
    is_unit = i < len(source) and source[i] in UNITS and (i + 1 >= len(source) or not _is_ident_char(source[i + 1]))
    if is_unit and is_plain_int and not text.startswith("-"):
        unit = source[i]
        i += 1
        if len(text) > 9:
            raise fail(start, f'"{source[start:i]}"', "时长过长", "duration too long", i)
        return Token("duration", (int(text), unit), source[start:i], pos.span(start, i)), i
    if i < len(source) and (_is_ident_char(source[i]) or source[i] == "."):
        j = i
        while j < len(source) and (_is_ident_char(source[j]) or source[j] == "."):
            j += 1
        raise fail(
            start,
            f'"{source[start:j]}"',
            f'无法识别 "{source[start:j]}"：时长写作 30d、12h、2w、6m（月）',
            f'cannot read "{source[start:j]}": a duration is written 30d, 12h, 2w or 6m (months)',
            j,
        )
    if is_plain_int:
        if len(text.lstrip("-")) > 19 or abs(int(text)) > MAX_INT:
            raise fail(start, f'"{text}"', "整数超出范围", "integer out of range", i)
        return Token("number", int(text), text, pos.span(start, i)), i
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise fail(start, f'"{text}"', "数字超出范围", "number out of range", i)
    return Token("number", value, text, pos.span(start, i)), i
