"""Every metric on a history small enough to compute by hand (see history.py and docs/metrics.md)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cti.stats.service import run_report

NOW = datetime(2026, 3, 5, tzinfo=UTC)
RANGE = {"from": "2026-03-02", "to": "2026-03-03"}


async def report(engine, settings, name, **params):
    _meta, rows = await run_report(name, {**RANGE, **params}, engine, settings, NOW)
    return rows


async def test_queue_service_level_excludes_short_abandons(hand_db, settings):
    rows = {r["queue"]: r for r in await report(hand_db, settings, "queues")}
    s = rows["support"]
    # c04 abandoned; c09's caller had asked for a callback (cb1): kept for callback, not abandoned
    assert (s["offered"], s["answered"], s["short_abandoned"], s["abandoned"]) == (6, 3, 1, 1)
    assert s["kept_for_callback"] == 1
    # c01 (10 s) and c05 (exactly 20 s) are within 20 s; c02 (25 s) is not; denominator 6 - 1 short
    assert s["answered_in_sl"] == 2
    assert s["service_level"] == 0.4
    assert s["abandon_rate"] == 0.2
    assert s["asa_s"] == pytest.approx((10 + 25 + 20) / 3, abs=1e-3)
    assert s["longest_wait_s"] == 40
    assert (s["callbacks_requested"], s["callbacks_done"]) == (2, 1)
    # sales: its only call abandoned after 5 s < its 10 s threshold: short, so no service level at all
    sales = rows["sales"]
    assert (sales["offered"], sales["short_abandoned"], sales["abandoned"]) == (1, 1, 0)
    assert sales["service_level"] is None
    total = rows[None]
    assert (total["offered"], total["answered"], total["short_abandoned"], total["service_level"]) == (7, 3, 2, 0.4)


async def test_wait_equal_to_short_threshold_is_a_real_abandon(hand_db, settings):
    rows = {r["queue"]: r for r in await report(hand_db, settings, "queues", **{"from": "2026-03-03"})}
    s = rows["support"]
    # c09 waited exactly 5 s: not short, so it counts in the service level (as a failure); its caller
    # had asked for a callback, so it is kept for callback rather than abandoned
    assert (s["offered"], s["short_abandoned"], s["kept_for_callback"], s["service_level"]) == (1, 0, 1, 0.0)
    assert s["abandoned"] == 0


async def test_agent_metrics(hand_db, settings):
    rows = {r["agent"]: r for r in await report(hand_db, settings, "agents")}
    a = rows["alice"]
    assert (a["handled_inbound"], a["handled_outbound"], a["missed"]) == (2, 1, 0)
    assert a["talk_s"] == 350 and a["hold_s"] == 20
    assert a["talk_mean_s"] == pytest.approx(350 / 3, abs=1e-3)
    assert a["talk_median_s"] == 100
    # state log: available 1 h, on_call 30 min, wrap_up 10 min, away 20 min, then offline
    assert a["wrap_up_s"] == 600
    assert a["logged_in_s"] == 7200
    assert a["occupancy"] == pytest.approx(2400 / 6000)
    assert a["aht_s"] == pytest.approx((350 + 20 + 600) / 3, abs=1e-3)
    assert a["states"]["offline"] > 0
    b = rows["bob"]
    # rung for c02 (alice answered) and c04 (abandoned): two misses
    assert (b["handled_inbound"], b["missed"], b["talk_median_s"]) == (1, 2, 60)
    c = rows["carol"]
    assert (c["handled"], c["outbound_attempts"], c["missed"], c["talk_mean_s"], c["occupancy"]) == (
        0, 1, 1, None, None)


async def test_typology_uses_site_time_zone(hand_db, settings):
    cells = {(r["weekday"], r["hour"]): r for r in await report(hand_db, settings, "typology")}
    assert len(cells) == 168
    # 09:xx UTC on Monday is 10 h in Paris
    assert {k: cells[(0, 10)][k] for k in ("calls", "answered", "not_answered", "inbound")} == {
        "calls": 3, "answered": 2, "not_answered": 1, "inbound": 3}
    assert (cells[(0, 11)]["answered"], cells[(0, 11)]["not_answered"]) == (1, 2)
    assert (cells[(0, 12)]["outbound"], cells[(0, 12)]["answered"]) == (2, 1)
    assert (cells[(1, 9)]["not_answered"], cells[(1, 15)]["not_answered"]) == (1, 1)
    assert sum(c["calls"] for c in cells.values()) == 10


async def test_daily_series(hand_db, settings):
    rows = await report(hand_db, settings, "hourly", bucket="day")
    assert [r["bucket"][:10] for r in rows] == ["2026-03-02", "2026-03-03"]
    d1, d2 = rows
    assert (d1["calls"], d1["answered"], d1["inbound"], d1["outbound"], d1["queued"]) == (8, 4, 6, 2, 6)
    assert d1["service_level"] == 0.5            # 2 / (6 - 2 short)
    assert (d2["calls"], d2["answered"], d2["service_level"]) == (2, 0, 0.0)
    hours = await report(hand_db, settings, "hourly", bucket="hour")
    assert len(hours) == 48 and sum(r["calls"] for r in hours) == 10


async def test_calls_to_call_back_with_crm_match(hand_db, settings):
    rows = await report(hand_db, settings, "calls-list")
    by = {r["call_id"]: r for r in rows}
    assert set(by) == {"c03", "c04", "c06", "c09", "c10"}
    assert by["c04"]["contact"]["name"] == "Jean Dupont"
    assert by["c04"]["contact"]["account_name"] == "Acme"
    assert by["c04"]["called_back"] is True      # c07 reached Jean afterwards
    assert by["c09"]["called_back"] is False
    assert by["c03"]["short_abandon"] is True and by["c09"]["short_abandon"] is False
    pending = await report(hand_db, settings, "calls-list", pending="true", kind="abandoned")
    assert {r["call_id"] for r in pending} == {"c03", "c06", "c09"}


async def test_customer_indicators_and_at_risk(hand_db, settings):
    rows = {r["id"]: r for r in await report(hand_db, settings, "customers")}
    jean = rows["ct1"]
    assert (jean["calls"], jean["answered"], jean["repeat_calls"], jean["escalated"], jean["abandoned"],
            jean["negative_sentiment"], jean["unresolved"]) == (3, 2, 1, 1, 1, 1, 0)
    assert jean["last_contact_at"].startswith("2026-03-02T11:00")
    assert rows["ct2"]["unresolved"] == 1
    risk = await report(hand_db, settings, "at-risk")
    assert [(r["account_id"], r["risk_score"]) for r in risk] == [("acc1", 9), ("acc2", 2)]
    assert [x["reason"] for x in risk[0]["reasons"]] == ["escalated", "negative_sentiment", "repeat_calls",
                                                         "abandoned"]
    one = await report(hand_db, settings, "customers", contact="ct1")
    assert [h["call_id"] for h in one[0]["history"]] == ["c07", "c04", "c02"]
    acc = await report(hand_db, settings, "customers", group="account")
    assert {r["id"]: r["calls"] for r in acc} == {"acc1": 3, "acc2": 1}


async def test_contacted_since_and_not_since(hand_db, settings):
    spoke = await report(hand_db, settings, "contacted", since="2026-03-02")
    assert {r["contact_id"] for r in spoke} == {"ct1", "ct2"}
    assert {r["contact_id"]: r["calls_since"] for r in spoke} == {"ct1": 2, "ct2": 1}
    silent = await report(hand_db, settings, "contacted", not_since="2026-03-02")
    assert [r["contact_id"] for r in silent] == ["ct3"]
    later = await report(hand_db, settings, "contacted", not_since="2026-03-03")
    assert {r["contact_id"] for r in later} == {"ct1", "ct2", "ct3"}


async def test_filters_by_queue_agent_and_direction(hand_db, settings):
    rows = {r["agent"]: r for r in await report(hand_db, settings, "agents", queue="support")}
    assert (rows["alice"]["handled_inbound"], rows["alice"]["handled_outbound"], rows["bob"]["missed"]) == (2, 0, 2)
    rows = {r["agent"]: r for r in await report(hand_db, settings, "agents", direction="outbound")}
    assert (rows["alice"]["handled"], rows["carol"]["outbound_attempts"], rows["bob"]["missed"]) == (1, 1, 0)
    # queue figures under an agent filter: the calls that agent handled (unanswered ones belong to nobody)
    support = next(r for r in await report(hand_db, settings, "queues", agent="alice") if r["queue"] == "support")
    assert (support["offered"], support["answered"], support["answered_in_sl"]) == (2, 2, 1)
    series = await report(hand_db, settings, "hourly", team="A")
    assert sum(r["answered"] for r in series) == 4 and sum(r["missed"] for r in series) == 2
    cells = await report(hand_db, settings, "typology", direction="outbound")
    assert sum(c["calls"] for c in cells) == 2


async def test_wrap_up_under_a_queue_filter_is_that_queues_only(hand_db, settings):
    """After-call work belongs to the call it follows: alice's wrap-up (09:30-09:40) follows c02
    (support, ended 09:13:45), so it is support's, and not in her outbound or sales figures."""
    support = {r["agent"]: r for r in await report(hand_db, settings, "agents", queue="support")}["alice"]
    assert support["wrap_up_s"] == 600
    assert support["aht_s"] == pytest.approx((300 + 20 + 600) / 2, abs=1e-3)
    outbound = {r["agent"]: r for r in await report(hand_db, settings, "agents", direction="outbound")}["alice"]
    assert outbound["wrap_up_s"] == 0
    assert outbound["aht_s"] == 50
    assert outbound["states"].get("on_call") == 1800     # other states are not filtered
    sales = {r["agent"]: r for r in await report(hand_db, settings, "agents", queue="sales")}["alice"]
    assert (sales["wrap_up_s"], sales["aht_s"]) == (0, None)
