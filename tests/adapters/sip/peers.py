"""Real SIP peers for the line tests: Kamailio (registrar/proxy) and sipp (the customer side).

Each test gets its own loopback ports and a temp dir; every sipp run has a time limit
(`-timeout` plus an asyncio timeout), Kamailio is stopped at the end of the test.
Scenarios are copies of reference scenarios, in `scenarios/` (see PEERS.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).parent
SCENARIOS = HERE / "scenarios"
AUDIO = HERE.parent.parent / "data" / "sip" / "customer.ulaw.wav"

needs_sip_peers = pytest.mark.skipif(
    not (shutil.which("kamailio") or Path("/usr/sbin/kamailio").exists()) or not shutil.which("sipp"),
    reason="needs kamailio and sipp (Debian packages kamailio, sip-tester)",
)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_range(n: int) -> tuple[int, int]:
    """n consecutive free UDP ports (RTP ranges), even-aligned."""
    for _ in range(200):
        base = free_udp_port() & ~1
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base, base + n - 1
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free UDP port range")


def _die_with_parent() -> None:
    """Linux: SIGTERM this child when the test process dies (a killed pytest leaks no Kamailio)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Kamailio:
    port: int
    gateway_port: int
    workdir: Path
    config: str = "kam.cfg"
    subst: dict[str, str] = field(default_factory=dict)  # more @NAME@ placeholders of the config
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("kamailio") or "/usr/sbin/kamailio"
        cfg = (SCENARIOS / self.config).read_text()
        cfg = cfg.replace("@PORT@", str(self.port)).replace("@GATEWAY@", f"127.0.0.1:{self.gateway_port}")
        for name, value in self.subst.items():
            cfg = cfg.replace(f"@{name}@", value)
        path = self.workdir / "kam.cfg"
        path.write_text(cfg)
        with open(self.workdir / "kamailio.log", "ab") as log:
            self.proc = subprocess.Popen(
                [exe, "-f", str(path), "-DD", "-E", "-w", str(self.workdir),
                 "-P", str(self.workdir / "kam.pid"), "-Y", str(self.workdir)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
            )
        time.sleep(0.3)  # Kamailio binds in about 30 ms; children fork right after
        if self.proc.poll() is not None:
            raise RuntimeError(f"kamailio exited: {(self.workdir / 'kamailio.log').read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None


@contextlib.contextmanager
def kamailio(tmp_path: Path, config: str = "kam.cfg", **subst: str) -> Iterator[Kamailio]:
    kam = Kamailio(port=free_udp_port(), gateway_port=free_udp_port(), workdir=tmp_path, config=config,
                   subst=subst)
    kam.start()
    try:
        yield kam
    finally:
        kam.stop()


@dataclass
class SippResult:
    rc: int
    output: str


class Sipp:
    """One sipp run (a single call), started in the background, with a hard time limit."""

    def __init__(self, scenario: str, target: str, *, tmp_path: Path, local_port: int | None = None,
                 service: str = "1001", keys: dict[str, str] | None = None, limit_s: float = 20,
                 subst: dict[str, str] | None = None) -> None:
        text = (SCENARIOS / scenario).read_text()
        for k, v in (subst or {}).items():
            text = text.replace(f"@{k}@", v)
        self.path = tmp_path / f"{scenario}.{os.getpid()}.{time.monotonic_ns()}.xml"
        self.path.write_text(text)
        self.port = local_port or free_udp_port()
        media = free_udp_range(4)[0]
        self.args = ["sipp", "-sf", str(self.path), "-i", "127.0.0.1", "-p", str(self.port),
                     "-mp", str(media), "-s", service, "-m", "1", "-l", "1", "-nostdin",
                     "-timeout", f"{int(limit_s)}s", "-timeout_error", "-max_recv_loops", "100",
                     "-trace_err", "-error_file", str(tmp_path / f"sipp_{self.port}_errors.log")]
        for k, v in (keys or {}).items():
            self.args += ["-key", k, v]
        if target:
            self.args.append(target)
        self.limit_s = limit_s
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Sipp:
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True)
        return self

    async def wait(self) -> SippResult:
        assert self.proc is not None
        try:
            out, _ = await asyncio.wait_for(self.proc.communicate(), self.limit_s + 5)
        except TimeoutError:
            self.kill()
            out = b"(killed: time limit)"
        return SippResult(self.proc.returncode if self.proc.returncode is not None else -9,
                          out.decode(errors="replace")[-3000:])

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)


@contextlib.asynccontextmanager
async def sipp(scenario: str, target: str, **kw: object) -> AsyncIterator[Sipp]:
    run = await Sipp(scenario, target, **kw).start()  # type: ignore[arg-type]
    try:
        yield run
    finally:
        run.kill()
        if run.proc is not None:
            with contextlib.suppress(TimeoutError, ProcessLookupError):
                await asyncio.wait_for(run.proc.wait(), 5)
