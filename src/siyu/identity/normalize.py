"""Normalising and screening identity values before they reach the identity graph."""

from __future__ import annotations

import re
from dataclasses import dataclass

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CN_MOBILE = re.compile(r"^1[3-9]\d{9}$")
_CN_LANDLINE = re.compile(r"^0[1-9]\d{8,10}$")  # trunk 0, area code, 7–8 digit number
_DIGITS = re.compile(r"\d+")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{1,63}$")
MAX_IDENTITY_CHARS = 128


class IdentityValueError(ValueError):
    """An identity value that cannot be used (wrong shape)."""


def normalize_phone(raw: str) -> str:
    """A phone number in E.164 form; mainland mobile numbers become ``+86…``.

    Accepts spaces, dashes, dots and brackets, and the ``86`` / ``+86`` / ``0086`` prefixes.
    """
    text = raw.strip()
    if not text:
        raise IdentityValueError("empty phone number")
    if re.search(r"[^\d\s()+.\-]", text):
        raise IdentityValueError(f"not a phone number: {raw[:40]!r}")
    plus = text.startswith("+")
    digits = "".join(_DIGITS.findall(text))
    if digits.startswith("0086"):
        digits, plus = digits[2:], True
    if not plus and len(digits) == 13 and digits.startswith("86") and _CN_MOBILE.match(digits[2:]):
        return "+" + digits
    if not plus and _CN_MOBILE.match(digits):
        return "+86" + digits
    if not plus and _CN_LANDLINE.match(digits):
        return "+86" + digits[1:]  # 010-12345678 → +861012345678
    if plus and digits.startswith("86"):
        if _CN_MOBILE.match(digits[2:]) or 9 <= len(digits) <= 13:
            return "+" + digits
        raise IdentityValueError(f"not a valid +86 phone number: {raw[:40]!r}")
    if plus and 8 <= len(digits) <= 15:
        return "+" + digits
    raise IdentityValueError(f"not a phone number: {raw[:40]!r}")


@dataclass(frozen=True)
class IdentityScreen:
    """Decides which identity values are usable, and normalises them.

    ``blocked`` values (``""``, ``"null"``, ``"0"``, …) and configured test phones are silently
    dropped, as Segment Unify does: they would otherwise glue unrelated people together.
    """

    blocked: frozenset[str]
    test_phones: frozenset[str]

    @classmethod
    def from_lists(cls, blocked: list[str] | tuple[str, ...], test_phones: list[str]) -> IdentityScreen:
        """Build a screen from settings lists (test phones are normalised first)."""
        phones = set()
        for phone in test_phones:
            try:
                phones.add(normalize_phone(phone))
            except IdentityValueError:
                phones.add(phone.strip())
        return cls(frozenset(v.strip().lower() for v in blocked), frozenset(phones))

    def clean(self, id_type: str, raw: object) -> str | None:
        """The normalised value, or None when the value is blocked. Raises for malformed values."""
        if raw is None:
            return None
        if isinstance(raw, bool) or not isinstance(raw, (str, int)):
            raise IdentityValueError(f"must be a string, got {type(raw).__name__}")
        text = str(raw).strip()
        if not text or text.lower() in self.blocked:  # empty is never an identity, whatever the config
            return None
        if len(text) > MAX_IDENTITY_CHARS:
            raise IdentityValueError(f"longer than {MAX_IDENTITY_CHARS} characters")
        if _CONTROL.search(text):
            raise IdentityValueError("contains control characters")
        if id_type == "phone":
            value = normalize_phone(text)
            return None if value in self.test_phones else value
        if id_type == "email":
            value = text.lower()
            if not _EMAIL.match(value):
                raise IdentityValueError(f"not an e-mail address: {text[:40]!r}")
            return value
        return text
