"""Secrets from the configuration never reach the logs: not as event fields, not inside messages,
URLs or tracebacks, neither in the raw events (capture_logs) nor in the JSON lines `cti serve` writes."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog

from cti.config import Settings, _resolve_secrets
from tests.security.conftest import app_client
from tests.servers import free_port

SECRETS = {
    "SEC_TOK_ADMIN": "tok-Adm1n-s3cr3t-QWERTYUIOP",
    "SEC_TOK_ALICE": "tok-Al1ce-s3cr3t-ZXCVBNMASD",
    "SEC_ARI_PASSWORD": "ari-Pa55w0rd-GHJKLZXCV",
    "SEC_TWILIO_TOKEN": "twAuthT0ken0123456789abcdefXYZ",
    "SEC_SIP_PASSWORD": "sip-Pa55w0rd-POIUYTREW",
    "SEC_DB_PASSWORD": "dbPa55w0rdMNBVCXZLK",
    "SEC_ENCRYPTION_KEY": "enc-passphrase-ASDFGHJKL-0987",
}


def secret_settings(tmp: Path, pg_url: str) -> Settings:
    """The live demo world on PostgreSQL, with every kind of secret given through `<key>_env`."""
    from tests.e2e.conftest import build_live_settings

    d = build_live_settings(tmp, 8080).model_dump()
    closed = free_port()  # nothing listens there: every provider connection fails
    user_host = pg_url.split("://", 1)[1]
    environ = dict(SECRETS)
    environ["SEC_DB_URL"] = pg_url.replace(user_host, user_host.replace("@", f":{SECRETS['SEC_DB_PASSWORD']}@", 1))
    d["store"] = {"url_env": "SEC_DB_URL"}
    d["auth"]["tokens"] += [{"user": "root", "role": "admin", "token_env": "SEC_TOK_ADMIN"},
                            {"user": "alice", "role": "agent", "token_env": "SEC_TOK_ALICE"}]
    d["providers"] += [
        {"name": "pbx", "type": "asterisk", "url": f"http://127.0.0.1:{closed}", "username": "cti",
         "password_env": "SEC_ARI_PASSWORD", "app": "cti", "backoff_initial_s": 0.05, "backoff_max_s": 0.2},
        {"name": "tw", "type": "twilio", "account_sid": "AC0123456789abcdef0123456789abcdef",
         "auth_token_env": "SEC_TWILIO_TOKEN", "api_url": f"http://127.0.0.1:{closed}", "max_retries": 1},
        {"name": "line", "type": "sip", "registrar": "127.0.0.1", "port": closed, "username": "1001",
         "password_env": "SEC_SIP_PASSWORD", "sip_port": free_port(), "rtp_ports": [41000, 41100],
         "local_ip": "127.0.0.1", "register_timeout": 0.3, "start_timeout": 0.5, "agent": "farid"},
    ]
    d["security"].pop("encryption_key", None)
    d["security"]["encryption_key_env"] = "SEC_ENCRYPTION_KEY"
    return Settings.model_validate(_resolve_secrets(d, "", environ))


async def exercise(settings: Settings, tmp: Path) -> None:
    """Start the app and do what tends to leak: bad logins, good logins, click-to-call, failing upstreams."""
    from cti.store.db import Database
    from cti.transcribe.worker import RecordingIngest

    async with app_client(settings) as api:
        for bad in ("nope", "Bearer x", SECRETS["SEC_TOK_ADMIN"][:-1]):
            assert (await api.call("GET", "/api/v1/me", bad))[0] in (401, 429)
        s, me, _ = await api.call("GET", "/api/v1/me", SECRETS["SEC_TOK_ALICE"])
        assert s == 200 and me["user"] == "alice"
        s, body, _ = await api.call("POST", "/api/v1/calls", SECRETS["SEC_TOK_ALICE"], {"to": "06 12 34 56 78"})
        assert s == 201, body
        assert (await api.call("POST", "/api/v1/calls", SECRETS["SEC_TOK_ALICE"], {"to": "+1 900 555 0100"}))[0] == 422
        ws = await api.client.ws_connect(f"/ws?token={SECRETS['SEC_TOK_ADMIN']}")
        await ws.receive_json(timeout=5)
        await ws.close()
        s, body, _ = await api.call("POST", "/api/v1/admin/tokens/revoke", SECRETS["SEC_TOK_ADMIN"],
                                    {"token": SECRETS["SEC_TOK_ALICE"]})
        assert s == 200
        # a Twilio webhook with a forged signature
        resp = await api.client.post("/webhooks/twilio/tw/voice", data={"CallSid": "CA1"},
                                     headers={"X-Twilio-Signature": "forged"})
        assert resp.status in (403, 401, 400)
        # a recording on the PBX host (fetched with the ARI credentials) that cannot be downloaded
        closed = settings.providers[1].options["url"]
        event = {"event_id": "evt-rec", "provider": "pbx", "call_id": "c-rec", "kind": "recording_ready",
                 "occurred_at": datetime.now(UTC).isoformat(), "tenant": settings.site.tenant,
                 "data": {"url": f"{closed}/ari/recordings/stored/r1/file?api_key=cti:{SECRETS['SEC_ARI_PASSWORD']}"}}
        with contextlib.suppress(Exception):
            await RecordingIngest(api.app.bus, api.app.db.engine, settings).ingest(event)
        await asyncio.sleep(1.5)  # adapters retry their closed ports meanwhile
        assert not api.app.adapters["pbx"].ready
    # the database unreachable, with the password in its URL
    url = settings.store.url.rsplit(":", 1)[0] + f":{free_port()}/nowhere"
    with pytest.raises(Exception):  # noqa: B017 - whatever the driver raises
        await Database(url, connect_timeout_s=0.3).connect()


def leaks(text: str) -> list[str]:
    return [name for name, value in SECRETS.items() if value in text]


@contextlib.contextmanager
def stdlib_records() -> Iterator[list[logging.LogRecord]]:
    """What the standard library loggers (aiohttp, asyncio, websockets...) emit at INFO and above."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append  # type: ignore[method-assign]
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield records
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


