"""docker-compose.yml is validated here, since Docker itself cannot run in CI."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cti.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "CTI_DB_PASSWORD": "x", "CTI_ARI_PASSWORD": "x", "CTI_TOKEN_ADMIN": "x"}
needs_compose = pytest.mark.skipif(shutil.which("docker-compose") is None,
                                   reason="docker-compose (Debian package) not installed; .ci/run installs it")


def _config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker-compose", "-f", str(path), "config", "-q"], capture_output=True, text=True,
                          env=ENV, cwd=path.parent, timeout=60)


@needs_compose
def test_docker_compose_file_is_valid() -> None:
    r = _config(ROOT / "docker-compose.yml")
    assert r.returncode == 0, r.stderr


@needs_compose
def test_a_typo_in_docker_compose_is_caught(tmp_path: Path) -> None:
    broken = (ROOT / "docker-compose.yml").read_text().replace("depends_on:", "depend_on:", 1)
    (tmp_path / "docker-compose.yml").write_text(broken)
    r = _config(tmp_path / "docker-compose.yml")
    assert r.returncode != 0 and "depend_on" in r.stderr


def test_compose_services_and_mounted_files_exist() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for service in ("redis:", "postgres:", "asterisk:", "cti:", "worker:"):
        assert f"\n  {service}" in text
    for f in ("ari.conf", "http.conf", "extensions.conf", "pjsip.conf"):
        assert (ROOT / "deploy" / "asterisk" / f).is_file()
    assert (ROOT / "Dockerfile").is_file()


def test_deploy_config_loads() -> None:
    s = load_settings(ROOT / "deploy" / "cti.toml", environ={"CTI_ARI_PASSWORD": "p", "CTI_TOKEN_ADMIN": "t"})
    assert s.providers[0].type == "asterisk" and s.transcribe.enabled


def test_the_schema_is_migrated_before_cti_and_the_worker_start() -> None:
    # `cti serve` migrates only SQLite: on the compose PostgreSQL an unmigrated schema made
    # both services fail on their first query
    import yaml

    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert services["migrate"]["command"][:2] == ["cti", "migrate"]
    for name in ("cti", "worker"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
