"""Queues, skills, strategies, rules, scripts and dispositions change at run time without a vendor:
the admin API applies a change whole or refuses it whole; calls in progress keep going; SIGHUP reloads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.conftest import AppClient
from tests.integration.test_api import answered_call_for_alice
from tests.servers import free_port, wait_port


async def test_admin_changes_routing_at_run_time_and_calls_in_progress_survive(api: AppClient) -> None:
    call_id = await answered_call_for_alice(api)
    s, cfg, _ = await api.call("GET", "/api/v1/admin/routing", "demo-admin")
    assert s == 200 and {q["name"] for q in cfg["queues"]} >= {"support", "sales"}
    assert (await api.call("GET", "/api/v1/admin/routing", "demo-supervisor"))[0] == 404

    support = next(q for q in cfg["queues"] if q["name"] == "support")
    support["strategy"] = "round_robin"
    support["script"] = "Hello {contact.first_name}, new script"
    s, body, _ = await api.call("PUT", "/api/v1/admin/routing", "demo-admin",
                                {"queues": cfg["queues"], "dispositions": [*cfg["dispositions"], "callback_later"]})
    assert s == 200, body
    s, disp, _ = await api.call("GET", "/api/v1/dispositions", "demo-agent-alice")
    assert "callback_later" in disp
    s, queues, _ = await api.call("GET", "/api/v1/queues", "demo-admin")
    assert next(q for q in queues if q["name"] == "support")["strategy"] == "round_robin"
    # the call answered before the change is still up and controllable
    s, call, _ = await api.call("GET", f"/api/v1/calls/{call_id}", "demo-agent-alice")
    assert call["state"] == "answered"
    assert (await api.call("POST", f"/api/v1/calls/{call_id}/hold", "demo-agent-alice"))[0] == 200


async def test_a_bad_change_is_refused_whole_and_the_running_config_stays(api: AppClient) -> None:
    s, cfg, _ = await api.call("GET", "/api/v1/admin/routing", "demo-admin")
    import copy

    queues = copy.deepcopy(cfg["queues"])
    queues[0]["strategy"] = "round_robin"           # valid on its own...
    queues[1]["requires"] = "language_fr >= "       # ...but this one does not parse
    queues[2]["strategy"] = "coin_toss"             # and this strategy does not exist
    s, body, _ = await api.call("PUT", "/api/v1/admin/routing", "demo-admin", {"queues": queues})
    assert s == 422
    msg = body["error"]["message"]
    assert queues[1]["name"] in msg and queues[2]["name"] in msg and "coin_toss" in msg
    s, after, _ = await api.call("GET", "/api/v1/admin/routing", "demo-admin")
    assert after == cfg  # nothing of the refused change was applied
    s, body, _ = await api.call("PUT", "/api/v1/admin/routing", "demo-admin", {"server": {"port": 1}})
    assert s == 422 and body["error"]["field"] == "server"


def test_sighup_reloads_the_config_file_and_refuses_a_bad_one(tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "cti.toml"
    base = f"""
[site]
tenant = "t"
[server]
port = {port}
[store]
url = "sqlite+aiosqlite:///{tmp_path}/cti.db"
[[auth.tokens]]
user = "root"
role = "admin"
token_env = "T_ADMIN"
[[agents]]
id = "alice"
name = "Alice"
team = "support"
skills = {{ language_fr = 8 }}
[[queues]]
name = "support"
numbers = ["100"]
requires = "language_fr >= 5"
"""
    cfg.write_text(base)
    env = {**os.environ, "T_ADMIN": "admin-token"}
    proc = subprocess.Popen([sys.executable, "-m", "cti.cli", "serve", "--config", str(cfg)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_port(port, timeout=60)
        import json
        import urllib.request

        def queues() -> list[str]:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/admin/routing",
                                         headers={"Authorization": "Bearer admin-token"})
            with urllib.request.urlopen(req, timeout=5) as r:
                return [q["name"] for q in json.loads(r.read())["queues"]]

        assert queues() == ["support"]
        cfg.write_text(base + '\n[[queues]]\nname = "sales"\nnumbers = ["200"]\nrequires = "language_fr >= 1"\n')
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while queues() != ["support", "sales"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert queues() == ["support", "sales"]
        cfg.write_text(base + '\n[[queues]]\nname = "bad"\nrequires = "klingon >= 1"\n')
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert queues() == ["support", "sales"]  # refused whole; still running
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert "reload_refused" in out and "klingon" in out
