"""Talking to a server under test: refuse addresses off this machine, and GET JSON without raising.

    check_local("http://127.0.0.1:8000")               # UserError for anything not on this machine
    status, body = get_json("http://127.0.0.1:8000/v1/models", timeout=5)   # (0, {}) when nothing answers
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from lifecycle.errors import UserError


def check_local(url: str) -> None:
    """Refuse an endpoint that is not on this machine: benchmarks and load tests stay local."""
    import ipaddress
    import socket
    from urllib.parse import urlparse

    host = urlparse(url).hostname
    if not host or urlparse(url).scheme not in ("http", "https"):
        raise UserError(f"endpoint {url!r} is not an http(s) URL; e.g. http://127.0.0.1:8000")
    try:
        addrs = {ai[4][0] for ai in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        raise UserError(f"cannot resolve {host}; use an address on this machine such as 127.0.0.1") from None
    import psutil

    local = {a.address.split("%")[0] for nics in psutil.net_if_addrs().values() for a in nics}
    for a in addrs:
        if not (ipaddress.ip_address(a.split("%")[0]).is_loopback or a.split("%")[0] in local):
            raise UserError(f"{url} resolves to {a}, not this machine; load is only sent to local addresses")


def get_json(url: str, timeout: float = 5.0, key: str = "") -> tuple[int, dict]:
    """(HTTP status, JSON body); status 0 and {} when the server is down or the body is not JSON."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, {}
    except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
        return 0, {}
