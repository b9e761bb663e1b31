"""The HTTP layer: retries, Retry-After, classification, redirects, the cache and its secrets, and
streamed downloads (idle timeout, no deadline or size cap) against a loopback file host."""

from __future__ import annotations

import base64
import os
import sqlite3
import stat
import threading
import time
import traceback
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
import requests
import requests_cache.models.response as cached_response_module
import requests_cache.policy.actions as cache_actions_module
import responses

from connectors.http import (
    AuthError,
    HostBoundHeaderAuth,
    HttpClient,
    HttpSettings,
    RedirectRefused,
    ResponseError,
    RetriesExhausted,
)

URL = "https://test-shop.myshopify.com/admin/api/2026-10/graphql.json"
NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=timezone.utc)
TOKEN = "shpat_test_cache_token_value"


def client(clock, **settings) -> HttpClient:
    return HttpClient("shopify", HttpSettings(**settings), sleep=clock.sleep, now=lambda: NOW,
                      secret_headers=("X-Shopify-Access-Token",))


def auth():
    return HostBoundHeaderAuth("https://test-shop.myshopify.com", "X-Shopify-Access-Token", lambda: TOKEN)


@responses.activate
def test_429_then_200_waits_retry_after_seconds(clock):
    responses.post(URL, status=429, headers={"Retry-After": "7"}, json={"errors": "Throttled"})
    responses.post(URL, json={"data": {"ok": 1}})
    http = client(clock)
    assert http.request_json("POST", URL, json_body={}) == {"data": {"ok": 1}}
    assert clock.sleeps == [7]
    assert len(responses.calls) == 2
    assert http.stats.retries == 1 and http.stats.requests == 2


@responses.activate
def test_retry_after_as_http_date_is_honoured(clock):
    when = format_datetime(NOW + timedelta(seconds=30), usegmt=True)
    responses.post(URL, status=503, headers={"Retry-After": when})
    responses.post(URL, json={"data": {}})
    client(clock).request_json("POST", URL, json_body={})
    assert clock.sleeps == [30]


@pytest.mark.parametrize("value", ["0", format_datetime(NOW - timedelta(minutes=5), usegmt=True)])
@responses.activate
def test_zero_or_past_retry_after_is_no_hint_and_keeps_a_minimum_wait(clock, value):
    responses.post(URL, status=429, headers={"Retry-After": value})
    responses.post(URL, json={"data": {}})
    client(clock).request_json("POST", URL, json_body={})
    assert len(clock.sleeps) == 1 and clock.sleeps[0] >= 1.0


@responses.activate
def test_5xx_forever_gives_up_after_the_attempt_bound(clock):
    responses.post(URL, status=500)
    with pytest.raises(RetriesExhausted, match="gave up after 4 attempts"):
        client(clock, max_attempts=4).request_json("POST", URL, json_body={})
    assert len(responses.calls) == 4
    assert len(clock.sleeps) == 3
    assert all(1.0 <= wait <= 61 for wait in clock.sleeps)  # backoff with jitter, capped at 60 s (+1 jitter)


@responses.activate
def test_total_wait_is_bounded(clock):
    responses.post(URL, status=503, headers={"Retry-After": "100"})
    with pytest.raises(RetriesExhausted):
        client(clock, max_total_wait_s=250).request_json("POST", URL, json_body={})
    assert sum(clock.sleeps) <= 250
    assert len(responses.calls) == 3


@pytest.mark.parametrize("status, error", [(401, AuthError), (403, AuthError), (404, ResponseError), (400, ResponseError)])
@responses.activate
def test_auth_and_client_errors_are_not_retried(clock, status, error):
    responses.post(URL, status=status, json={"errors": "nope"})
    with pytest.raises(error, match=f"HTTP {status}"):
        client(clock).request_json("POST", URL, json_body={})
    assert len(responses.calls) == 1 and clock.sleeps == []


@responses.activate
def test_an_error_after_a_retry_is_not_chained_to_the_first_failure(clock):
    # The first failure's words may be a library's (a URL with its query): a traceback of the
    # second attempt's error must not carry it along as "during handling of the above".
    responses.post(URL, body=requests.ConnectionError(f"{URL}?signature=do-not-log refused"))
    responses.post(URL, status=401, json={"errors": "nope"})
    with pytest.raises(AuthError, match="HTTP 401") as failed:
        client(clock).request_json("POST", URL, json_body={})
    assert failed.value.__context__ is None and "do-not-log" not in "".join(traceback.format_exception(failed.value))
    assert len(responses.calls) == 2


@responses.activate
def test_redirect_is_refused_and_the_other_host_never_called(clock):
    responses.post(URL, status=302, headers={"Location": "https://evil.example/steal"})
    other = responses.post("https://evil.example/steal", json={})
    with pytest.raises(RedirectRefused, match="evil.example"):
        client(clock).request_json("POST", URL, json_body={}, auth=auth())
    assert other.call_count == 0


