"""Card numbers, security codes and e-mails never survive redaction."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cti.transcribe.redact import CARD, CVV, EMAIL, luhn_ok, redact_segments, redact_text
from cti.transcribe.textnorm import DIGIT_WORDS

WORD_OF = {v: k for k, v in DIGIT_WORDS.items() if k != "oh"}


def with_check_digit(body: str) -> str:
    for d in "0123456789":
        if luhn_ok(body + d):
            return body + d
    raise AssertionError("unreachable")


def test_luhn_known_values() -> None:
    assert luhn_ok("4111111111111111")
    assert luhn_ok("79927398713")
    assert not luhn_ok("4111111111111112")
    assert not luhn_ok("")


def test_written_card_number_in_groups_is_redacted() -> None:
    out, found = redact_text("Sure, it's 4111 1111 1111 1111, expiring in May.")
    assert "4111" not in out and CARD in out
    assert [f.kind for f in found] == ["card_number"]


def test_spoken_card_number_is_redacted() -> None:
    spoken = " ".join(WORD_OF[int(d)] for d in "5555555555554444")
    out, _ = redact_text(f"okay the number is {spoken} thanks")
    assert out == f"okay the number is {CARD} thanks"


def test_mixed_digits_words_and_double_are_redacted() -> None:
    out, _ = redact_text("card 4111 one one one one double one 1111 1111 please")
    assert CARD in out and "1111" not in out


def test_order_numbers_and_phone_numbers_are_kept() -> None:
    text = "Order 58213, account 4719203, call 555-0142 or 0612345678."
    assert redact_text(text)[0] == text


def test_long_number_that_fails_luhn_is_kept_without_card_cue() -> None:
    text = "The tracking reference is 4111 1111 1111 1112."
    assert redact_text(text)[0] == text


def test_card_cue_redacts_a_misheard_number() -> None:
    # one digit wrong (ASR), Luhn fails, but it follows "card number"
    out, _ = redact_text("my card number is 4111 1111 1111 1112")
    assert "1112" not in out


def test_security_code_after_cue_is_redacted() -> None:
    for text in ("The security code is 737.", "CVV: seven three seven", "and the CVC is 1234 okay",
                 "the three digit code on the back is four two nine"):
        out, found = redact_text(text)
        assert CVV in out, text
        assert not any(c.isdigit() for c in out), out
        assert found[0].kind == "cvv"


def test_three_digits_without_cue_are_kept() -> None:
    assert redact_text("We have 737 units in stock.")[0] == "We have 737 units in stock."


def test_emails_only_when_enabled() -> None:
    text = "Send it to anna.smith@example.com or anna dot smith at example dot com."
    assert redact_text(text)[0] == text
    out, found = redact_text(text, emails=True)
    assert out.count(EMAIL) == 2 and "example" not in out
    assert {f.kind for f in found} == {"email"}


def test_number_split_across_segments_is_redacted_in_both() -> None:
    out, kinds = redact_segments(["my card is four one one one one one one one", "one one one one one one one one"])
    assert kinds == ["card_number"]
    assert all(CARD in t for t in out)
    assert "one" not in out[1]


@settings(max_examples=150, deadline=None)
@given(
    body=st.text(alphabet="0123456789", min_size=12, max_size=18),
    spoken=st.booleans(),
    group=st.sampled_from([0, 4, 3]),
    prefix=st.sampled_from(["", "it's ", "the number is ", "uh "]),
)
def test_any_luhn_valid_number_never_survives(body: str, spoken: bool, group: int, prefix: str) -> None:
    number = with_check_digit(body)
    if spoken:
        shown = " ".join(WORD_OF[int(d)] for d in number)
    elif group:
        shown = " ".join(number[i: i + group] for i in range(0, len(number), group))
    else:
        shown = number
    out, _ = redact_text(f"Okay, {prefix}{shown}. Thank you.")
    digits = "".join(c for c in out if c.isdigit())
    assert number not in digits
    assert CARD in out


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(codec="ascii"), max_size=200))
def test_redaction_never_crashes_and_is_idempotent(text: str) -> None:
    once, _ = redact_text(text, emails=True)
    assert redact_text(once, emails=True)[0] == once
