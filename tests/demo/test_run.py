"""`cti demo`, the README's first command, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.servers import free_port


def test_demo_runs_serves_and_leaves_no_temporary_data(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "cti.cli", "demo", "--port", str(free_port()), "--duration", "4", "--no-transcribe"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "demo summary: calls simulated" in proc.stdout
    assert "demo data removed" in proc.stdout
    assert not list(tmp_path.glob("cti-demo-*"))  # the fresh database and recordings went with it
