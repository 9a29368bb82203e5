"""Text normalization shared by redaction, key-fact matching and WER scoring.

Transcripts write numbers in many forms ("58213", "5-8-2-1-3", "five eight two one
three", "fifty-eight thousand..."); comparing or redacting them needs one form.
"""

from __future__ import annotations

import re

UNITS = {
    "zero": 0, "oh": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}
TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
        "ninety": 90}
SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
ORDINALS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
    "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13, "fourteenth": 14,
    "fifteenth": 15, "sixteenth": 16, "seventeenth": 17, "eighteenth": 18, "nineteenth": 19,
    "twentieth": 20, "thirtieth": 30,
}
DIGIT_WORDS = {k: v for k, v in UNITS.items() if v < 10}

_TOKEN = re.compile(r"[a-z]+|\d+")


def _is_numberish(tok: str) -> bool:
    return tok.isdigit() or tok in UNITS or tok in TENS or tok in SCALES or tok in ORDINALS


def words_to_numbers(tokens: list[str]) -> list[str]:
    """Replace runs of number words by digits: "twelve thousand five hundred" -> "12500".

    "oh" only counts as zero between other numbers; a unit after a unit starts a new
    number ("five eight" -> "5", "8"), which the digit-joining step later glues.
    """
    out: list[str] = []
    total: int | None = None
    cur = 0
    last = ""  # kind of the last number word: unit | tens | scale

    def flush() -> None:
        nonlocal total, cur, last
        if total is not None:
            out.append(str(total + cur))
        total, cur, last = None, 0, ""

    for i, tok in enumerate(tokens):
        if tok == "oh" and not (
            (i > 0 and _is_numberish(tokens[i - 1])) and (i + 1 < len(tokens) and _is_numberish(tokens[i + 1]))
        ):
            flush()
            out.append(tok)
            continue
        if tok == "and" and total is not None and last == "scale" and i + 1 < len(tokens) and (
            tokens[i + 1] in UNITS or tokens[i + 1] in TENS
        ):
            continue  # "one hundred and five"
        if tok in ORDINALS:
            v = ORDINALS[tok]
            if total is not None and last == "tens" and v < 10:
                cur += v
                flush()
            else:
                flush()
                out.append(str(v))
            continue
        if tok in UNITS:
            v = UNITS[tok]
            if total is not None and ((last == "tens" and v < 10) or last == "scale"):
                cur += v
            else:
                flush()
                total, cur = 0, v
            last = "unit"
        elif tok in TENS:
            if total is not None and last == "scale":
                cur += TENS[tok]
            else:
                flush()
                total, cur = 0, TENS[tok]
            last = "tens"
        elif (tok in SCALES and total is not None and last != "scale") or (tok in SCALES and last == "scale"
                                                                          and tok == "thousand"):
            scale = SCALES[tok]
            if scale == 100:
                cur = (cur or 1) * 100
            else:
                total = (total or 0) + (cur or 1) * scale
                cur = 0
            last = "scale"
        else:
            flush()
            out.append(tok)
    flush()
    return out


def join_digit_runs(tokens: list[str]) -> list[str]:
    """Glue consecutive all-digit tokens: "5 8 2 1 3" -> "58213", "555 0142" -> "5550142"."""
    out: list[str] = []
    for tok in tokens:
        if tok.isdigit() and out and out[-1].isdigit():
            out[-1] += tok
        else:
            out.append(tok)
    return out


_SPELLING = {"ok": "okay", "wifi": "wi fi", "e-mail": "email", "alright": "all right", "percent": "percent",
             "bucks": "dollars", "buck": "dollar", "usd": "dollars", "eur": "euros", "gbp": "pounds",
             "noon": "12 pm", "midday": "12 pm", "midnight": "12 am", "pct": "percent"}
_REPEAT = {"double": 2, "triple": 3}


