"""Start real redis-server and PostgreSQL on loopback, on free ports, in temp dirs.

Used by the pytest fixtures (tests/conftest.py) and by the benchmarks. Debian's
packages: `redis-server`; PostgreSQL 15 server binaries in `pg_config --bindir`
(or /usr/lib/postgresql/15/bin). PostgreSQL refuses to run as root, so as root the
server runs as the `postgres` system user the Debian package creates.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port that is free now, below the kernel's ephemeral range, not handed out before.

    `bind(0)` gives an ephemeral port, which any outgoing connection may take as its source
    port before the server meant to listen on it starts: a scale-out node started 10 s after
    its port was picked found it taken by one of the other processes' connections.
    """
    low = _ephemeral_low()
    rng = random.Random()
    for _ in range(500):
        port = rng.randint(max(10_000, low - 20_000), low - 1)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket() as s:  # no luck below the range: an ephemeral one, as before
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


@dataclass
class RedisServer:
    port: int
    dir: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server not found: apt-get install redis-server (or run .ci/run)")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--protected-mode", "no", "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)
        return self

    def kill(self) -> None:
        """SIGKILL: what a crash looks like."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


def _pg_bindir() -> Path:
    pg_config = shutil.which("pg_config")
    candidates = []
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip()
        candidates.append(Path(out))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for c in candidates:
        if (c / "postgres").exists() and (c / "initdb").exists():
            return c
    raise RuntimeError("PostgreSQL server binaries not found: apt-get install postgresql-15 (or run .ci/run)")


@dataclass
class PostgresServer:
    port: int
    dir: Path
    proc: subprocess.Popen | None = None
    user: str = "cti"

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/postgres"

    def url_for(self, database: str) -> str:
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{database}"

    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *argv]
        return argv

    def start(self) -> PostgresServer:
        bindir = _pg_bindir()
        data = self.dir / "data"
        if not data.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(self.dir, "postgres", "postgres")
            subprocess.run(
                self._as_owner([str(bindir / "initdb"), "-D", str(data), "-U", self.user, "-A", "trust",
                                "--no-sync", "-E", "UTF8", "--locale", "C"]),
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
        self.proc = subprocess.Popen(
            self._as_owner([str(bindir / "postgres"), "-D", str(data), "-p", str(self.port),
                            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}",
                            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                            "-c", "max_connections=200"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, timeout=30)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        bindir = _pg_bindir()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = subprocess.run([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                               capture_output=True)
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError("postgres did not become ready")

    def psql(self, sql: str, database: str = "postgres") -> str:
        bindir = _pg_bindir()
        psql = bindir / "psql" if (bindir / "psql").exists() else Path(shutil.which("psql") or "psql")
        r = subprocess.run([str(psql), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", database,
                            "-At", "-c", sql], capture_output=True, text=True, check=True)
        return r.stdout

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.dir / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill(self) -> None:
        """SIGKILL the postmaster itself (runuser, our child, does not forward signals)."""
        pid = self._postmaster_pid()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        pid = self._postmaster_pid()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)  # fast shutdown
        if self.proc and self.proc.poll() is None:
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory(prefix="cti-redis-") as d:
        srv = RedisServer(free_port(), Path(d)).start()
        try:
            yield srv
        finally:
            srv.stop()


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    d = Path(tempfile.mkdtemp(prefix="cti-pg-"))
    srv = PostgresServer(free_port(), d).start()
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(d, ignore_errors=True)