@responses.activate
def test_credentials_go_only_to_the_configured_host(clock):
    responses.get("https://files.example.com/result.jsonl", json={"ok": True})
    responses.post(URL, json={"data": {}})
    http = client(clock)
    http.request_json("GET", "https://files.example.com/result.jsonl", auth=auth())
    http.request_json("POST", URL, json_body={}, auth=auth())
    assert "X-Shopify-Access-Token" not in responses.calls[0].request.headers
    assert responses.calls[1].request.headers["X-Shopify-Access-Token"] == TOKEN


@responses.activate
def test_a_post_sends_what_session_request_would_send(clock):
    """The GraphQL POST is sent from a request prepared once and copied (requests' per-call merging
    skipped): method, URL, every header and the body are what session.request prepares."""
    import requests

    responses.post(URL, json={"data": {"ok": 1}})
    sent = []
    http = HttpClient("shopify", HttpSettings(), sleep=clock.sleep, now=lambda: NOW, on_send=sent.append)
    body = {"query": "query { shop { name } }", "variables": {"first": 10, "after": "é"}}
    for _ in range(2):
        assert http.request_json("POST", URL, json_body=body, auth=auth(), headers={"X-Extra": "1"}) == {"data": {"ok": 1}}
    expected = http.session.prepare_request(requests.Request("POST", URL, json=body, auth=auth(), headers={"X-Extra": "1"}))
    for request in sent:
        assert (request.method, request.url, request.body) == (expected.method, expected.url, expected.body)
        assert dict(request.headers) == dict(expected.headers)
        assert request.headers["X-Shopify-Access-Token"] == TOKEN
    assert sent[0] is not sent[1] and http.stats.requests == 2


@responses.activate
def test_a_cookie_the_server_sets_goes_with_the_next_request(clock):
    responses.post(URL, json={"data": {"ok": 1}}, headers={"Set-Cookie": "session=abc; Path=/"})
    responses.post(URL, json={"data": {"ok": 2}})
    http = client(clock)
    http.request_json("POST", URL, json_body={})
    assert http.request_json("POST", URL, json_body={}) == {"data": {"ok": 2}}
    assert "Cookie" not in responses.calls[0].request.headers
    assert responses.calls[1].request.headers["Cookie"] == "session=abc"


@responses.activate
def test_non_json_200_is_retried(clock):
    responses.post(URL, body="<html>maintenance</html>", status=200)
    responses.post(URL, json={"data": {}})
    assert client(clock).request_json("POST", URL, json_body={}) == {"data": {}}
    assert len(responses.calls) == 2


@responses.activate
def test_cache_hit_makes_no_call_and_stores_no_secret(clock, tmp_path):
    responses.post(URL, json={"data": {"products": []}})
    http = client(clock, cache_dir=tmp_path / "shopify")
    for _ in range(2):
        assert http.request_json("POST", URL, json_body={"query": "q"}, auth=auth()) == {"data": {"products": []}}
    assert len(responses.calls) == 1 and http.stats.cache_hits == 1
    http.close()
    database = tmp_path / "shopify" / "http_cache.sqlite"
    assert sqlite3.connect(database).execute("SELECT count(*) FROM responses").fetchone()[0] == 1
    stored = b"".join(p.read_bytes() for p in (tmp_path / "shopify").iterdir())
    for form in (TOKEN.encode(), base64.b64encode(TOKEN.encode()), quote(TOKEN).encode()):
        assert form not in stored
    assert stat.S_IMODE((tmp_path / "shopify").stat().st_mode) == 0o700


@responses.activate
def test_a_rotated_token_still_hits_the_cache(clock, tmp_path):
    responses.post(URL, json={"data": {}})
    http = client(clock, cache_dir=tmp_path / "c")
    http.request_json("POST", URL, json_body={"query": "q"}, auth=auth())
    rotated = HostBoundHeaderAuth("https://test-shop.myshopify.com", "X-Shopify-Access-Token", lambda: "shpat_test_other")
    http.request_json("POST", URL, json_body={"query": "q"}, auth=rotated)
    assert len(responses.calls) == 1


