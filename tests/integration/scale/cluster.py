"""Several `cti serve` / `cti worker` processes on one Redis and one PostgreSQL (loopback).

Shared by tests/integration/test_scale_out.py and bench/load.py. Each node is a real
process started from the command line the way an operator starts it (`cti serve
--config`), with its own TOML file; `CTI_SERVER__NODE_ID` names it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[3]
QUEUE_NUMBER = "+33170000100"
TENANT = "t1"
ADMIN_TOKEN = "scale-admin"


# ---- TOML (no writer is installed; inline tables are enough for a config file) ----------------

def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def toml_dumps(d: dict[str, Any]) -> str:
    return "".join(f"{k} = {_toml_value(v)}\n" for k, v in d.items() if v is not None)


# ---- the world: agents, one queue, tokens -------------------------------------------------------

def agent_ids(n: int) -> list[str]:
    return [f"ag{i:04d}" for i in range(n)]


def agent_token(agent: str) -> str:
    return f"tok-{agent}"


def contact_number(i: int) -> str:
    return f"+3361{i:07d}"


def write_contacts(path: Path, n: int) -> Path:
    with path.open("w") as f:
        f.write("id,first_name,last_name,email,phone,mobile,role,account_id,account_name,owner\n")
        for i in range(n):
            f.write(f"c{i},First{i},Last{i},c{i}@example.com,{contact_number(i)},,Buyer,a{i % 50},"
                    f"Account {i % 50},\n")
    return path


async def seed_contacts(store_url: str, csv_path: Path) -> None:
    from cti.crm.local import import_csv
    from cti.store.db import Database

    db = Database(store_url)
    await db.connect()
    try:
        await import_csv(db.engine, csv_path, None, "FR", tenant=TENANT)
    finally:
        await db.close()


def base_settings(*, store_url: str, bus_url: str, agents: int, storage: Path,
                  transcribe: bool = False, wrap_up_s: float = 0.0) -> dict[str, Any]:
    ids = agent_ids(agents)
    return {
        "site": {"tenant": TENANT, "default_region": "FR"},
        "store": {"url": store_url},
        "bus": {"url": bus_url},
        "server": {"host": "127.0.0.1", "ws_queue_max": 256},
        "auth": {"tokens": [{"user": "admin", "role": "admin", "token": ADMIN_TOKEN}]
                 + [{"user": a, "role": "agent", "token": agent_token(a)} for a in ids]},
        "crm": {"type": "local"},
        "agents": [{"id": a, "name": f"Agent {a}", "team": "support", "endpoints": {"sim": f"sim/{a}"}}
                   for a in ids],
        "queues": [{"name": "support", "numbers": [QUEUE_NUMBER], "strategy": "longest_idle",
                    "ring_timeout_s": 15, "max_wait_s": 600, "wrap_up_s": wrap_up_s}],
        # dedicated `cti worker`s transcribe; gateways only ingest recordings
        "transcribe": {"enabled": transcribe, "storage": str(storage), "model": "tiny.en",
                       "cpu_threads": 1, "beam_size": 1, "summary": "extractive", "gateway_worker": False},
        "providers": [],
    }


def sim_provider(*, seed: int, rate_per_s: float, talk_time_s: tuple[float, float], contacts: int,
                 record: bool = False, recording_files: list[str] | None = None,
                 answer_delay_s: tuple[float, float] = (0.05, 0.2), patience_s: float = 3600.0) -> dict[str, Any]:
    """The simulated PBX: Poisson arrivals on the one queue at a fixed seed and rate; agents pick up."""
    return {
        "name": "sim", "type": "simulator", "seed": seed,
        "arrival_rate_per_min": {"support": rate_per_s * 60.0},
        "answer_probability": 1.0, "answer_delay_s": list(answer_delay_s), "talk_time_s": list(talk_time_s),
        "patience_s": patience_s, "hold_probability": 0.0, "transfer_probability": 0.0,
        "outbound_per_agent_per_hour": 0.0, "auto_answer": True, "record": record,
        "recording_files": list(recording_files or []),
        "customer_numbers": [contact_number(i) for i in range(contacts)], "unknown_caller_ratio": 0.0,
    }


# ---- processes --------------------------------------------------------------------------------

@dataclass
class Node:
    """One `cti serve` or `cti worker` process."""

    name: str
    command: str                # serve | worker
    config: Path
    log: Path
    port: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)   # after --config, e.g. ["--store"]
    log_level: str = "info"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Node:
        argv = [sys.executable, "-m", "cti.cli", "--log-level", self.log_level, self.command,
                "--config", str(self.config), *self.args]
        if self.port is not None:
            argv += ["--port", str(self.port)]
        env = {**os.environ, "CTI_SERVER__NODE_ID": self.name, "PYTHONUNBUFFERED": "1", **self.env}
        with self.log.open("ab") as logf:
            self.proc = subprocess.Popen(argv, cwd=str(ROOT), env=env, stdout=logf, stderr=subprocess.STDOUT)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def log_events(self, event: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log_text().splitlines():
            if f'"{event}"' not in line:
                continue
            with contextlib.suppress(ValueError):
                d = json.loads(line)
                if d.get("event") == event:
                    out.append(d)
        return out

    def wait_log(self, event: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited ({self.proc and self.proc.returncode}):\n"
                                   + self.log_text()[-3000:])
            if f'"{event}"' in self.log_text():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name}: no {event} after {timeout}s:\n" + self.log_text()[-3000:])

    def wait_ready(self, timeout: float = 60.0) -> None:
        """GET /readyz until 200 (bus, store and every provider ready)."""
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited ({self.proc and self.proc.returncode}):\n"
                                   + self.log_text()[-3000:])
            with contextlib.suppress(OSError, urllib.error.URLError):
                with urllib.request.urlopen(f"{self.base_url}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout}s:\n" + self.log_text()[-3000:])

    def stop(self, timeout: float = 15.0) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def write_config(path: Path, settings: dict[str, Any]) -> Path:
    path.write_text(toml_dumps(settings))
    return path


def migrate(config: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "cti.cli", "migrate", "--config", str(config)], cwd=str(ROOT),
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"cti migrate failed: {r.stderr[-2000:]}")


async def set_available(session: aiohttp.ClientSession, base_url: str, agents: list[str],
                        concurrency: int = 32) -> None:
    """Agents sign in through one node's API (PUT /api/v1/agents/{id}/state, admin token)."""
    import asyncio

    sem = asyncio.Semaphore(concurrency)

    async def one(agent: str) -> None:
        async with sem, session.put(f"{base_url}/api/v1/agents/{agent}/state",
                                    json={"state": "available"},
                                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                                    timeout=aiohttp.ClientTimeout(total=600)) as r:
            if r.status != 200:
                raise RuntimeError(f"{agent}: sign-in returned {r.status}: {await r.text()}")

    await asyncio.gather(*(one(a) for a in agents))
