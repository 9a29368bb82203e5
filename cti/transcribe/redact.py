"""Redaction of payment data (and optionally e-mails) before anything is stored or summarized.

Rules, all on text as ASR writes it:
- card numbers: runs of 13-19 digits, written ("4111 1111-1111 1111") or spoken
  ("four one one one ..."), that pass the Luhn check; or, after a card cue
  ("card number", "visa", ...), any run of 12-19 digits (ASR may get one digit wrong
  and we would rather hide a wrong number than store a right one);
- security codes: 3-4 digits following "security code", "CVV", "CVC", ...;
- e-mail addresses (written, or spoken "name at example dot com"), when enabled.
Findings carry the kind and position, never the value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cti.transcribe.textnorm import DIGIT_WORDS

CARD = "[REDACTED CARD]"
CVV = "[REDACTED CVV]"
EMAIL = "[REDACTED EMAIL]"

_TOKEN = re.compile(r"\d+|[A-Za-z]+|[^\sA-Za-z\d]")
_SEPARATORS = {"-", ",", "/"}  # may sit inside a spoken or written number; "." ends a sentence
_MULTIPLIERS = {"double": 2, "triple": 3}
_CARD_CUES = {"card", "visa", "mastercard", "amex", "credit", "debit", "pan"}
_CVV_CUE = re.compile(
    r"\b(security\s+code|cvv2?|cvc2?|cid|card\s+verification(\s+(value|code|number))?|three[-\s]digit\s+code"
    r"|code\s+on\s+the\s+back)\b",
    re.IGNORECASE,
)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_TLDS = r"(?:com|org|net|edu|gov|io|co|uk|fr|de|es|it|eu|info|biz|us|ca)"
_SPOKEN_EMAIL = re.compile(
    rf"\b[\w.+-]+(?:\s+dot\s+[\w-]+)*\s+at\s+[\w-]+(?:\s+dot\s+[\w-]+)*\s+dot\s+{_TLDS}\b", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # card_number | cvv | email
    start: int
    end: int


def luhn_ok(digits: str) -> bool:
    if not digits.isdigit() or len(digits) < 2:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


@dataclass(frozen=True, slots=True)
class _Tok:
    text: str
    start: int
    end: int
    digits: str | None  # what the token contributes to a number, None if it is not a number


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    for m in _TOKEN.finditer(text):
        t = m.group(0)
        low = t.lower()
        digits: str | None = None
        if t.isdigit():
            digits = t
        elif low in DIGIT_WORDS:
            digits = str(DIGIT_WORDS[low])
        out.append(_Tok(t, m.start(), m.end(), digits))
    # "double five" -> 55: fold the multiplier into the digit after it
    fixed: list[_Tok] = []
    for i, tok in enumerate(out):
        low = tok.text.lower()
        if low in _MULTIPLIERS and i + 1 < len(out) and out[i + 1].digits and len(out[i + 1].digits or "") == 1:
            fixed.append(_Tok(tok.text, tok.start, tok.end, ""))  # part of the run, adds nothing itself
            nxt = out[i + 1]
            out[i + 1] = _Tok(nxt.text, nxt.start, nxt.end, (nxt.digits or "") * _MULTIPLIERS[low])
        else:
            fixed.append(tok)
    return fixed


def _digit_runs(toks: list[_Tok]) -> list[list[int]]:
    """Index lists of tokens forming one number (digits, digit words, separators between)."""
    runs: list[list[int]] = []
    cur: list[int] = []
    for i, t in enumerate(toks):
        if t.digits is not None:
            cur.append(i)
        elif t.text in _SEPARATORS and cur:
            continue
        else:
            if cur:
                runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return runs


def _card_cue_before(toks: list[_Tok], first: int, window: int = 8) -> bool:
    return any(t.text.lower() in _CARD_CUES for t in toks[max(0, first - window): first])


def find_card_numbers(text: str) -> list[Finding]:
    toks = _tokens(text)
    found: list[Finding] = []
    for run in _digit_runs(toks):
        digits = [toks[i].digits or "" for i in run]
        n = len(run)
        best: tuple[int, int] | None = None
        # the longest window of whole tokens that is a card number
        for a in range(n):
            total = ""
            for b in range(a, n):
                total += digits[b]
                if len(total) > 19:
                    break
                if 13 <= len(total) <= 19 and luhn_ok(total) and (best is None or b - a > best[1] - best[0]):
                    best = (a, b)
        if best is None:
            all_digits = "".join(digits)
            if 12 <= len(all_digits) <= 19 and _card_cue_before(toks, run[0]):
                best = (0, n - 1)
        if best is not None:
            found.append(Finding("card_number", toks[run[best[0]]].start, toks[run[best[1]]].end))
    return found


def find_security_codes(text: str) -> list[Finding]:
    toks = _tokens(text)
    found: list[Finding] = []
    for cue in _CVV_CUE.finditer(text):
        after = [i for i, t in enumerate(toks) if t.start >= cue.end()]
        for run in _digit_runs([toks[i] for i in after[:12]]):
            idx = [after[i] for i in run]
            digits = "".join(toks[i].digits or "" for i in idx)
            if 3 <= len(digits) <= 4:
                found.append(Finding("cvv", toks[idx[0]].start, toks[idx[-1]].end))
                break
    return found


def find_emails(text: str) -> list[Finding]:
    spans = [Finding("email", m.start(), m.end()) for m in _EMAIL.finditer(text)]
    spans += [Finding("email", m.start(), m.end()) for m in _SPOKEN_EMAIL.finditer(text)]
    return spans


def find_sensitive(text: str, *, emails: bool = False) -> list[Finding]:
    spans = find_card_numbers(text) + find_security_codes(text)
    if emails:
        spans += find_emails(text)
    return _merge(spans)


def _merge(spans: list[Finding]) -> list[Finding]:
    out: list[Finding] = []
    for f in sorted(spans, key=lambda f: (f.start, -f.end)):
        if out and f.start < out[-1].end:
            last = out[-1]
            out[-1] = Finding(last.kind, last.start, max(last.end, f.end))
        else:
            out.append(f)
    return out


_MARK = {"card_number": CARD, "cvv": CVV, "email": EMAIL}


def apply(text: str, spans: list[Finding]) -> str:
    for f in sorted(spans, key=lambda f: f.start, reverse=True):
        text = text[: f.start] + _MARK[f.kind] + text[f.end:]
    return text


def redact_text(text: str, *, emails: bool = False) -> tuple[str, list[Finding]]:
    spans = find_sensitive(text, emails=emails)
    return apply(text, spans), spans


def redact_segments(texts: list[str], *, emails: bool = False) -> tuple[list[str], list[str]]:
    """Redact a list of consecutive segment texts as one text (a number may straddle two).

    Returns the redacted texts and the kinds found (for logs and metrics; no values).
    """
    joined = " ".join(texts)
    spans = find_sensitive(joined, emails=emails)
    if not spans:
        return list(texts), []
    out: list[str] = []
    pos = 0
    for t in texts:
        a, b = pos, pos + len(t)
        local = [
            Finding(f.kind, max(f.start, a) - a, min(f.end, b) - a) for f in spans if f.start < b and f.end > a
        ]
        out.append(apply(t, local))
        pos = b + 1
    return out, [f.kind for f in spans]
