"""Identity values: phone / e-mail normalisation, blocked values and test phones (unit and through the API)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import identify, track
from siyu.config import DEFAULT_BLOCKED_VALUES
from siyu.identity.normalize import IdentityScreen, IdentityValueError, normalize_phone

MOBILE = "13800138000"


@pytest.mark.parametrize(
    "raw",
    [
        "13800138000",
        " 13800138000 ",
        "138 0013 8000",
        "138-0013-8000",
        "138.0013.8000",
        "+8613800138000",
        "+86 138 0013 8000",
        "+86-138-0013-8000",
        "(+86) 138-0013-8000",
        "8613800138000",
        "86 138 0013 8000",
        "008613800138000",
        "0086 138 0013 8000",
        "0086-13800138000",
    ],
)
def test_mainland_mobile_forms_normalise_to_plus86(raw: str) -> None:
    assert normalize_phone(raw) == "+86" + MOBILE


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("+1 415 555 2671", "+14155552671"), ("+44 20 7946 0958", "+442079460958"), ("+852 9123 4567", "+85291234567")],
)
def test_foreign_numbers_with_plus_keep_their_country_code(raw: str, expected: str) -> None:
    assert normalize_phone(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "12345",
        "abc",
        "138OO138OOO",  # letter O instead of zero
        "1380013800",  # 10 digits
        "138001380001",  # 12 digits
        "23800138000",  # not a mobile prefix, no country code
        "12800138000",  # 12x is not a mobile range
        "+86 123",
        "+86 13800138000 ext 12",
        "tel:13800138000",
        "+1234567",  # too short for E.164 with a plus
        "+1234567890123456",  # too long (16 digits)
    ],
)
def test_invalid_phone_numbers_raise(raw: str) -> None:
    with pytest.raises(IdentityValueError):
        normalize_phone(raw)


_SEPARATORS = st.sampled_from(["", " ", "-", ".", "  "])


@st.composite
def formatted_mobiles(draw: st.DrawFn) -> tuple[str, str]:
    """A mainland mobile number and some way a person might type it."""
    second = draw(st.sampled_from("3456789"))
    rest = draw(st.text(alphabet="0123456789", min_size=9, max_size=9))
    number = "1" + second + rest
    prefix = draw(st.sampled_from(["", "+86", "+86 ", "0086", "0086 ", "86", "86-", "(+86)"]))
    out = []
    for ch in number:
        out.append(ch)
        out.append(draw(_SEPARATORS) if draw(st.booleans()) else "")
    return number, prefix + "".join(out).strip(" -.")


@given(formatted_mobiles())
def test_property_any_formatting_of_a_mobile_gives_the_same_e164(case: tuple[str, str]) -> None:
    number, typed = case
    assert normalize_phone(typed) == "+86" + number


@given(st.text(alphabet="0123456789+-. ()86a", max_size=24))
def test_property_normalised_phones_are_e164_and_normalising_is_idempotent(raw: str) -> None:
    try:
        value = normalize_phone(raw)
    except IdentityValueError:
        return
    assert re.fullmatch(r"\+\d{8,15}", value), value
    assert normalize_phone(value) == value


# -- the screen ---------------------------------------------------------------------------------
@pytest.fixture
def screen() -> IdentityScreen:
    return IdentityScreen.from_lists(DEFAULT_BLOCKED_VALUES, ["138-0000-0000", "+86 139 0000 0000"])


def test_email_is_trimmed_and_lowercased(screen: IdentityScreen) -> None:
    assert screen.clean("email", "  Alice.Wang@Example.COM ") == "alice.wang@example.com"


@pytest.mark.parametrize("raw", ["not-an-email", "a@b", "a b@example.com", "@example.com", "a@@example.com"])
def test_malformed_email_raises(screen: IdentityScreen, raw: str) -> None:
    with pytest.raises(IdentityValueError):
        screen.clean("email", raw)


@pytest.mark.parametrize("id_type", ["user_id", "anonymous_id", "phone", "email", "member_id"])
@pytest.mark.parametrize("raw", ["", "   ", "null", "NULL", " Null ", "0", "undefined", "Undefined", "none", "-1"])
def test_blocked_values_are_ignored(screen: IdentityScreen, id_type: str, raw: str) -> None:
    assert screen.clean(id_type, raw) is None


def test_none_is_ignored(screen: IdentityScreen) -> None:
    assert screen.clean("user_id", None) is None


@pytest.mark.parametrize("raw", ["13800000000", "+86 138 0000 0000", "0086-139-0000-0000", "8613900000000"])
def test_configured_test_phones_are_ignored_in_any_form(screen: IdentityScreen, raw: str) -> None:
    assert screen.clean("phone", raw) is None


def test_other_phones_are_normalised(screen: IdentityScreen) -> None:
    assert screen.clean("phone", "138 0013 8000") == "+8613800138000"


def test_integer_ids_become_strings_and_other_types_are_refused(screen: IdentityScreen) -> None:
    assert screen.clean("user_id", 12345) == "12345"
    assert screen.clean("phone", 13800138000) == "+8613800138000"
    for bad in (True, 1.5, ["u1"], {"id": "u1"}):
        with pytest.raises(IdentityValueError):
            screen.clean("user_id", bad)


@pytest.mark.parametrize("raw", ["u\x00", "u\n1", "u\x7f", "x" * 129])
def test_control_characters_and_overlong_values_raise(screen: IdentityScreen, raw: str) -> None:
    with pytest.raises(IdentityValueError):
        screen.clean("user_id", raw)


# -- through the API (both ops stores) ----------------------------------------------------------
def test_message_with_only_blocked_identities_is_rejected_and_nothing_stored(api) -> None:
    before = api.snapshot()
    r = api.post_batch(
        [
            track(userId="null", anonymousId="undefined", identities={"phone": "0", "email": ""}),
        ]
    )
    assert r.status_code == 422, r.text
    errors = r.json()["error"]["errors"]
    assert [e["index"] for e in errors] == [0]
    assert "identity" in errors[0]["reason"]
    assert api.snapshot() == before


@pytest.mark.siyu_settings(test_phones=["13800000000"])
def test_blocked_and_test_phone_identities_are_dropped_but_the_message_is_kept(api) -> None:
    result = api.batch(
        [
            identify(userId="null", anonymousId="anon-keep", identities={"phone": "+86 138-0000-0000", "email": "0"}),
        ]
    )
    assert result["accepted"] == 1
    profile = api.person("anonymous_id:anon-keep")
    assert [(i["type"], i["value"]) for i in profile["identities"]] == [("anonymous_id", "anon-keep")]
    assert api.get_person("user_id:null").status_code == 404
    assert api.get_person("phone:+8613800000000").status_code == 404
    assert api.stats()["identities"] == 1


@pytest.mark.siyu_settings(test_phones=["13800000000"])
def test_message_whose_only_identity_is_a_test_phone_is_rejected(api) -> None:
    before = api.snapshot()
    r = api.post_batch([track(identities={"phone": "0086 13800000000"})])
    assert r.status_code == 422, r.text
    assert api.snapshot() == before


def test_differently_written_phones_and_emails_resolve_to_one_person(api) -> None:
    first = api.batch([identify(identities={"phone": "0086 138-0013-8000", "email": "Bob@Example.COM"})])
    assert first["new_persons"] == 1
    again = api.batch(
        [
            track(identities={"phone": "+86 13800138000"}),
            track(identities={"email": " bob@example.com"}),
            track(identities={"phone": "138.0013.8000", "email": "BOB@EXAMPLE.COM"}),
        ]
    )
    assert again["accepted"] == 3
    assert again["new_persons"] == 0
    profile = api.person("phone:+8613800138000")
    assert profile["id"] == api.person_id("email:bob@example.com")
    assert sorted((i["type"], i["value"]) for i in profile["identities"]) == [
        ("email", "bob@example.com"),
        ("phone", "+8613800138000"),
    ]
    assert api.stats() == {"persons": 1, "identities": 2, "events": 4, "orders": 0}


def test_invalid_phone_is_rejected_naming_the_field(api) -> None:
    before = api.snapshot()
    r = api.post_batch([track(userId="u-1"), track(userId="u-2", identities={"phone": "12345"})])
    assert r.status_code == 422, r.text
    assert [(e["index"], e["field"]) for e in r.json()["error"]["errors"]] == [(1, "identities.phone")]
    assert api.snapshot() == before
