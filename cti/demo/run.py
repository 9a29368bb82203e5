"""`cti demo`: everything in one process, no external service.

Simulated PBX + SQLite (fresh file) + memory bus + the seeded CRM directory +
agents, skills and queues from `cti.demo.seed`; prints the URLs and the demo
tokens; with `--duration N` stops after N seconds and prints a summary.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import shutil
import tempfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from cti.config import Settings

# A lively but realistic hour: about 6 calls a minute for 12 agents (~85% occupancy).
DEMO_TRAFFIC: dict[str, Any] = {
    "arrival_rate_per_min": {"support": 2.5, "support_en": 0.7, "sales": 1.5, "billing": 1.3},
    "talk_time_s": [30, 180],
}


def demo_settings(db_path: str, storage: str, port: int, host: str, transcribe: bool,
                  provider_options: dict[str, Any] | None = None) -> Settings:
    from cti.demo.seed import demo_settings_dict

    audio = sorted(str(p) for p in _demo_file("audio").glob("*.wav"))
    options = {**DEMO_TRAFFIC, "recording_files": audio, **(provider_options or {})}
    d: dict[str, Any] = demo_settings_dict(provider_options=options)
    d.setdefault("store", {})["url"] = f"sqlite+aiosqlite:///{db_path}"
    d.setdefault("bus", {})["url"] = "memory://"
    server = d.setdefault("server", {})
    server.update({"host": host, "port": port, "public_url": f"http://{host}:{port}"})
    tr = d.setdefault("transcribe", {})
    tr.update({"enabled": transcribe, "storage": storage})
    return Settings.model_validate(d)


def _demo_file(name: str) -> Path:
    return Path(str(importlib.resources.files("cti.demo") / name))


async def seed_directory(settings: Settings) -> int:
    from cti.crm.local import count_contacts, import_csv
    from cti.store.db import Database

    db = Database(settings.store.url)
    await db.connect()
    try:
        await import_csv(db.engine, _demo_file("contacts.csv"), _demo_file("accounts.csv"),
                         settings.site.default_region, tenant=settings.site.tenant)
        return await count_contacts(db.engine)
    finally:
        await db.close()


async def agents_log_in(app: Any) -> None:
    """Simulated agents sign in at the start of the demo."""
    from cti.model import AgentState

    for agent in app.settings.agents:
        try:
            await app.router.set_agent_state(agent.id, AgentState.AVAILABLE, None)
        except Exception as exc:  # one agent refused must not stop the demo
            print(f"  (agent {agent.id} could not sign in: {exc})")


def print_banner(settings: Settings) -> None:
    base = settings.server.public_url
    print(f"\nCTI demo running at {base}")
    print(f"  agent panel : {base}/agent?token=demo-agent-{settings.agents[0].id}")
    print(f"  dashboard   : {base}/dashboard?token=demo-supervisor")
    print(f"  API         : {base}/api/v1/agents   (Authorization: Bearer demo-admin)")
    # the tokens that exist (supervisors are in `agents` too, with supervisor tokens, not agent ones)
    print("  tokens      : " + ", ".join(t.token for t in settings.auth.tokens if t.token))
    print(flush=True)


async def count_calls(url: str) -> tuple[int, int]:
    from cti.store.db import Database
    from cti.store.tables import calls

    db = Database(url)
    await db.connect()
    try:
        async with db.engine.connect() as conn:
            total = (await conn.execute(sa.select(sa.func.count()).select_from(calls))).scalar_one()
            ended = (await conn.execute(
                sa.select(sa.func.count()).select_from(calls).where(calls.c.state == "ended"))).scalar_one()
        return int(total), int(ended)
    finally:
        await db.close()


def run_demo(*, port: int, duration: float | None, host: str, db_path: str | None, speed: float,
             transcribe: bool) -> int:
    from cti.app import CtiApp
    from cti.cli import _serve
    from cti.clock import ScaledClock, SystemClock
    from cti.store.migrate import upgrade

    workdir = Path(tempfile.mkdtemp(prefix="cti-demo-"))
    db_file = db_path or str(workdir / "cti-demo.db")
    settings = demo_settings(db_file, str(workdir / "recordings"), port, host, transcribe)
    res = upgrade(settings.store.url)
    if asyncio.iscoroutine(res):
        asyncio.run(res)
    contacts = asyncio.run(seed_directory(settings))
    print(f"demo database: {db_file} ({contacts} contacts)")
    clock = ScaledClock(speed) if speed != 1.0 else SystemClock()
    app = CtiApp(settings, clock=clock, node_id="demo")
    simulated: dict[str, int] = {}

    async def on_ready(a: Any) -> None:
        await agents_log_in(a)
        # callers already waiting when the doors open, so the panels have something at once
        sim = a.adapters.get("sim")
        for q in settings.queues:
            if sim is not None and hasattr(sim, "inject_call"):
                sim.inject_call(queue=q.name)
        print_banner(settings)

    async def main() -> None:
        try:
            await _serve(app, host, port, duration, on_ready)
        finally:
            for name, adapter in app.adapters.items():
                simulated[name] = int(getattr(adapter, "calls_started", 0) or 0)

    try:
        asyncio.run(main())
        if duration is not None:
            total, ended = asyncio.run(count_calls(settings.store.url))
            sim = sum(simulated.values())
            print(f"demo summary: calls simulated {sim}, calls stored {total} ({ended} ended)")
    finally:
        # the fresh database, recordings and transcripts of a demo go with it; --db keeps the
        # database (recordings still go: they live beside the temporary one)
        shutil.rmtree(workdir, ignore_errors=True)
        print("demo data removed" + (f" (database kept: {db_file})" if db_path else " (--db FILE keeps it)"))
    return 0
