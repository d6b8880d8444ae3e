"""Optional API keys: `--api-key-env VAR` (one key) and/or `--api-keys-file FILE` (one key per line).

Clients send `Authorization: Bearer KEY`. Every configured key is compared in constant time
(`hmac.compare_digest`), and all of them are always compared, so timing reveals nothing about a key.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from lifecycle.errors import UserError


def load_keys(api_key_env: str = "", api_keys_file: str = "") -> list[bytes]:
    """The accepted keys; empty means no authentication. A named source that is empty is an error."""
    keys: list[str] = []
    if api_key_env:
        value = os.environ.get(api_key_env, "").strip()
        if not value:
            raise UserError(f"--api-key-env {api_key_env}: that environment variable is empty or unset")
        keys.append(value)
    if api_keys_file:
        path = Path(api_keys_file)
        if not path.is_file():
            raise UserError(f"--api-keys-file {path}: file not found")
        found = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        if not found:
            raise UserError(f"--api-keys-file {path}: no keys in it (one per line)")
        keys.extend(found)
    return [k.encode() for k in keys]


def authorized(keys: list[bytes], header: bytes | None) -> bool:
    if not keys:
        return True
    token = b""
    if header and header[:7].lower() == b"bearer ":
        token = header[7:].strip()
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(token, key)
    return ok
