"""Summary rules on our own sentences (not the shared calls' wording)."""

from __future__ import annotations

from cti.transcribe.summarize import (
    Sentence,
    detect_sentiment,
    extract_key_facts,
    find_due,
    sentences_of,
    summarize,
)


def turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"speaker": s, "text": t} for s, t in pairs]


def test_due_expressions() -> None:
    assert find_due("I'll send the contract by Monday.") == "Monday"
    assert find_due("We will ship it within 3 business days") == "within 3 business days"
    assert find_due("I'll ring you back tomorrow morning at 9:15 am") == "tomorrow morning at 9:15 am"
    assert find_due("expect it before the end of the month") == "the end of the month"
    assert find_due("I'll do it next Wednesday evening.") == "next Wednesday evening"
    assert find_due("Thanks for your patience.") is None


def test_agent_commitment_with_due_is_an_agent_action_item() -> None:
    s = summarize(turns(
        ("customer", "The invoice you sent has the wrong VAT number."),
        ("agent", "Apologies. I'm going to reissue the invoice with the right number by Wednesday."),
        ("customer", "Thank you."),
    ))
    assert len(s.action_items) == 1
    item = s.action_items[0]
    assert item.owner == "agent" and item.due == "Wednesday"
    assert item.text.lower().startswith("reissue the invoice")


def test_customer_commitment_is_owned_by_the_customer() -> None:
    s = summarize(turns(
        ("agent", "We need a photo of the damaged parcel."),
        ("customer", "No problem, I will upload the pictures tonight."),
    ))
    assert [(a.owner, a.due) for a in s.action_items] == [("customer", "tonight")]
    assert "upload the pictures" in s.action_items[0].text.lower()


def test_accepted_request_becomes_an_item_for_who_accepted() -> None:
    s = summarize(turns(
        ("customer", "Could you cancel the extra seat on my plan before the next renewal?"),
        ("agent", "Certainly."),
    ))
    assert [a.owner for a in s.action_items] == ["agent"]
    assert "extra seat" in s.action_items[0].text


def test_request_done_during_the_call_is_not_an_item() -> None:
    s = summarize(turns(
        ("agent", "Please unplug the modem for thirty seconds."),
        ("customer", "Okay, done, it's back."),
    ))
    assert s.action_items == []


def test_statements_about_feelings_are_not_commitments() -> None:
    s = summarize(turns(
        ("customer", "I'll be honest, I'll need to think about it."),
        ("agent", "I'm calling about your renewal. I'm sorry for the wait."),
    ))
    assert s.action_items == []


def test_two_commitments_in_one_sentence_are_two_items() -> None:
    s = summarize(turns(("agent", "I'll open a ticket now, and I'll send you the reference by email today.")))
    assert [a.due for a in s.action_items] == ["now", "today"]


def test_key_facts_identifiers_money_dates_quantities() -> None:
    sents = sentences_of(turns(
        ("agent", "What is your booking reference?"),
        ("customer", "It's 77120."),
        ("agent", "I see 3 tickets for €240 on Saturday, June 7th at 7:30 pm, with a 15% discount."),
        ("customer", "And invoice number INV-20931 was charged twice."),
    ))
    facts = extract_key_facts(sents)
    assert "booking reference 77120" in facts
    assert "€240" in facts
    assert "3 tickets" in facts
    assert any("June 7th at 7:30 pm" in f for f in facts)
    assert any(f.startswith("15%") for f in facts)
    assert "invoice INV-20931" in facts


def test_dispositions() -> None:
    def disp(*pairs: tuple[str, str]) -> str:
        return summarize(turns(*pairs)).disposition

    assert disp(("customer", "Please cancel my membership, I'm moving abroad."),
                ("agent", "Done, the cancellation is effective today.")) == "cancelled"
    assert disp(("customer", "This is the third time. I want to speak to a manager."),
                ("agent", "I'm transferring you to my supervisor.")) == "escalated"
    assert disp(("agent", "The premium bundle is 30 dollars a month."),
                ("customer", "Sounds good, sign me up.")) == "sale"
    assert disp(("agent", "Would you like the extended warranty?"),
                ("customer", "No thanks, not interested.")) == "no_sale"
    assert disp(("customer", "I need to check with my partner first."),
                ("agent", "Of course, I'll call you back on Thursday to discuss it.")) == "follow_up"
    assert disp(("customer", "The app crashed on login."),
                ("agent", "I reset your session, can you try again?"),
                ("customer", "It works now, thanks.")) == "resolved"


def test_sentiment() -> None:
    def sent(*texts: str) -> str:
        return detect_sentiment([Sentence("customer", t, i) for i, t in enumerate(texts)])

    assert sent("This is unacceptable, I'm really frustrated.", "It's still broken.") == "negative"
    assert sent("That's brilliant, I really appreciate it.") == "positive"
    assert sent("Okay.", "My postcode changed.") == "neutral"
    assert sent("I'm not happy with this at all.", "It's late again.") == "negative"


def test_summary_of_nothing_is_empty_and_neutral() -> None:
    s = summarize([])
    assert s.action_items == [] and s.key_points == [] and s.sentiment == "neutral"


def test_key_points_pick_informative_sentences() -> None:
    s = summarize(turns(
        ("agent", "Hello."),
        ("customer", "My washing machine leaks water from the door seal after every cycle."),
        ("agent", "I see the model is under warranty until next March."),
        ("customer", "Okay."),
        ("agent", "A technician will replace the door seal free of charge on Friday."),
        ("customer", "Right."),
        ("agent", "Is there anything else?"),
    ))
    assert 1 <= len(s.key_points) <= 3
    assert all(len(p.split()) >= 4 for p in s.key_points)
    assert any("seal" in p for p in s.key_points)


def test_requests_after_a_short_lead_in_are_found() -> None:
    s = summarize(turns(
        ("agent", "Right, thanks, could you send us the serial number from the label?"),
        ("customer", "Sure."),
        ("agent", "Okay, please fill in the claim form online."),
        ("customer", "I'm on it."),
    ))
    assert [a.owner for a in s.action_items] == ["customer", "customer"]
    assert "serial number" in s.action_items[0].text
    assert s.action_items[1].text.lower().startswith("fill in the claim form")


def test_amount_said_in_two_parts_is_one_fact() -> None:
    sents = sentences_of(turns(
        ("agent", "Your last bill was $112 and $0.75, and a late fee of 9 dollars and 5 cents."),
        ("customer", "Friday at 415 works for me."),
    ))
    facts = extract_key_facts(sents)
    assert "$112.75" in facts
    assert "$9.05" in facts
    assert not any("works" in f for f in facts)  # a time said without a colon is not a count