def render(records: list[logging.LogRecord]) -> str:
    fmt = logging.Formatter("%(name)s %(message)s")
    return "\n".join(fmt.format(r) for r in records)


async def test_no_secret_in_raw_log_events(tmp_path: Path, pg_url: str) -> None:
    settings = secret_settings(tmp_path, pg_url)
    with structlog.testing.capture_logs() as events:
        await exercise(settings, tmp_path)
    names = {e["event"] for e in events}
    assert {"ari_disconnected", "db_unreachable", "sip_register_failed", "twilio_webhook_bad_signature",
            "click_to_call"} <= names, names  # the failures were logged...
    assert leaks(repr(events)) == []                                 # ...without their secrets


async def test_no_secret_in_the_json_lines_cti_serve_writes(tmp_path: Path, pg_url: str,
                                                             monkeypatch: pytest.MonkeyPatch, capsys,
                                                             cli_logging: None) -> None:
    import cti.cli

    settings = secret_settings(tmp_path, pg_url)
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)  # not a terminal: the JSON renderer
    cti.cli.configure_logging("debug")
    with stdlib_records() as records:
        await exercise(settings, tmp_path)
    out = stream.getvalue()
    assert '"event": "ari_disconnected"' in out and '"event": "db_unreachable"' in out, out[-2000:]
    captured = capsys.readouterr()
    assert leaks(out) == [], [ln for ln in out.splitlines() if leaks(ln)][:5]
    assert leaks(captured.out + captured.err) == []
    assert leaks(render(records)) == []


def test_the_redaction_processor_hides_secret_fields_and_url_passwords() -> None:
    from cti.cli import _redact_secrets

    ev: dict[str, Any] = {
        "event": "x", "password": "p", "auth_token": "t", "token_hash": "abc",
        "url": "postgresql+asyncpg://cti:hunter2-db@db:5432/cti",
        "error": "GET http://u:hunter3@h/x?api_key=cti:hunter4&token=hunter5 failed; Authorization: Bearer hunter6",
        "nested": {"dsn": "redis://:hunter7@r:6379/0"},
    }
    out = repr(_redact_secrets(None, "info", ev))
    assert ev["password"] == "***" and ev["auth_token"] == "***" and ev["token_hash"] == "abc"
    for s in ("hunter2", "hunter3", "hunter4", "hunter5", "hunter6", "hunter7"):
        assert s not in out, (s, out)
    assert "db:5432/cti" in ev["url"] and "h/x" in ev["error"]  # the rest stays readable


def test_library_log_records_are_scrubbed_once_configured() -> None:
    from cti.security.logs import protect_stdlib_loggers

    protect_stdlib_loggers()
    protect_stdlib_loggers()  # idempotent: one filter per logger
    access = logging.getLogger("aiohttp.access")
    assert sum(type(f).__name__ == "SecretFilter" for f in access.filters) == 1
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    ws = logging.getLogger("websockets.client")
    old = (access.level, ws.level)
    for lg in (access, ws):
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        access.info('%s "%s" %s', "127.0.0.1", "GET /ws?token=tok-secret-1 HTTP/1.1", 101)
        ws.debug("> GET /ari/events?app=cti&api_key=cti:ari-secret-2&subscribeAll=false HTTP/1.1")
        try:
            raise ConnectionError("cannot reach postgresql://cti:db-secret-3@db/cti")
        except ConnectionError:
            ws.exception("connect failed")
    finally:
        for lg, level in zip((access, ws), old, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)
    text = render(records) + "".join(r.exc_text or "" for r in records)
    for s in ("tok-secret-1", "ari-secret-2", "db-secret-3"):
        assert s not in text, text
    assert "GET /ws?token=***" in text and "subscribeAll=false" in text
