"""validate_routing_config: every problem named with its queue; compile raises ConfigError."""

from __future__ import annotations

import pytest

from cti.config import ConfigError
from cti.routing.queues import compile_routing, resolve_queue, validate_routing_config
from tests.routing.helpers import settings


def test_the_example_configuration_is_valid():
    s = settings(queues=[{"name": "support", "numbers": ["+33170000100", "100"],
                          "requires": "fr >= 5 and (internet >= 3 or billing >= 3)", "strategy": "longest_idle",
                          "overflow": {"after_s": 60, "widen": "fr >= 3", "then": "voicemail"},
                          "hours": "Mon-Fri 08:30-18:00", "holidays": ["2026-12-25"]}],
                 rules=[{"name": "vip", "when": "account.won_amount_24m >= 50000 or contact.role in ['CEO', 'CFO']",
                         "boost": 50}])
    assert validate_routing_config(s) == []
    cfg = compile_routing(s)
    assert resolve_queue(cfg, queue=None, to_number="100") == "support"
    assert resolve_queue(cfg, queue="support", to_number=None) == "support"
    assert resolve_queue(cfg, queue=None, to_number="999") is None


def test_bad_input_is_listed_with_queue_and_problem():
    s = settings(queues=[
        {"name": "a", "requires": "fr >= "},
        {"name": "b", "requires": "klingon >= 3"},
        {"name": "c", "strategy": "random_walk"},
        {"name": "d", "overflow": {"after_s": 10, "then": "queue:nowhere"}},
        {"name": "e", "hours": "Mon-Fry 08:00-10:00", "numbers": ["100"]},
        {"name": "f", "numbers": ["100"], "overflow": {"after_s": 10, "then": "pigeon"}},
        {"name": "g", "overflow": {"after_s": 10, "widen": "fr >>= 2"}},
    ], rules=[{"name": "vip", "when": "account.x >= "}])
    errors = validate_routing_config(s)
    text = "\n".join(errors)
    assert "queue 'a': requires 'fr >= ' does not parse" in text
    assert "queue 'b': requires uses unknown skill 'klingon'" in text
    assert "queue 'c': unknown strategy 'random_walk'" in text
    assert "queue 'd': overflow.then names unknown queue 'nowhere'" in text
    assert "queue 'e': hours: unknown day" in text
    assert "queue 'f': number '100' also enters queue 'e'" in text
    assert "queue 'f': unknown overflow.then 'pigeon'" in text
    assert "queue 'g': overflow.widen 'fr >>= 2' does not parse" in text
    assert "priority rule 'vip': when 'account.x >= ' does not parse" in text
    with pytest.raises(ConfigError) as info:
        compile_routing(s)
    assert "klingon" in str(info.value)


def test_duplicate_queue_and_agent_names():
    s = settings(agents=[{"id": "x", "skills": {"fr": 1}}, {"id": "x", "skills": {"fr": 2}}],
                 queues=[{"name": "a"}, {"name": "a"}])
    errors = validate_routing_config(s)
    assert "agent 'x': defined twice" in errors and "queue 'a': defined twice" in errors


def test_unknown_skill_check_is_skipped_without_configured_agents():
    # agents may come from the database; without them any skill name is accepted
    assert validate_routing_config(settings(agents=[], queues=[{"name": "a", "requires": "zz >= 1"}])) == []
