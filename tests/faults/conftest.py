"""Helpers for the fault tests: the demo world with fast simulated traffic, pointed at
real Redis/PostgreSQL, run in-process (`start_app`) or as `cti serve` (`spawn_cti`).

Traffic: the simulator with short talk times and auto-answer; tests inject calls
(`inject_calls`) so they know how many to expect, random arrivals stay off unless asked.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.servers import RedisServer, free_port, wait_port

ROOT = Path(__file__).resolve().parents[2]

# a call takes about 1-2 s end to end: answered quickly, short talk, no hold/transfer
FAST_SIM: dict[str, Any] = {
    "arrival_rate_per_min": 0,
    "outbound_per_agent_per_hour": 0,
    "auto_answer": True,
    "auto_hangup": True,
    "answer_probability": 1.0,
    "answer_delay_s": [0.1, 0.3],
    "talk_time_s": [0.5, 1.5],
    "hold_probability": 0.0,
    "transfer_probability": 0.0,
    "patience_s": 60.0,
    "record": False,
    "seed": 7,
}


def fault_settings(tmp: Path, *, bus_url: str, store_url: str, port: int = 8080,
                   sim: dict[str, Any] | None = None, **sections: dict[str, Any]) -> Any:
    """The demo world's settings with fast traffic; `sections` update whole sections,
    e.g. `bus={"claim_idle_ms": 500}`."""
    from cti.config import Settings
    from cti.demo.run import demo_settings

    s = demo_settings(str(tmp / "cti.db"), str(tmp / "recordings"), port, "127.0.0.1", False)
    d = s.model_dump()
    d["store"]["url"] = store_url
    d["bus"]["url"] = bus_url
    d["providers"][0].update({**FAST_SIM, **(sim or {})})
    for q in d["queues"]:
        q["wrap_up_s"] = 0.0
    d["server"]["allowed_origins"] = ["*"]
    for name, values in sections.items():
        d.setdefault(name, {}).update(values)
    return Settings.model_validate(d)


# ---- settings as a TOML file (for `cti serve --config`) ---------------------------------

def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v if x is not None) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items()
                               if x is not None) + "}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def write_toml(settings: Any, path: Path) -> Path:
    """Settings -> a TOML file `load_settings` reads back to the same settings."""
    d = settings.model_dump(mode="json")
    lines = [f"{k} = {_toml_value(v)}" for k, v in d.items() if v is not None]
    path.write_text("\n".join(lines) + "\n")
    return path


# ---- processes --------------------------------------------------------------------------

def spawn_cti(*args: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`cti <args>` as a child process; output to a file (a full pipe would stall it)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "cti.cli", *args], cwd=ROOT, env=full_env,
                                stdout=out, stderr=subprocess.STDOUT)


def tail(log: Path, n: int = 3000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else ""


def end_process(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.kill()
        p.wait(10)


async def wait_for(pred: Callable[[], Awaitable[bool] | bool], timeout: float, what: str,
                   every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while True:
        r = pred()
        if asyncio.iscoroutine(r) or isinstance(r, Awaitable):
            r = await r  # type: ignore[misc]
        if r:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(every)


async def wait_store_caught_up(bus: Any, timeout: float = 5.0) -> None:
    """Until the store group has nothing pending or unread. Read once, its lag can still count
    the last calls' agent-state events, which the store writer reads every 50 ms (linger)."""
    from cti.bus import streams

    async def caught_up() -> bool:
        return await bus.lag(streams.EVENTS, "store") == 0

    await wait_for(caught_up, timeout, "the store group caught up, nothing pending")


# ---- an in-process app -----------------------------------------------------------------

async def prepare_store(settings: Any) -> None:
    from cti.demo.run import seed_directory
    from cti.store.migrate import upgrade_async

    await upgrade_async(settings.store.url)
    await seed_directory(settings)


async def start_app(settings: Any, *, node_id: str = "n1", prepare: bool = True, login: bool = True) -> Any:
    from cti.app import CtiApp
    from cti.demo.run import agents_log_in

    if prepare:
        await prepare_store(settings)
    app = CtiApp(settings, node_id=node_id)
    await app.start()
    if login:
        await agents_log_in(app)
    return app


def inject_calls(app: Any, n: int, queues: tuple[str, ...] = ("support", "sales", "billing")) -> list[str]:
    """n customers call in (round robin over `queues`); returns their call ids."""
    from cti.model import make_call_id

    sim = app.adapters["sim"]
    out = []
    for i in range(n):
        pcid = sim.inject_call(queue=queues[i % len(queues)], patience_s=float("inf"))
        out.append(make_call_id(app.settings.site.tenant, "sim", pcid))
    return out


# ---- a Redis of our own (for tests that kill it) ---------------------------------------

class PersistentRedis(RedisServer):
    """A redis-server with an fsync-always append-only file: a SIGKILL loses nothing,
    so a restart brings back the streams, groups and pending entries lists."""

    def start(self) -> PersistentRedis:
        import shutil

        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server not installed")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--dir", str(self.dir), "--protected-mode", "no",
             "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)
        return self


@pytest.fixture
def own_redis(tmp_path: Path):
    d = tmp_path / "redis"
    d.mkdir()
    srv = PersistentRedis(free_port(), d).start()
    try:
        yield srv
    finally:
        srv.stop()
