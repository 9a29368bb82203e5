"""Config: defaults <- TOML file <- environment; bad input names the file and the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cti.config import ConfigError, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "cti.example.toml"


def test_defaults_are_the_embedded_setup() -> None:
    s = load_settings(None, environ={})
    assert s.store.url.startswith("sqlite+aiosqlite") and s.bus.url == "memory://"


def test_example_config_loads_with_secrets_from_env() -> None:
    env = {"CTI_ARI_PASSWORD": "p", "CTI_ESL_PASSWORD": "p", "CTI_TWILIO_AUTH_TOKEN": "t",
           "CTI_SIP_PASSWORD": "p", "CTI_TOKEN_SAM": "sam-token"}
    s = load_settings(EXAMPLE, environ=env)
    assert {p.type for p in s.providers} == {"asterisk", "freeswitch", "twilio", "sip"}
    pbx = next(p for p in s.providers if p.name == "pbx")
    assert pbx.options["password"] == "p" and "password_env" not in pbx.options
    assert s.auth.tokens[1].token == "sam-token"


def test_environment_overrides_any_key(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[server]\nport = 8080\n[bus]\nurl = "memory://"\n')
    s = load_settings(f, environ={"CTI_SERVER__PORT": "9001", "CTI_BUS__URL": "redis://127.0.0.1:1/0",
                                  "CTI_SERVER__ALLOWED_ORIGINS": '["https://crm.example"]'})
    assert s.server.port == 9001 and s.bus.url.startswith("redis://")
    assert s.server.allowed_origins == ["https://crm.example"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[server]\nport = 'eighty'\n", "server.port"),
        ("[server\nport = 1\n", "not valid TOML"),
        ("[server]\nbogus = 1\n", "server.bogus"),
        ("[site]\ntimezone = 'Mars/Olympus'\n", "site.timezone"),
        ("[[agents]]\nid = 'a'\nname = 'A'\nskills = { fr = 12 }\n", "agents.0.skills"),
        ("[[providers]]\nname = 'x'\ntype = 'sip'\npassword_env = 'NOPE_NOT_SET'\n", "NOPE_NOT_SET"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(f, environ={})
    assert str(f) in str(err.value) and expected in str(err.value)


def test_cti_serve_with_bad_config_exits_2_with_one_message(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("[store]\nurl = 42\n")
    r = subprocess.run([sys.executable, "-m", "cti.cli", "serve", "--config", str(f)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert str(f) in r.stderr and "store.url" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(("command", "text", "expected"), [
    (["serve"], "[server]\nstore_writers = false\n", "server.store_writers = false needs a shared bus"),
    (["worker"], "[transcribe]\nenabled = false\n", "nothing for a worker to do"),
    (["worker", "--store"], "[transcribe]\nenabled = false\n", "--store needs the bus the gateways use"),
    # a worker on the memory bus started and waited forever for jobs nobody could give it
    (["worker"], "[transcribe]\nenabled = true\n", "a worker needs the bus the gateways use"),
])
def test_a_split_deployment_that_could_not_write_the_store_is_refused(
    tmp_path: Path, command: list[str], text: str, expected: str
) -> None:
    f = tmp_path / "split.toml"
    f.write_text(text)
    r = subprocess.run([sys.executable, "-m", "cti.cli", *command, "--config", str(f)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert expected in r.stderr and str(f) in r.stderr
    assert "Traceback" not in r.stderr


def test_the_event_loop_setting_picks_uvloop_or_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvloop

    from cti.cli import loop_factory
    from cti.config import ConfigError

    assert loop_factory("auto") is uvloop.new_event_loop
    assert loop_factory("uvloop") is uvloop.new_event_loop
    assert loop_factory("asyncio") is None
    monkeypatch.setitem(sys.modules, "uvloop", None)  # not installed
    assert loop_factory("auto") is None
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        loop_factory("uvloop")


@pytest.mark.parametrize("command", [["serve"], ["worker", "--store"]])
def test_a_node_on_an_unmigrated_postgresql_says_to_run_cti_migrate(
    tmp_path: Path, pg_url: str, command: list[str]
) -> None:
    # `cti serve` migrates SQLite only; on a fresh PostgreSQL it used to start and log a
    # traceback per query ("relation api_tokens does not exist")
    f = tmp_path / "pg.toml"
    f.write_text(f'[store]\nurl = "{pg_url}"\n[bus]\nurl = "redis://127.0.0.1:1/0"\n')
    r = subprocess.run([sys.executable, "-m", "cti.cli", *command, "--config", str(f)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "has no cti schema yet: run `cti migrate`" in r.stderr and str(f) in r.stderr
    assert "Traceback" not in r.stderr


async def test_the_schema_check_names_an_old_revision_and_passes_the_head(pg_url: str) -> None:
    from cti.store.migrate import head_revision, schema_problem, upgrade_async

    await upgrade_async(pg_url, "0001")
    problem = await schema_problem(pg_url)
    assert problem is not None and "at schema revision 0001" in problem and str(head_revision()) in problem
    await upgrade_async(pg_url)
    assert await schema_problem(pg_url) is None
    assert await schema_problem("postgresql+asyncpg://cti@127.0.0.1:1/none") is None  # unreachable: not judged


def test_a_port_already_taken_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        f = tmp_path / "cti.toml"
        f.write_text(f'[store]\nurl = "sqlite+aiosqlite:///{tmp_path}/cti.db"\n[server]\nport = {port}\n'
                     f'host = "127.0.0.1"\n')
        r = subprocess.run([sys.executable, "-m", "cti.cli", "serve", "--config", str(f)],
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr and "--port" in r.stderr
    assert "Traceback" not in r.stderr
