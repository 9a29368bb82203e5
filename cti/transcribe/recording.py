"""Recording policy (pure) and recording storage: fetch, store, encrypt, link to the call."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import structlog

log = structlog.get_logger(__name__)

POLICIES = ("always", "on_demand", "never")


class RecordingError(RuntimeError):
    """A recording could not be fetched or stored; the message says why."""


# --------------------------------------------------------------------------- policy (pure)


def recording_policy(queue: Any | None, direction: str | None, *, default: str = "never") -> str:
    """Whether calls of this queue and direction are recorded: always | on_demand | never.

    `queue.recording` is one policy for both directions ("always"), or one per direction
    ("inbound:always, outbound:on_demand"; a missing direction falls back to `default`).
    A call outside any queue gets `default`.
    """
    if queue is None:
        return _check(default, "default")
    spec = (getattr(queue, "recording", None) or default).strip()
    if ":" not in spec:
        return _check(spec, f"queue {getattr(queue, 'name', '?')}.recording")
    per: dict[str, str] = {}
    for part in spec.replace(";", ",").split(","):
        if not part.strip():
            continue
        d, _, p = part.partition(":")
        d = d.strip().lower()
        if d not in ("inbound", "outbound"):
            raise ValueError(f"queue {getattr(queue, 'name', '?')}.recording: unknown direction {d!r} in {spec!r}")
        per[d] = _check(p.strip(), f"queue {getattr(queue, 'name', '?')}.recording")
    key = str(direction or "").lower()
    return per.get(key, _check(default, "default"))


def _check(policy: str, where: str) -> str:
    p = policy.strip().lower().replace("-", "_")
    if p not in POLICIES:
        raise ValueError(f"{where}: recording policy {policy!r} is not one of {', '.join(POLICIES)}")
    return p


def consent_announcement(queue: Any | None, policy: str, direction: str | None = None) -> str | None:
    """Media to play before recording starts, or None.

    Recorded calls need consent: with `always` the announcement plays when the call is
    answered; with `on_demand`, when the agent starts the recording. Never-recorded
    calls hear nothing. The queue's `consent_media` names the prompt.
    """
    if policy == "never" or queue is None:
        return None
    return getattr(queue, "consent_media", None) or None


def announce_at(policy: str) -> str | None:
    """When the consent prompt plays: 'answer' (always), 'record_start' (on_demand), None (never)."""
    return {"always": "answer", "on_demand": "record_start"}.get(policy)


# --------------------------------------------------------------------------- encryption


def fernet_for(key: str | None) -> Any | None:
    """Fernet from `security.encryption_key` (a Fernet key, or any secret: derived with SHA-256)."""
    if not key:
        return None
    from cryptography.fernet import Fernet

    try:
        return Fernet(key.encode() if isinstance(key, str) else key)
    except (ValueError, TypeError):
        return Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()))


def read_recording(path: str | Path, *, encrypted: bool, key: str | None) -> bytes | Path:
    """The recording's audio: a path when stored in clear, decrypted bytes otherwise."""
    p = Path(path)
    if not encrypted:
        return p
    f = fernet_for(key)
    if f is None:
        raise RecordingError(f"{p}: recording is encrypted but security.encryption_key is not set")
    from cryptography.fernet import InvalidToken

    try:
        return bytes(f.decrypt(p.read_bytes()))
    except FileNotFoundError:
        raise RecordingError(f"{p}: stored recording is missing") from None
    except InvalidToken:
        raise RecordingError(f"{p}: cannot decrypt (wrong security.encryption_key?)") from None


# --------------------------------------------------------------------------- fetch + store


@dataclass(frozen=True, slots=True)
class StoredRecording:
    path: str
    encrypted: bool
    size: int


