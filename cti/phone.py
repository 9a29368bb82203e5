"""Phone numbers: parse anything people type or CRMs store, keep E.164.

`to_e164("06 12 34 56 78", "FR") == "+33612345678"`; also handles `0033...`,
dots, dashes, parentheses and extensions (`+33 1 70 00 00 00 ext. 12`, `;ext=12`,
`x12`: the extension is dropped for matching). Invalid input raises
`InvalidNumber` whose message names the input.
"""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, PhoneNumberType

_EXT = re.compile(r"\s*(?:;ext=|ext\.?|extension|x|poste|#)\s*\d+\s*$", re.IGNORECASE)
_INTL_00 = re.compile(r"^\s*00(?=[1-9])")
_SHORT = re.compile(r"^\d{2,6}$")  # internal extensions: not E.164, kept as they are


class InvalidNumber(ValueError):
    def __init__(self, raw: object, reason: str = "not a valid phone number") -> None:
        self.raw = raw
        super().__init__(f"{raw!r}: {reason}")


def _clean(raw: str) -> str:
    s = _EXT.sub("", raw.strip())
    s = s.removeprefix("tel:").removeprefix("sip:").split("@")[0]
    return _INTL_00.sub("+", s)


def parse(raw: str, region: str = "FR") -> phonenumbers.PhoneNumber:
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidNumber(raw, "empty phone number")
    s = _clean(raw)
    if not re.search(r"\d", s):
        raise InvalidNumber(raw, "no digits")
    try:
        num = phonenumbers.parse(s, region.upper())
    except NumberParseException as exc:
        raise InvalidNumber(raw, str(exc.args[0] if exc.args else exc)) from None
    if not phonenumbers.is_valid_number(num):
        raise InvalidNumber(raw)
    return num


def to_e164(raw: str, region: str = "FR") -> str:
    """E.164 string for `raw`; raises InvalidNumber naming the input."""
    return phonenumbers.format_number(parse(raw, region), PhoneNumberFormat.E164)


# Provider events, pops and activities normalize the same few numbers again and again, and
# libphonenumber's parse costs ~40 us: a bounded cache of these pure functions saves it.
@lru_cache(maxsize=8192)
def normalize(raw: str | None, region: str = "FR") -> str | None:
    """Best effort for provider data: E.164 when valid, short extensions and anonymous
    callers kept as-is, None for empty."""
    if raw is None:
        return None
    s = raw.strip()
    if not s:
        return None
    if _SHORT.match(s) or s.lower() in ("anonymous", "unknown", "restricted", "private"):
        return s
    try:
        return to_e164(s, region)
    except InvalidNumber:
        return s


@lru_cache(maxsize=8192)
def display(e164: str, region: str = "FR") -> str:
    """National format for people in the same country, international otherwise."""
    try:
        num = phonenumbers.parse(e164, region)
    except NumberParseException:
        return e164
    if phonenumbers.region_code_for_number(num) == region.upper():
        return phonenumbers.format_number(num, PhoneNumberFormat.NATIONAL)
    return phonenumbers.format_number(num, PhoneNumberFormat.INTERNATIONAL)


def is_premium(e164: str, region: str = "FR") -> bool:
    try:
        num = phonenumbers.parse(e164, region)
    except NumberParseException:
        return False
    return phonenumbers.number_type(num) in (PhoneNumberType.PREMIUM_RATE, PhoneNumberType.SHARED_COST)


def check_dialable(raw: str, region: str, blocked_prefixes: list[str]) -> str:
    """Click-to-call policy: valid E.164, not premium-rate, not a blocked prefix.

    Returns the E.164 number or raises InvalidNumber with the reason.
    """
    e164 = to_e164(raw, region)
    for prefix in blocked_prefixes:
        p = prefix.replace(" ", "")
        if p and e164.startswith(p):
            raise InvalidNumber(raw, f"numbers starting with {p} are blocked by policy")
    if is_premium(e164, region):
        raise InvalidNumber(raw, "premium-rate numbers are blocked by policy")
    return e164
