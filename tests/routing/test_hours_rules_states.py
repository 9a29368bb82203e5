"""Business hours, priority rules and the agent state table."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from cti.config import PriorityRuleSettings
from cti.model import AgentState, Contact
from cti.routing.hours import HoursError, is_open, parse_hours
from cti.routing.rules import apply_rules, compile_rules, contact_env
from cti.routing.states import InvalidTransition, transition

PARIS = ZoneInfo("Europe/Paris")
S = AgentState


def _at(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=PARIS)


def test_office_hours_weekdays():
    h = parse_hours("Mon-Fri 08:30-18:00")
    assert h.is_open(_at("2026-01-05T08:30"))       # Monday
    assert not h.is_open(_at("2026-01-05T08:29"))
    assert not h.is_open(_at("2026-01-05T18:00"))
    assert not h.is_open(_at("2026-01-10T10:00"))   # Saturday


def test_several_ranges_and_lunch_break():
    h = parse_hours("Mon-Fri 08:30-12:30,13:30-18:00; Sat 09:00-12:00")
    assert not h.is_open(_at("2026-01-06T13:00"))
    assert h.is_open(_at("2026-01-06T13:30"))
    assert h.is_open(_at("2026-01-10T11:59"))


def test_overnight_range_spills_into_next_day():
    h = parse_hours("Fri 22:00-06:00")
    assert h.is_open(_at("2026-01-09T23:00"))
    assert h.is_open(_at("2026-01-10T05:59"))       # Saturday morning
    assert not h.is_open(_at("2026-01-10T06:00"))


def test_holiday_closes_the_whole_day_in_the_site_zone():
    h = parse_hours("Mon-Sun 00:00-24:00", ["2026-12-25"])
    assert not h.is_open(_at("2026-12-25T12:00"))
    # 23:30 UTC on the 24th is already the 25th in Paris
    ts = datetime.fromisoformat("2026-12-24T23:30+00:00").timestamp()
    assert not is_open(h, ts, PARIS)
    assert is_open(parse_hours(None), ts, PARIS)


@pytest.mark.parametrize(("spec", "fragment"), [
    ("Mon-Fri", "expected '<days> HH:MM-HH:MM'"),
    ("Mon-Fry 08:00-10:00", "unknown day"),
    ("Mon 8h-10h", "not HH:MM-HH:MM"),
    ("Mon 25:00-26:00", "out of range"),
])
def test_bad_hours_name_the_part(spec, fragment):
    with pytest.raises(HoursError, match=fragment):
        parse_hours(spec)


def test_bad_holiday():
    with pytest.raises(HoursError, match="not an ISO date"):
        parse_hours(None, ["25/12/2026"])


RULES = [PriorityRuleSettings(name="vip", when="account.won_amount_24m >= 50000 or contact.role in ['CEO', 'CFO']",
                              boost=50),
         PriorityRuleSettings(name="at_risk", when="account.churn_risk == 'high'", boost=20)]


def test_apply_rules_returns_boost_and_reasons():
    assert apply_rules(RULES, {"account": {"won_amount_24m": 75000, "churn_risk": "high"}}) == (70, ["vip", "at_risk"])
    assert apply_rules(RULES, {"contact.role": "CEO"}) == (50, ["vip"])
    assert apply_rules(RULES, {}) == (0, [])
    assert apply_rules(compile_rules(RULES), None) == (0, [])


def test_contact_env_from_a_crm_contact():
    c = Contact(id="c1", name="Zoe", role="CFO", account_id="a1", owner="alice",
                fields={"account": {"won_amount_24m": 10}, "segment": "smb"})
    env = contact_env(c)
    assert env["contact.role"] == "CFO" and env["account.won_amount_24m"] == 10
    assert env["contact.segment"] == "smb"
    assert apply_rules(RULES, env) == (50, ["vip"])


def test_transition_table():
    assert transition(S.OFFLINE, "available") is S.AVAILABLE
    assert transition(S.AVAILABLE, S.RINGING) is S.RINGING
    assert transition(S.RINGING, S.ON_CALL) is S.ON_CALL
    assert transition(S.ON_CALL, S.WRAP_UP) is S.WRAP_UP
    assert transition(S.WRAP_UP, S.AVAILABLE) is S.AVAILABLE
    assert transition(S.AVAILABLE, S.AWAY, "lunch") is S.AWAY


@pytest.mark.parametrize(("cur", "tgt"), [(S.WRAP_UP, S.RINGING), (S.OFFLINE, S.ON_CALL), (S.AWAY, S.RINGING),
                                          (S.ON_CALL, S.OFFLINE), (S.OFFLINE, S.WRAP_UP)])
def test_invalid_transition_carries_the_current_state(cur, tgt):
    with pytest.raises(InvalidTransition) as info:
        transition(cur, tgt, "x")
    assert info.value.current is cur


def test_away_needs_a_reason_and_unknown_state_is_rejected():
    with pytest.raises(ValueError, match="reason"):
        transition(S.AVAILABLE, S.AWAY, None)
    with pytest.raises(ValueError, match="unknown agent state"):
        transition(S.AVAILABLE, "sleeping")
