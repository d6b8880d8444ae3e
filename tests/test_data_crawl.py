"""Crawling a server this test starts on 127.0.0.1: robots.txt, size limit, timeout, content types."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lifecycle.data.crawl import CrawlOptions, crawl

pytestmark = pytest.mark.integration

ARTICLE = ("<!DOCTYPE html><html><head><title>Bees</title></head><body><nav><a href='/'>Home</a> | "
           "<a href='/shop'>Shop</a></nav><article><h1>How bees make honey</h1><p>Worker bees collect nectar "
           "from flowers and carry it back to the hive in a special stomach.</p><p>In the hive the nectar is "
           "passed between bees and fanned with their wings until most of the water evaporates.</p></article>"
           "<footer>All rights reserved.</footer></body></html>")
ROBOTS = "User-agent: lifecycle-data\nDisallow: /private\n\nUser-agent: *\nAllow: /\n"


class _Handler(BaseHTTPRequestHandler):
    robots_status = 200
    robots_tail = b""

    def log_message(self, *args):
        pass

    def _send(self, body: bytes, ctype: str, status: int = 200, length: bool = True):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path
        if path == "/robots.txt":
            if self.robots_status != 200:
                return self._send(b"oops", "text/plain", self.robots_status)
            return self._send(self.robots_tail or ROBOTS.encode(), "text/plain")
        if path in ("/article.html", "/private/secret.html"):
            return self._send(ARTICLE.encode(), "text/html; charset=utf-8")
        if path == "/plain.txt":
            return self._send("Plain text page about rivers.".encode(), "text/plain; charset=utf-8")
        if path == "/big.html":
            return self._send(b"<p>" + b"x" * 20000 + b"</p>", "text/html")
        if path == "/big-unsized.html":  # no Content-Length: the limit must stop the streamed read
            return self._send(b"<p>" + b"y" * 20000 + b"</p>", "text/html", length=False)
        if path == "/slow.html":
            time.sleep(1.5)
            return self._send(ARTICLE.encode(), "text/html")
        if path == "/data.bin":
            return self._send(b"\x00\x01", "application/octet-stream")
        if path == "/drip.html":  # a byte every 0.2 s: no single read times out
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            for _ in range(40):
                try:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.2)
            return
        if path.startswith("/go/"):  # /go/<n>/<host>: n more redirects, then to <host>'s article (n=p: private)
            _, _, n, host = path.split("/", 3)
            port = self.server.server_address[1]
            if n == "p":
                target = "/private/secret.html"
            else:
                target = f"/go/{int(n) - 1}/{host}" if int(n) > 0 else "/article.html"
            self.send_response(302)
            self.send_header("Location", f"http://{host}:{port}{target}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        return self._send(b"not found", "text/plain", 404)


def _serve(robots_status=200, robots_tail=b""):
    handler = type("H", (_Handler,), {"robots_status": robots_status, "robots_tail": robots_tail})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def site():
    server = _serve()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


OPTS = CrawlOptions(timeout=0.5, max_bytes=5000)


def test_crawl_rules(site):
    urls = [f"{site}/article.html", f"{site}/private/secret.html", f"{site}/plain.txt", f"{site}/big.html",
            f"{site}/big-unsized.html", f"{site}/slow.html", f"{site}/data.bin", f"{site}/missing", "ftp://x/y"]
    got = {item.where.replace(site, ""): item for item, _ in crawl(urls, OPTS)}
    art = got["/article.html"]
    assert art.error is None and "Worker bees collect nectar" in art.obj["text"]
    assert "Shop" not in art.obj["text"] and "All rights reserved" not in art.obj["text"]
    assert (got["/private/secret.html"].reason, got["/private/secret.html"].error) == \
        ("robots_disallowed", "disallowed by robots.txt")
    assert got["/plain.txt"].obj["text"] == "Plain text page about rivers."
    assert "over max_bytes=5000" in got["/big.html"].error
    assert "exceeds max_bytes=5000" in got["/big-unsized.html"].error
    assert "timed out" in got["/slow.html"].error
    assert "unsupported content type application/octet-stream" in got["/data.bin"].error
    assert got["/missing"].error == "HTTP 404" and got["/missing"].reason == "fetch_failed"
    assert got["ftp://x/y"].error == "not an http(s) URL"


def test_unreachable_robots_means_nothing_crawled():
    server = _serve(robots_status=503)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/article.html"
        (item, _), = list(crawl([url], OPTS))
        assert item.reason == "fetch_failed" and "robots.txt unreachable" in item.error
    finally:
        server.shutdown()
        server.server_close()


def test_prepare_from_urls(site, tmp_path):
    from lifecycle.data.prepare import PrepareConfig, run

    urls = tmp_path / "pages.urls"
    urls.write_text(f"# pages to crawl\n{site}/article.html\n{site}/private/secret.html\n{site}/missing\n")
    cfg = PrepareConfig(inputs=[str(urls), f"{site}/plain.txt"], validation_fraction=0, test_fraction=0,
                        save_hf=False, crawl_timeout=2.0)
    out = run(cfg, tmp_path / "web")
    rep = json.loads((out / "report.json").read_text())
    assert (rep["read"], rep["kept"]) == (4, 2)
    assert rep["dropped_by_reason"] == {"robots_disallowed": 1, "fetch_failed": 1}
    texts = [json.loads(x)["text"] for x in (out / "train.jsonl").read_text().splitlines()]
    assert texts[0].startswith("How bees make honey") and texts[1] == "Plain text page about rivers."
    assert all(i["sha256"] for i in rep["inputs"])


def test_deadline_cuts_a_server_that_drips():
    """Each read gets a byte within the per-read timeout; only the page deadline ends it."""
    server = _serve()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/drip.html"
        start = time.monotonic()
        (item, _), = list(crawl([url], CrawlOptions(timeout=0.5, deadline=1.0)))
        took = time.monotonic() - start
        assert item.reason == "fetch_failed" and "deadline=1.0s" in item.error
        assert took < 1.0 + 0.5 + 1.0  # deadline + one read timeout + slack
    finally:
        server.shutdown()
        server.server_close()


def test_redirects_stay_on_allowed_hosts(site):
    port = site.rsplit(":", 1)[1]
    same, away = f"{site}/go/2/127.0.0.1", f"{site}/go/1/localhost"
    got = {item.where: item for item, _ in crawl([same, away, f"{site}/go/9/127.0.0.1"], OPTS)}
    assert "Worker bees" in got[same].obj["text"]
    assert got[away].reason == "fetch_failed" and "redirect to localhost refused" in got[away].error
    assert "more than 5 redirects" in got[f"{site}/go/9/127.0.0.1"].error
    opts = CrawlOptions(timeout=0.5, max_bytes=5000, allow_hosts=("localhost",))
    (item, _), = list(crawl([away], opts))
    assert item.error is None and "Worker bees" in item.obj["text"]
    # robots.txt is read on the host a redirect reaches too
    (item, _), = list(crawl([f"http://127.0.0.1:{port}/go/p/localhost"], opts))
    assert item.reason == "fetch_failed" and "private/secret.html: disallowed by robots.txt" in item.error


def test_robots_txt_is_size_capped():
    """Rules past the cap are not read (RFC 9309 lets a crawler stop at 500 KiB): the page stays allowed."""
    tail = b"#" * 2000 + b"\nUser-agent: *\nDisallow: /article.html\n"
    server = _serve(robots_tail=tail)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/article.html"
        (item, _), = list(crawl([url], CrawlOptions(timeout=0.5, robots_max_bytes=1000)))
        assert item.error is None
        (item, _), = list(crawl([url], CrawlOptions(timeout=0.5)))
        assert item.reason == "robots_disallowed"
    finally:
        server.shutdown()
        server.server_close()