def normalize(text: str) -> str:
    """Lower-case, no punctuation, numbers as digits: the form WER and fact matching use."""
    t = text.lower()
    t = t.replace("’", "'")
    t = re.sub(r"(?<=\d),(?=\d{3}\b)", "", t)                 # 12,500 -> 12500
    t = re.sub(r"\$(\d+) and \$0?\.(\d\d)\b", r"$\1.\2", t)  # "$86 and $0.40" (ASR) == "$86.40"
    t = re.sub(r"\$\s?(\d+)(?:\.(\d{2}))?", lambda m: f"{m.group(1)} {m.group(2) or ''} dollars", t)
    t = re.sub(r"€\s?(\d+)(?:\.(\d{2}))?", lambda m: f"{m.group(1)} {m.group(2) or ''} euros", t)
    t = re.sub(r"£\s?(\d+)(?:\.(\d{2}))?", lambda m: f"{m.group(1)} {m.group(2) or ''} pounds", t)
    t = re.sub(r"\bper cent\b", "percent", t)
    # times said in words: "8:30 in the morning" == "8:30 am", "half past eight" == "8:30"
    t = re.sub(r"\b(?:in the morning|this morning|tomorrow morning)\b",
               lambda m: "tomorrow am" if m.group(0).startswith("tomorrow") else "am", t)
    t = re.sub(r"\b(?:in the (?:afternoon|evening)|at night)\b", "pm", t)
    t = re.sub(r"\bhalf past (\w+)", r"\1 30", t)
    t = re.sub(r"\bquarter past (\w+)", r"\1 15", t)
    t = re.sub(r"(\d+)\s?%", r"\1 percent", t)
    t = re.sub(r"\b(\d+)(st|nd|rd|th)\b", r"\1", t)            # 15th -> 15
    t = re.sub(r"\b([ap])\.\s?m\.?", r"\1m", t)                 # a.m. -> am
    t = re.sub(r"(\d)(am|pm)\b", r"\1 \2", t)
    t = re.sub(r"(\d):00\b", r"\1", t)                          # 10:00 -> 10
    t = re.sub(r"(\d):(\d\d)", r"\1 \2", t)
    t = re.sub(r"\bo'clock\b", "", t)
    t = re.sub(r"'s\b", "s", t)
    t = re.sub(r"n't\b", "nt", t)
    t = re.sub(r"'(ll|re|ve|m|d)\b", r"\1", t)
    t = re.sub(r"[^a-z0-9]+", " ", t)
    tokens = t.split()
    tokens = [_SPELLING.get(x, x) for x in tokens]
    tokens = " ".join(tokens).split()
    tokens = _a_scale(tokens)
    tokens = words_to_numbers(tokens)
    tokens = _repeated_digits(tokens)
    tokens = _money_words(tokens)
    tokens = join_digit_runs(tokens)
    return " ".join(tokens)


def _a_scale(tokens: list[str]) -> list[str]:
    """"a hundred and eighty-nine" == "one hundred and eighty-nine"."""
    return ["one" if t == "a" and i + 1 < len(tokens) and tokens[i + 1] in SCALES else t
            for i, t in enumerate(tokens)]


def _repeated_digits(tokens: list[str]) -> list[str]:
    """ "double 5" -> "55", "triple 7" -> "777" (digits read out, UK style)."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t in _REPEAT and i + 1 < len(tokens) and tokens[i + 1].isdigit() and len(tokens[i + 1]) == 1:
            out.append(tokens[i + 1] * _REPEAT[t])
            i += 2
            continue
        out.append(t)
        i += 1
    return out


def _money_words(tokens: list[str]) -> list[str]:
    """"86 dollars and 40 cents" -> "86 40 dollars", the form "$86.40" normalizes to."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t.isdigit() and i + 1 < len(tokens) and tokens[i + 1] in ("dollar", "dollars"):
            j = i + 2
            if j < len(tokens) and tokens[j] == "and":
                j += 1
            if j + 1 < len(tokens) and tokens[j].isdigit() and tokens[j + 1] in ("cent", "cents"):
                out += [t, tokens[j], "dollars"]
                i = j + 2
                continue
            out += [t, "dollars"]
            i += 2
            continue
        out.append(t)
        i += 1
    return out


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit distance in words, reference length) after `normalize`."""
    ref = normalize(reference).split()
    hyp = normalize(hypothesis).split()
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1], len(ref)


def wer(reference: str, hypothesis: str) -> float:
    errors, n = word_errors(reference, hypothesis)
    return errors / max(1, n)


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())
