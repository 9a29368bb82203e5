"""Phone matching against CRMs that store numbers as people typed them.

Remote CRMs are searched with the few renderings a number is commonly stored in
(`+33612345678`, `0612345678`, `612345678`, ...), then every hit is checked again
here in E.164 (`same_number`), so a loose CRM-side search never pops a stranger.
"""

from __future__ import annotations

import re

import phonenumbers
from phonenumbers import PhoneNumberFormat

from cti import phone


def variants(e164: str, region: str = "FR") -> dict[str, str]:
    """Renderings of an E.164 number, for URL templates and CRM-side searches."""
    num = phonenumbers.parse(e164, region)
    national = phonenumbers.format_number(num, PhoneNumberFormat.NATIONAL)
    return {
        "e164": e164,
        "e164_digits": e164.lstrip("+"),
        "national": re.sub(r"\D", "", national),
        "national_formatted": national,
        "international": phonenumbers.format_number(num, PhoneNumberFormat.INTERNATIONAL),
        "nsn": phonenumbers.national_significant_number(num),
        "country_code": str(num.country_code),
    }


def same_number(stored: str | None, e164: str, region: str = "FR") -> bool:
    """Does a number as the CRM stores it designate `e164`?"""
    if not stored:
        return False
    norm = phone.normalize(stored, region)
    if norm == e164:
        return True
    if norm and norm.startswith("+"):
        return False  # a valid, different number
    # unparseable rendering (odd separators, missing trunk prefix): compare the significant digits
    digits = re.sub(r"\D", "", phone._EXT.sub("", stored))
    nsn = variants(e164, region)["nsn"]
    return len(digits) >= len(nsn) and digits.endswith(nsn)
