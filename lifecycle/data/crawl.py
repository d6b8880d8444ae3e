"""Crawl a list of URLs politely: robots.txt respected, time and size limits, redirects kept to allowed hosts,
HTML turned into text.

    lifecycle data collect --input https://example.org/a --input https://example.org/b --output pages.jsonl

robots.txt follows RFC 9309: a 4xx answer means no rules (crawl allowed), a 5xx answer or a network error
means the site is unreachable (nothing crawled), and only its first `robots_max_bytes` are parsed (500 KiB,
as the RFC allows). Each page is read in chunks and abandoned once it passes `max_bytes`, or once
`deadline` seconds have passed since the request started: `timeout` bounds each read, so a server that
sends a byte every few seconds would otherwise hold a page forever. The deadline is checked after every
read, so a page takes at most `deadline + timeout` seconds. Redirects are followed by hand (at most
`max_redirects`) and only to the starting URL's host or a host in `allow_hosts`; robots.txt is checked on
every host reached. Only `text/html` and `text/plain` pages become records. Every URL yields one item, so
every failure is counted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator
from urllib.parse import urljoin, urlsplit
from urllib.robotparser import RobotFileParser

from lifecycle.data.items import Item


@dataclass
class CrawlOptions:
    timeout: float = 10.0
    max_bytes: int = 5_000_000
    user_agent: str = "lifecycle-data/0.1"
    deadline: float = 30.0            # seconds for a whole page (redirects included), on top of `timeout` per read
    allow_hosts: tuple[str, ...] = ()  # hosts redirects may lead to besides the URL's own
    max_redirects: int = 5
    robots_max_bytes: int = 500 * 1024


class FetchError(ValueError):
    """Why a page could not be read; `status` is the HTTP status when the server answered, `redirect` is set
    when a redirect could not be followed (refused host, too many, no Location)."""

    def __init__(self, message: str, status: int | None = None, redirect: bool = False):
        super().__init__(message)
        self.status, self.redirect = status, redirect


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _host_allowed(url: str, start: str, opts: CrawlOptions) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host == (urlsplit(start).hostname or "").lower() or host in {h.lower() for h in opts.allow_hosts}


def _read(client, url: str, opts: CrawlOptions, limit: int, deadline: float, truncate: bool) -> tuple[bytes, str]:
    """One GET without redirects: (body, content type); FetchError on a redirect (status 3xx), an error or a
    limit. Over `limit` bytes the body is cut there when `truncate`, else refused."""
    import httpx

    try:
        with client.stream("GET", url) as resp:
            if resp.is_redirect:
                raise FetchError(resp.headers.get("location", ""), resp.status_code)
            if resp.status_code >= 400:
                raise FetchError(f"HTTP {resp.status_code}", resp.status_code)
            declared = resp.headers.get("content-length", "")
            if not truncate and declared.isdigit() and int(declared) > limit:
                raise FetchError(f"page is {int(declared)} bytes, over max_bytes={limit}")
            body = bytearray()
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) > limit:
                    if truncate:
                        return bytes(body[:limit]), resp.headers.get("content-type", "")
                    raise FetchError(f"page exceeds max_bytes={limit}")
                if time.monotonic() > deadline:
                    raise FetchError(f"page not complete after deadline={opts.deadline}s")
            return bytes(body), resp.headers.get("content-type", "")
    except httpx.TimeoutException:
        raise FetchError(f"timed out after {opts.timeout}s") from None
    except httpx.HTTPError as e:
        raise FetchError(f"{type(e).__name__}: {e}") from None


def _get(client, url: str, opts: CrawlOptions, limit: int, truncate: bool = False,
         robots=None) -> tuple[str, bytes, str]:
    """(final URL, body, content type), following redirects to allowed hosts within one deadline.
    `robots(url)` returns why a URL may not be fetched (or None); it is asked for every redirect target."""
    deadline = time.monotonic() + opts.deadline
    current = url
    for _ in range(opts.max_redirects + 1):
        try:
            body, ctype = _read(client, current, opts, limit, deadline, truncate)
            return current, body, ctype
        except FetchError as e:
            if e.status is None or not 300 <= e.status < 400:
                raise
            location, status = str(e), e.status
        if not location:
            raise FetchError(f"HTTP {status} redirect without a Location", redirect=True)
        target = urljoin(current, location)
        if urlsplit(target).scheme not in ("http", "https"):
            raise FetchError(f"redirect to a non-http(s) URL {target}", redirect=True)
        if not _host_allowed(target, url, opts):
            raise FetchError(f"redirect to {urlsplit(target).hostname} refused (not {urlsplit(url).hostname} "
                             "and not in allow_hosts)", redirect=True)
        refused = robots(target) if robots else None
        if refused:
            raise FetchError(f"redirect target {target}: {refused}", redirect=True)
        current = target
    raise FetchError(f"more than {opts.max_redirects} redirects", redirect=True)


def _robots(client, origin: str, opts: CrawlOptions) -> RobotFileParser | None:
    """The parsed robots.txt of an origin; None when the site cannot be reached (crawl nothing)."""
    rp = RobotFileParser()
    try:
        _, body, _ = _get(client, f"{origin}/robots.txt", opts, opts.robots_max_bytes, truncate=True)
    except FetchError as e:
        if e.status is not None and 400 <= e.status < 500:
            rp.parse([])  # no rules: everything allowed
            return rp
        if e.redirect:
            rp.parse([])  # RFC 9309: robots.txt that cannot be followed to its end counts as unavailable (4xx)
            return rp
        return None
    rp.parse(body.decode("utf-8", errors="replace").splitlines())
    return rp


def _text(body: bytes, ctype: str) -> tuple[str | None, str]:
    """(text, mime) of a page; text is None for an unsupported content type."""
    from lifecycle.data.clean import html_to_text

    mime = ctype.split(";")[0].strip().lower()
    charset = "utf-8"
    if "charset=" in ctype:
        charset = ctype.split("charset=")[-1].split(";")[0].strip().strip('"') or "utf-8"
    try:
        text = body.decode(charset, errors="replace")
    except LookupError:
        text = body.decode("utf-8", errors="replace")
    if mime in ("text/html", "application/xhtml+xml"):
        return html_to_text(text, document=True), mime
    return (text, mime) if mime == "text/plain" else (None, mime)


def crawl(urls: list[str], opts: CrawlOptions) -> Iterator[tuple[Item, bytes]]:
    """Yield (item, body) per URL; a refused or failed URL is an item with an error and a reason."""
    import httpx

    robots: dict[str, RobotFileParser | None] = {}
    headers = {"User-Agent": opts.user_agent}

    def refusal(url: str) -> str | None:
        origin = _origin(url)
        if origin not in robots:
            robots[origin] = _robots(client, origin, opts)
        if robots[origin] is None:
            return "robots.txt unreachable; site not crawled"
        return None if robots[origin].can_fetch(opts.user_agent, url) else "disallowed by robots.txt"

    with httpx.Client(timeout=opts.timeout, follow_redirects=False, headers=headers) as client:
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                yield Item(url, error="not an http(s) URL"), b""
                continue
            refused = refusal(url)
            if refused:
                reason = "robots_disallowed" if refused.startswith("disallowed") else "fetch_failed"
                yield Item(url, error=refused, reason=reason), b""
                continue
            try:
                _, body, ctype = _get(client, url, opts, opts.max_bytes, robots=refusal)
            except FetchError as e:
                yield Item(url, error=str(e), reason="fetch_failed"), b""
                continue
            try:
                text, mime = _text(body, ctype)
            except Exception as e:  # HTML parsers on hostile markup: one page lost, never the crawl
                yield Item(url, error=f"page not readable ({type(e).__name__}: {e})", reason="fetch_failed"), body
                continue
            if text is None:
                yield Item(url, error=f"unsupported content type {mime or 'none'}", reason="fetch_failed"), body
                continue
            if not text.strip():
                yield Item(url, error="no main text found", reason="empty"), body
                continue
            yield Item(url, {"text": text, "url": url}), body
