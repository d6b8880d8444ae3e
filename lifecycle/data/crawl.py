"""Crawl a list of URLs politely: robots.txt respected, timeouts, a size limit, HTML turned into text.

    lifecycle data collect --input https://example.org/a --input https://example.org/b --output pages.jsonl

robots.txt follows RFC 9309: a 4xx answer means no rules (crawl allowed), a 5xx answer or a network error
means the site is unreachable (nothing crawled). Each page is read in chunks and abandoned once it passes
`max_bytes`. Only `text/html` and `text/plain` pages are turned into records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator
from urllib.parse import urlsplit
from urllib.robotparser import RobotFileParser

from lifecycle.data.items import Item


@dataclass
class CrawlOptions:
    timeout: float = 10.0
    max_bytes: int = 5_000_000
    user_agent: str = "lifecycle-data/0.1"


def _robots(client, origin: str) -> RobotFileParser | None:
    """The parsed robots.txt of an origin; None when the site cannot be reached (crawl nothing)."""
    import httpx

    rp = RobotFileParser()
    try:
        resp = client.get(f"{origin}/robots.txt")
    except httpx.HTTPError:
        return None
    if resp.status_code >= 500:
        return None
    rp.parse(resp.text.splitlines() if resp.status_code < 400 else [])
    return rp


def _fetch(client, url: str, opts: CrawlOptions) -> tuple[bytes, str]:
    """Body and content type, or ValueError with what went wrong."""
    import httpx

    try:
        with client.stream("GET", url) as resp:
            if resp.status_code >= 400:
                raise ValueError(f"HTTP {resp.status_code}")
            declared = resp.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > opts.max_bytes:
                raise ValueError(f"page is {int(declared)} bytes, over max_bytes={opts.max_bytes}")
            body = bytearray()
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) > opts.max_bytes:
                    raise ValueError(f"page exceeds max_bytes={opts.max_bytes}")
            return bytes(body), resp.headers.get("content-type", "")
    except httpx.TimeoutException:
        raise ValueError(f"timed out after {opts.timeout}s") from None
    except httpx.HTTPError as e:
        raise ValueError(f"{type(e).__name__}: {e}") from None


def crawl(urls: list[str], opts: CrawlOptions) -> Iterator[tuple[Item, bytes]]:
    """Yield (item, body) per URL; a refused or failed URL is an item with an error and a reason."""
    import httpx

    from lifecycle.data.clean import html_to_text

    robots: dict[str, RobotFileParser | None] = {}
    headers = {"User-Agent": opts.user_agent}
    with httpx.Client(timeout=opts.timeout, follow_redirects=True, headers=headers) as client:
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                yield Item(url, error="not an http(s) URL"), b""
                continue
            origin = f"{parts.scheme}://{parts.netloc}"
            if origin not in robots:
                robots[origin] = _robots(client, origin)
            rp = robots[origin]
            if rp is None:
                yield Item(url, error="robots.txt unreachable; site not crawled", reason="fetch_failed"), b""
                continue
            if not rp.can_fetch(opts.user_agent, url):
                yield Item(url, error="disallowed by robots.txt", reason="robots_disallowed"), b""
                continue
            try:
                body, ctype = _fetch(client, url, opts)
            except ValueError as e:
                yield Item(url, error=str(e), reason="fetch_failed"), b""
                continue
            mime = ctype.split(";")[0].strip().lower()
            charset = "utf-8"
            if "charset=" in ctype:
                charset = ctype.split("charset=")[-1].split(";")[0].strip() or "utf-8"
            try:
                text = body.decode(charset, errors="replace")
            except LookupError:
                text = body.decode("utf-8", errors="replace")
            if mime in ("text/html", "application/xhtml+xml"):
                text = html_to_text(text, document=True)
            elif mime != "text/plain":
                yield Item(url, error=f"unsupported content type {mime or 'none'}", reason="fetch_failed"), body
                continue
            if not text.strip():
                yield Item(url, error="no main text found", reason="empty"), body
                continue
            yield Item(url, {"text": text, "url": url}), body