def provider_auth(settings: Any, provider: str, url: str) -> tuple[str, str] | None:
    """Basic-auth credentials for a provider's recording URL, only for that provider's own host.

    Twilio: AccountSid:AuthToken on *.twilio.com (or its configured api_url); Asterisk ARI:
    username:password on its url. Credentials are never sent to another host.
    """
    host = (urlparse(url).hostname or "").lower()
    for p in getattr(settings, "providers", []) or []:
        if p.name != provider:
            continue
        opts = p.options
        if p.type == "twilio":
            api_host = (urlparse(str(opts.get("api_url") or "")).hostname or "").lower()
            if host.endswith(".twilio.com") or host == "twilio.com" or (api_host and host == api_host):
                if opts.get("account_sid") and opts.get("auth_token"):
                    return str(opts["account_sid"]), str(opts["auth_token"])
        else:
            own = (urlparse(str(opts.get("url") or "")).hostname or "").lower()
            if own and host == own and opts.get("username") and opts.get("password"):
                return str(opts["username"]), str(opts["password"])
    return None


def storage_path(storage: str | Path, tenant: str, call_id: str, recording_id: str, source: str) -> Path:
    ext = Path(urlparse(source).path).suffix.lower() or ".wav"
    if not ext[1:].isalnum() or len(ext) > 6:
        ext = ".wav"
    safe = [x.replace("/", "_").replace("..", "_") for x in (tenant, call_id, recording_id)]
    return Path(storage) / safe[0] / safe[1] / f"{safe[2]}{ext}"


async def fetch_to(
    source: str,
    dest: Path,
    *,
    auth: tuple[str, str] | None = None,
    timeout_s: float = 120.0,
    max_bytes: int = 512 * 1024 * 1024,
    session: Any = None,
) -> int:
    """Copy a recording (http(s) URL, file:// URL or local path) to `dest` (atomically)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        parsed = urlparse(source)
        if parsed.scheme in ("http", "https"):
            size = await _download(source, tmp, auth=auth, timeout_s=timeout_s, max_bytes=max_bytes,
                                   session=session)
        else:
            size = await asyncio.to_thread(_copy_local, Path(parsed.path if parsed.scheme == "file" else source),
                                           tmp, source)
        if size == 0:
            raise RecordingError(f"recording {source}: empty file")
        await asyncio.to_thread(tmp.replace, dest)
        return size
    finally:
        await asyncio.to_thread(tmp.unlink, missing_ok=True)


def _copy_local(src: Path, tmp: Path, source: str) -> int:
    if not src.is_file():
        raise RecordingError(f"recording {source}: no such file")
    shutil.copyfile(src, tmp)
    return tmp.stat().st_size


async def _download(
    url: str, tmp: Path, *, auth: tuple[str, str] | None, timeout_s: float, max_bytes: int, session: Any
) -> int:
    import aiohttp

    own = session is None
    sess = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))
    size = 0
    safe_url = url.split("?")[0]
    try:
        kw: dict[str, Any] = {}
        if auth:
            kw["auth"] = aiohttp.BasicAuth(*auth)
        async with sess.get(url, **kw) as resp:
            if resp.status != 200:
                raise RecordingError(f"recording {safe_url}: HTTP {resp.status}")
            with tmp.open("wb") as f:
                async for chunk in resp.content.iter_chunked(1 << 16):
                    size += len(chunk)
                    if size > max_bytes:
                        raise RecordingError(f"recording {safe_url}: larger than {max_bytes} bytes")
                    f.write(chunk)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise RecordingError(f"recording {safe_url}: download failed ({type(exc).__name__}: {exc})") from None
    finally:
        if own:
            await sess.close()
    return size


async def store_recording(
    source: str,
    dest: Path,
    *,
    key: str | None = None,
    auth: tuple[str, str] | None = None,
    session: Any = None,
) -> StoredRecording:
    """Fetch `source` into `dest`, encrypted with Fernet when a key is configured (`dest` + '.enc')."""
    f = fernet_for(key)
    if f is None:
        size = await fetch_to(source, dest, auth=auth, session=session)
        return StoredRecording(str(dest), False, size)
    plain = dest.with_name(dest.name + ".plain")
    try:
        await fetch_to(source, plain, auth=auth, session=session)
        data = await asyncio.to_thread(plain.read_bytes)
        token = f.encrypt(data)
        enc = dest.with_name(dest.name + ".enc")
        tmp = enc.with_name(enc.name + ".tmp")
        await asyncio.to_thread(tmp.write_bytes, token)
        tmp.replace(enc)
        return StoredRecording(str(enc), True, len(token))
    finally:
        plain.unlink(missing_ok=True)  # the clear copy never stays on disk