@responses.activate
def test_error_bodies_are_never_cached(clock, tmp_path):
    responses.post(URL, json={"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]})
    http = client(clock, cache_dir=tmp_path / "c")
    for _ in range(2):
        http.request_json("POST", URL, json_body={"query": "q"})
    assert len(responses.calls) == 2 and http.stats.cache_hits == 0


@responses.activate
def test_cache_expires_so_a_later_run_sees_changes(clock, tmp_path, monkeypatch):
    responses.post(URL, json={"data": {"v": 1}})
    http = client(clock, cache_dir=tmp_path / "c", cache_ttl=timedelta(hours=1))
    assert http.request_json("POST", URL, json_body={"query": "q"}) == {"data": {"v": 1}}
    responses.replace(responses.POST, URL, json={"data": {"v": 2}})
    assert http.request_json("POST", URL, json_body={"query": "q"}) == {"data": {"v": 1}}  # within the hour
    later = datetime.now(timezone.utc) + timedelta(hours=1, minutes=1)
    monkeypatch.setattr(cached_response_module, "utcnow", lambda: later)
    monkeypatch.setattr(cache_actions_module, "utcnow", lambda: later)
    assert http.request_json("POST", URL, json_body={"query": "q"}) == {"data": {"v": 2}}
    assert len(responses.calls) == 2


# -- downloads ---------------------------------------------------------------------------------
SIGNED_PATH = "/bulk/result.jsonl?X-Goog-Signature=sig-do-not-log&X-Goog-Credential=cred-do-not-log"
RESUMES = "the next run resumes the same operation"


@contextmanager
def file_host(pieces: list[bytes], *, gap_s: float = 0.0, stall: bool = False, status: int = 200):
    """A loopback file host: sends `pieces` `gap_s` apart, then with `stall` holds the connection open
    sending nothing (its Content-Length promises one byte more). Yields the signed URL and a hit list."""
    hits: list[str] = []
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            hits.append(self.path)
            self.send_response(status)
            if status != 200:
                self.send_header("Location", "http://127.0.0.2:9/elsewhere")
                self.send_header("Content-Length", "0")
                return self.end_headers()
            self.send_header("Content-Length", str(sum(map(len, pieces)) + stall))
            self.end_headers()
            try:
                for piece in pieces:
                    self.wfile.write(piece)
                    release.wait(gap_s)
                if stall:
                    release.wait(10)
            except OSError:
                pass  # the client gave up (a deadline, the size cap): nothing left to serve

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{SIGNED_PATH}", hits
    finally:
        release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_download_outlasts_the_request_deadline_while_bytes_keep_coming(clock, tmp_path):
    pieces = [os.urandom(64 * 1024) for _ in range(15)]  # 0.1 s apart: 1.5 s against a 0.5 s deadline
    http = client(clock, deadline_s=0.5, download_idle_timeout_s=0.3, max_attempts=1)
    with file_host(pieces, gap_s=0.1) as (url, hits):
        started = time.monotonic()
        path = http.download(url, tmp_path / "result.jsonl")
        assert time.monotonic() - started > 1.0 and http.stats.requests == 1
        with pytest.raises(RetriesExhausted, match="Timeout"):  # the same body as an API answer: too slow
            http.request_json("GET", url)
    assert path.read_bytes() == b"".join(pieces)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(hits) == 2


def test_a_download_is_held_to_neither_the_size_cap_nor_the_cache(clock, tmp_path):
    body = b'{"id": "gid://shopify/Product/1"}\n' * 1000
    http = client(clock, max_body_bytes=1024, max_attempts=1, cache_dir=tmp_path / "cache")
    with file_host([body]) as (url, hits):
        with pytest.raises(RetriesExhausted, match="ConnectionError"):  # as an API answer: too large
            http.request_json("GET", url)
        for _ in range(2):
            assert http.download(url, tmp_path / "result.jsonl").read_bytes() == body
    assert len(hits) == 3 and http.stats.cache_hits == 0  # both downloads reached the host


def test_a_stalled_download_fails_after_the_idle_timeout_naming_only_the_host(clock, tmp_path):
    http = client(clock, download_idle_timeout_s=0.3, deadline_s=30)
    with file_host([b'{"id": "gid://shopify/Product/1"}\n'], stall=True) as (url, _):
        started = time.monotonic()
        with pytest.raises(ResponseError) as failure:
            http.download(url, tmp_path / "result.jsonl", what="the bulk result", next_step=RESUMES)
        assert 0.3 <= time.monotonic() - started < 1.5
    message = str(failure.value)
    assert message.startswith("shopify: downloading the bulk result from 127.0.0.1 failed") and RESUMES in message
    assert "Signature" not in message and "do-not-log" not in message and "/bulk/" not in message
    assert failure.value.__cause__ is None and failure.value.__suppress_context__  # no requests error behind it
    assert http.stats.requests == 1


def test_a_download_never_follows_a_redirect(clock, tmp_path):
    http = client(clock)
    with file_host([], status=302) as (url, hits):
        with pytest.raises(ResponseError, match=r"from 127\.0\.0\.1 failed; " + RESUMES) as failure:
            http.download(url, tmp_path / "result.jsonl", next_step=RESUMES)
    assert failure.value.status == 302 and len(hits) == 1
    assert not (tmp_path / "result.jsonl").exists()
