"""Encryption at rest with one configured key (`[security] encryption_key_env`).

Recordings (files) and transcripts (text and segments in the `transcripts` row) are
sealed with Fernet (AES-128-CBC + HMAC-SHA256, authenticated). The key is either a
Fernet key (`python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`)
or a passphrase of at least 16 characters, stretched with SHA-256 — the same derivation
`cti.transcribe.recording.fernet_for` uses, so one setting opens both.

Transcript summaries stay in clear on purpose: they feed the caller's history, the
statistics and the CRM activity, which are stored in clear anyway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

KEY_NAME = "security.encryption_key"
MIN_PASSPHRASE = 16


class EncryptionKeyError(ValueError):
    """The configured key is unusable; the message names the setting, never the value."""


class DecryptError(RuntimeError):
    """Sealed data that this key cannot open (wrong key, or corrupted)."""


def _is_fernet_key(key: str) -> bool:
    try:
        return len(base64.urlsafe_b64decode(key.encode())) == 32
    except (binascii.Error, ValueError):
        return False


def validate_key(key: str | None, name: str = KEY_NAME) -> str | None:
    """The key unchanged when usable (None = encryption off); raises EncryptionKeyError naming `name`."""
    if key is None:
        return None
    if not isinstance(key, str) or not key.strip():
        raise EncryptionKeyError(f"{name} is empty (set {name}_env to a variable holding a Fernet key)")
    if _is_fernet_key(key.strip()) or len(key) >= MIN_PASSPHRASE:
        return key
    raise EncryptionKeyError(
        f"{name} is too short ({len(key)} characters): use a Fernet key "
        f"(Fernet.generate_key()) or a passphrase of at least {MIN_PASSPHRASE} characters"
    )


def fernet(key: str | None) -> Fernet | None:
    """Fernet for the key (None when encryption is off). Validates first."""
    key = validate_key(key)
    if key is None:
        return None
    k = key.strip()
    if _is_fernet_key(k):
        return Fernet(k.encode())
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()))


def seal(f: Fernet, data: bytes) -> bytes:
    return f.encrypt(data)


def unseal(f: Fernet, token: bytes) -> bytes:
    try:
        return f.decrypt(bytes(token))
    except InvalidToken:
        raise DecryptError(f"cannot decrypt (wrong {KEY_NAME}?)") from None


def seal_json(f: Fernet, obj: Any) -> bytes:
    return seal(f, json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode())


def unseal_json(f: Fernet, token: bytes) -> Any:
    return json.loads(unseal(f, token))


def transcript_columns(key: str | None, text: str | None, segments: list[Any] | None) -> dict[str, Any]:
    """Values for the `transcripts` columns text, segments, text_encrypted.

    With a key, text and segments go into `text_encrypted` (one sealed JSON object)
    and the clear columns are emptied.
    """
    f = fernet(key)
    if f is None:
        return {"text": text, "segments": segments, "text_encrypted": None}
    return {"text": None, "segments": None,
            "text_encrypted": seal_json(f, {"text": text, "segments": segments})}


def transcript_content(key: str | None, row: Any) -> tuple[str | None, list[Any] | None]:
    """(text, segments) of a `transcripts` row, decrypted when sealed.

    Raises DecryptError when the row is sealed and the key is missing or wrong.
    """
    sealed = getattr(row, "text_encrypted", None)
    if sealed is None:
        return row.text, row.segments
    f = fernet(key)
    if f is None:
        raise DecryptError(f"transcript is encrypted but {KEY_NAME} is not set")
    obj = unseal_json(f, sealed)
    return obj.get("text"), obj.get("segments")
