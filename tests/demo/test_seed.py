"""The demo world: valid settings, E.164 numbers, deterministic, committed CSVs in sync."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import phonenumbers

from cti.config import Settings
from cti.demo import seed
from cti.phone import to_e164
from cti.routing.expr import compile_expr

DEMO_DIR = Path(seed.__file__).parent


def _valid_e164(n: str) -> bool:
    p = phonenumbers.parse(n, None)
    return n.startswith("+") and phonenumbers.is_valid_number(p) and phonenumbers.format_number(
        p, phonenumbers.PhoneNumberFormat.E164) == n


def test_demo_settings_validate() -> None:
    s = Settings.model_validate(seed.demo_settings_dict())
    assert (s.site.tenant, s.site.default_region, s.site.timezone) == ("demo", "FR", "Europe/Paris")
    assert [p.type for p in s.providers] == ["simulator"] and s.providers[0].name == "sim"
    assert 3 <= len(s.queues) <= 4
    assert {a.team for a in s.agents} == set(seed.TEAMS)
    assert s.agents[0].id == "alice"  # the demo banner opens the first agent's panel
    callers = [a for a in s.agents if a.skills]
    assert len(callers) == 12 and Counter(a.team for a in callers) == {"support": 5, "sales": 4, "billing": 3}
    supervisors = [a for a in s.agents if a.monitor_endpoint]
    assert {a.id for a in supervisors} == {"nadia", "olivier", "paula", "sam"}
    assert all(a.endpoints == {"sim": f"sim/{a.id}"} for a in s.agents)


def test_demo_tokens_are_fixed() -> None:
    tokens = {t.token: t for t in Settings.model_validate(seed.demo_settings_dict()).auth.tokens}
    assert tokens["demo-admin"].role == "admin"
    assert tokens["demo-supervisor"].role == "supervisor"
    assert set(tokens["demo-supervisor"].teams) == set(seed.TEAMS)
    for agent in seed.agent_ids():
        assert tokens[f"demo-agent-{agent}"].user == agent and tokens[f"demo-agent-{agent}"].role == "agent"


def test_every_number_is_valid_e164_and_unique() -> None:
    world = seed.generate_world()
    numbers = [c[k] for c in world.contacts for k in ("phone_e164", "mobile_e164") if c[k]]
    numbers += [a["phone_e164"] for a in world.accounts]
    assert all(_valid_e164(n) for n in numbers)
    assert len(numbers) == len(set(numbers))
    d = seed.demo_settings_dict()
    for q in d["queues"]:
        assert any(_valid_e164(n) for n in q["numbers"]), q["name"]
    assert set(d["providers"][0]["customer_numbers"]) == set(numbers)
    assert seed.DEMO_CUSTOMER in numbers


def test_raw_phones_come_in_assorted_formats_that_parse_to_their_e164() -> None:
    world = seed.generate_world()
    styles = set()
    for c in world.contacts:
        for raw, e164 in ((c["phone"], c["phone_e164"]), (c["mobile"], c["mobile_e164"])):
            if raw:
                assert to_e164(raw, "FR") == e164
                styles.add("0033" if raw.startswith("0033") else "dots" if "." in raw
                           else "+33 " if raw.startswith("+33 ") else "+33" if raw.startswith("+")
                           else "spaces" if " " in raw else "plain")
    assert styles == {"0033", "dots", "+33 ", "+33", "spaces", "plain"}


def test_world_shape() -> None:
    world = seed.generate_world()
    assert len(world.accounts) == 50 and len(world.contacts) == 200
    assert len({c["id"] for c in world.contacts}) == 200
    assert len({c["email"] for c in world.contacts}) == 200
    accounts = {a["id"]: a for a in world.accounts}
    assert all(c["account_id"] in accounts and c["owner"] == accounts[c["account_id"]]["owner"]
               for c in world.contacts)
    assert {a["owner"] for a in world.accounts} <= set(seed.agent_ids())
    roles = Counter(c["role"] for c in world.contacts)
    assert roles["CEO"] >= 5 and roles["CFO"] >= 5
    tiers = Counter(a["tier"] for a in world.accounts)
    assert tiers["gold"] >= 3 and tiers["silver"] >= 5 and tiers["bronze"] >= 5, tiers
    assert any(c["first_name"] in ("James", "Emily", "Oliver", "Grace") for c in world.contacts)
    assert any("é" in c["last_name"] or "é" in c["first_name"] for c in world.contacts)


def test_deterministic_and_seed_dependent() -> None:
    assert seed.generate_world() == seed.generate_world()
    assert seed.demo_settings_dict() == seed.demo_settings_dict()
    assert seed.generate_world(1) != seed.generate_world(2)


def test_committed_csvs_match_the_generator(tmp_path: Path) -> None:
    contacts, accounts = seed.write_csvs(tmp_path)
    assert contacts.read_text() == (DEMO_DIR / "contacts.csv").read_text(), "run python -m cti.demo.seed"
    assert accounts.read_text() == (DEMO_DIR / "accounts.csv").read_text(), "run python -m cti.demo.seed"
    with (DEMO_DIR / "contacts.csv").open() as f:
        assert next(csv.reader(f)) == list(seed.CONTACT_COLUMNS) == [
            "id", "first_name", "last_name", "email", "phone", "mobile", "role", "account_id", "account_name",
            "owner"]
    with (DEMO_DIR / "accounts.csv").open() as f:
        assert next(csv.reader(f)) == ["id", "name", "phone", "owner", "won_amount_24m", "tier"]


def test_every_queue_has_agents_and_rules_match_some_customers() -> None:
    d = seed.demo_settings_dict()
    for q in d["queues"]:
        req = compile_expr(q["requires"], default=0)
        able = [a["id"] for a in d["agents"] if req(a["skills"])]
        assert len(able) >= 3, (q["name"], able)
        assert not {"nadia", "olivier", "paula", "sam"} & set(able)
        if q.get("overflow", {}).get("widen"):
            assert len([a for a in d["agents"] if compile_expr(q["overflow"]["widen"], default=0)(a["skills"])]) \
                >= len(able)
    world = seed.generate_world()
    accounts = {a["id"]: a for a in world.accounts}
    vip = compile_expr(d["priority_rules"][0]["when"], default=None)
    hits = [c for c in world.contacts
            if vip({"contact.role": c["role"], "account.won_amount_24m": accounts[c["account_id"]]["won_amount_24m"]})]
    assert 10 <= len(hits) < 120


async def test_the_demo_simulator_runs_on_the_demo_settings() -> None:
    """Ten simulated minutes of the demo PBX: calls into every queue, mostly from known customers."""
    from cti.adapters.base import AdapterContext, adapter_class
    from cti.clock import ManualClock

    s = Settings.model_validate(seed.demo_settings_dict(provider_options={"auto_hangup": True}))
    clock = ManualClock()
    queue_numbers = {n: q.name for q in s.queues for n in q.numbers}
    endpoints = {ep: a.id for a in s.agents for ep in a.endpoints.values()}
    sim = adapter_class("simulator")(s.providers[0], AdapterContext(
        tenant=s.site.tenant, clock=clock, agent_endpoints=endpoints, queue_numbers=queue_numbers))
    await sim.start()
    for _ in range(60):
        await clock.advance(10)
    await sim.stop()
    events = [e async for e in sim.events()]
    created = [e for e in events if str(e.kind) == "created"]
    inbound = [e for e in created if str(e.direction) == "inbound"]
    assert {e.queue for e in inbound} == {q.name for q in s.queues}
    known = set(s.providers[0].options["customer_numbers"])
    assert sum(e.from_number in known for e in inbound) > 0.7 * len(inbound)
    assert all(e.tenant == "demo" for e in events)
    outbound = [e for e in created if str(e.direction) == "outbound"]
    assert all(e.agent in seed.agent_ids() for e in outbound)


def test_the_banner_prints_only_tokens_that_exist(capsys, tmp_path) -> None:
    # supervisors are listed among the agents: the banner offered demo-agent-<supervisor>
    # tokens that were refused with a 401
    from cti.demo.run import demo_settings, print_banner

    settings = demo_settings(str(tmp_path / "cti.db"), str(tmp_path), 8080, "127.0.0.1", False)
    print_banner(settings)
    line = next(x for x in capsys.readouterr().out.splitlines() if "tokens" in x)
    printed = {t.strip() for t in line.split(":", 1)[1].split(",")}
    assert printed == {t["token"] for t in seed.demo_tokens()}
    assert "demo-supervisor-support" in printed
