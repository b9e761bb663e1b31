"""The one place for HTTP: sessions, timeouts, the disk cache, retries, the classification of
answers and file downloads. Beside it: connectors/errors.py (the error classes, re-exported here),
connectors/cache.py (what the disk cache keeps) and connectors/transport.py (the deadline and size
cap every API answer is read under).

Connectors never import requests or tenacity; they call `HttpClient.request_json` and get parsed
JSON back, or one of the `ProviderError` classes carrying what a person needs to act.
"""

from __future__ import annotations

import email.utils
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlsplit

import requests

from connectors import jsondecode
from connectors.cache import cached_session
# The error classes live in connectors/errors.py; they are re-exported here so that
# `from connectors.http import AuthError` keeps working for connectors and the command.
from connectors.errors import (
    AuthError,
    CircuitOpen,
    ProviderError,
    QuotaExhausted,
    RedirectRefused,
    ResponseError,
    RetriesExhausted,
    RetryableError,
    describe,
    request_id_of,
    summarize,
)
from connectors.transport import ACCEPT_ENCODING, MAX_BODY_BYTES, DeadlineAdapter

if TYPE_CHECKING:
    from tenacity import RetryCallState

log = logging.getLogger("pipeline.http")

MIN_RETRY_WAIT_S = 1.0  # a zero or past Retry-After is no hint: never retry instantly
MAX_RETRY_WAIT_S = 120.0
# Transport failures worth another attempt: refused or reset connections, timeouts (including our
# whole-request deadline), and bodies cut short (short of Content-Length or a broken chunk).
TRANSPORT_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError)


@dataclass
class HttpStats:
    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    throttle_wait_s: float = 0.0
    partial_errors: int = 0  # errors an API returned beside results (counted, not fatal)
    partial_reason: str | None = None  # set when a connector stopped early on purpose (a quota)
    warnings: list = field(default_factory=list)  # things a person should know, for the run log
    notes: dict = field(default_factory=dict)  # facts about the unit's run, for the run log


@dataclass(frozen=True)
class HttpSettings:
    connect_timeout_s: float = 10
    read_timeout_s: float = 60
    deadline_s: float = 300  # for the whole request: a read timeout alone lets a server trickle forever
    max_body_bytes: int = MAX_BODY_BYTES  # the deadline and this cap bound API answers, not downloads
    # A download (a bulk result: gigabytes, longer than any deadline) must instead keep its bytes
    # coming. None means the read timeout, which requests already applies to every socket read, so
    # for a streamed body it is an idle timeout: one quiet gap that long fails the download.
    download_idle_timeout_s: float | None = None
    max_attempts: int = 6
    max_total_wait_s: float = 600
    breaker_threshold: int = 5  # consecutive failed requests (attempts) that open the circuit
    cache_dir: Path | None = None  # None: no disk cache
    cache_ttl: timedelta = timedelta(hours=1)
    requests_per_second: float | None = None  # client-side pacing of network requests


def parse_retry_after(value: str | None, now: Callable[[], datetime]) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or HTTP-date); None when no hint."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - now()).total_seconds()
    return seconds if seconds > 0 else None


class Pacer:
    """The next free request slot of one credential. Accounts that share a credential (two Amazon
    marketplaces on one Creators API credential, two eBay marketplaces on one keyset) share one
    Pacer, so their units, run one after another, keep the credential's rate between them too."""

    def __init__(self):
        self.next_slot: float | None = None
        self.shared: dict = {}  # a provider's own pacing state of that credential (Shopify: the cost bucket)


class HttpClient:
    """A session per provider: timeouts, deadline, cache, retries, one classification of answers."""

    def __init__(
        self,
        provider: str,
        settings: HttpSettings,
        *,
        secret_headers: tuple[str, ...] = (),
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        clock: Callable[[], float] = time.monotonic,
        on_send: Callable[[requests.PreparedRequest], None] | None = None,
        pacer: Pacer | None = None,
    ):
        self.provider = provider
        self.settings = settings
        self.sleep = sleep
        self.now = now
        self.clock = clock
        self.stats = HttpStats()
        self.pacer = pacer or Pacer()
        self.consecutive_failures = 0
        self.on_send = on_send  # sees every network request first (a call budget may refuse it)
        self.session = self._session(secret_headers)
        self._prepared: dict[tuple, requests.PreparedRequest] = {}  # see _send_prepared

    def _session(self, secret_headers) -> requests.Session:
        cache_dir = self.settings.cache_dir
        if cache_dir is None:
            session = requests.Session()
        else:
            session = cached_session(cache_dir, self.settings.cache_ttl, secret_headers)
        # Only a plain session speaks http.client directly: the disk cache keeps urllib3's responses.
        adapter = DeadlineAdapter(self.settings.deadline_s, self.settings.max_body_bytes, self._before_send,
                                  direct=cache_dir is None)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.trust_env = False  # no proxy or .netrc credentials from the environment
        session.headers["Accept-Encoding"] = ACCEPT_ENCODING  # what either path decodes, whatever is installed
        return session

    def close(self) -> None:
        self.session.close()

    def _before_send(self, request) -> None:
        if self.on_send is not None:
            self.on_send(request)
        self._pace()

    def _pace(self) -> None:
        """Keep network requests at most `requests_per_second` apart (the provider's quota)."""
        rate = self.settings.requests_per_second
        if not rate:
            return
        now, slot = self.clock(), self.pacer.next_slot
        if slot is not None and now < slot:
            self.wait(slot - now, throttled=True)
            now = slot
        self.pacer.next_slot = now + 1.0 / rate

    def wait(self, seconds: float, *, throttled: bool = False) -> None:
        """Sleep through the injectable sleep and account for it."""
        if seconds <= 0:
            return
        if throttled:
            self.stats.throttle_wait_s += seconds
        self.sleep(seconds)

    def download(self, url: str, path: Path, *, what: str = "the download", next_step: str = "") -> Path:
        """Stream `url` into a new 0600 file at `path` and return the path, or raise a ResponseError.

        For a file handed back by an API on another host (a signed URL): a plain session with no
        credential and no cache, no redirect followed, no deadline or size cap, only the idle timeout.
        """
        host = urlsplit(url).hostname
        log.info("%s: downloading %s from %s", self.provider, what, host)
        idle_s = self.settings.download_idle_timeout_s
        idle_s = self.settings.read_timeout_s if idle_s is None else idle_s
        failed = f"downloading {what} from {host} failed"
        note = f"; {next_step}" if next_step else ""
        started = time.monotonic()
        try:
            with requests.Session() as session:
                session.trust_env = False  # no proxy or .netrc credentials from the environment
                adapter = DeadlineAdapter(None, None)  # streamed: no deadline, no size cap, urllib3's reads
                session.mount("https://", adapter)
                session.mount("http://", adapter)
                with session.get(url, stream=True, allow_redirects=False,
                                 timeout=(self.settings.connect_timeout_s, idle_s)) as response:
                    if response.status_code != 200:
                        raise ResponseError(self.provider, failed + note, status=response.status_code)
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    with os.fdopen(fd, "wb") as handle:
                        for chunk in response.iter_content(1 << 20):
                            handle.write(chunk)
        except requests.RequestException as exc:
            # requests words its errors with the whole URL, a signature included: name the host only.
            raise ResponseError(self.provider, f"{failed} ({type(exc).__name__}){note}") from None
        finally:
            self.stats.requests += 1
        log.info("%s: downloaded %s (%.0f MB) in %.1fs", self.provider, what, path.stat().st_size / 1e6,
                 time.monotonic() - started)
        return path

    def request_json(
        self,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        params: dict | None = None,
        data: Any = None,
        headers: dict | None = None,
        auth=None,
        check: Callable[[Any, requests.Response], None] | None = None,
        cache: bool = True,
    ) -> Any:
        """Send with retries and return the parsed JSON body, or raise a ProviderError."""
        request = (method, url, json_body, params, data, headers, auth, check, cache)
        try:  # nearly every request succeeds at once: tenacity only for the ones that do not
            return self._once(*request)
        except (RetryableError, *TRANSPORT_ERRORS) as exc:
            failed = exc
        # Retried outside the handler: what a later attempt raises is not chained to this failure
        return self._retry(failed, request)

    def _retry(self, failed: Exception, request: tuple) -> Any:
        """The retries after a first attempt that failed with `failed`: tenacity's first attempt
        raises it again, so its waits, stops and counts are as if it had made that attempt."""
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

        retrying = Retrying(retry=retry_if_exception_type((RetryableError, *TRANSPORT_ERRORS)),
                            stop=stop_after_attempt(self.settings.max_attempts) | self._stop_on_total_wait,
                            wait=self._wait, sleep=lambda seconds: self.sleep(seconds),
                            before_sleep=self._before_sleep, reraise=True)
        try:
            for attempt in retrying:
                with attempt:
                    if failed is not None:
                        exc, failed = failed, None
                        raise exc
                    return self._once(*request)
        except (RetryableError, *TRANSPORT_ERRORS) as exc:
            attempts, path = retrying.statistics.get("attempt_number", 1), urlsplit(request[1]).path
            raise RetriesExhausted(self.provider, f"gave up after {attempts} attempts on {path}: {describe(exc)}",
                                   status=getattr(exc, "status", None),
                                   request_id=getattr(exc, "request_id", None)) from None

    def _once(self, method, url, json_body, params, data, headers, auth, check, cache):
        if self.consecutive_failures >= self.settings.breaker_threshold:
            raise CircuitOpen(self.provider, f"circuit open after {self.consecutive_failures} failed requests in a "
                              "row; no more calls to this provider in this run")
        try:
            body = self._send(method, url, json_body, params, data, headers, auth, check, cache)
        except (RetryableError, *TRANSPORT_ERRORS):
            self.consecutive_failures += 1
            raise
        self.consecutive_failures = 0
        return body

    def _send(self, method, url, json_body, params, data, headers, auth, check, cache):
        kwargs = dict(json=json_body, params=params, data=data, headers=headers, auth=auth,
                      allow_redirects=False,
                      timeout=(self.settings.connect_timeout_s, self.settings.read_timeout_s))
        started = time.monotonic()
        if not self.settings.cache_dir:  # a plain session: writing runs never use the cache
            if params is None and data is None and not self.session.cookies:
                response = self._send_prepared(method, url, json_body, headers, auth, kwargs["timeout"])
            else:
                response = self.session.request(method, url, **kwargs)
        elif not cache:
            with self.session.cache_disabled():
                response = self.session.request(method, url, **kwargs)
        else:
            response = self.session.request(method, url, **kwargs)
        from_cache = bool(getattr(response, "from_cache", False))
        if from_cache:
            self.stats.cache_hits += 1
        else:
            self.stats.requests += 1
        log.debug("%s %s %s -> %s in %.2fs%s", self.provider, method, urlsplit(url).path,
                  response.status_code, time.monotonic() - started, " (cache)" if from_cache else "")
        return self._classify(response, check)

    def _send_prepared(self, method, url, json_body, headers, auth, timeout):
        """What `session.request` sends, from a copy of the session's settings prepared once for this
        method, URL and headers: requests merges every setting, hook and cookie again on each call,
        0.6 of the 0.8 ms of CPU a GraphQL POST costs (0.43 this way). Only while the session holds
        no cookie (a cookie set later takes the full path, which sends it)."""
        key = (method, url, tuple(headers.items()) if headers else ())
        template = self._prepared.get(key)
        if template is None:
            if len(self._prepared) >= 32:  # URLs that change from call to call (next links)
                self._prepared.clear()
            template = self._prepared[key] = self.session.prepare_request(
                requests.Request(method, url, headers=headers))
        prepared = template.copy()
        prepared.prepare_body(None, None, json_body)
        prepared.prepare_auth(auth)
        session = self.session
        return session.send(prepared, allow_redirects=False, timeout=timeout, stream=session.stream,
                            verify=session.verify, cert=session.cert, proxies=dict(session.proxies))

    def _classify(self, response, check):
        status = response.status_code
        rid = request_id_of(response)
        if 300 <= status < 400:
            target = urlsplit(response.headers.get("Location", "")).hostname or "an unknown host"
            raise RedirectRefused(self.provider, f"the API redirected to {target}; redirects are "
                                  "never followed so that credentials stay with the configured host",
                                  status=status, request_id=rid)
        body = None
        try:
            body = jsondecode.loads(response.content)
        except ValueError:
            pass
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(response.headers.get("Retry-After"), self.now)
            if check is not None and body is not None and status == 429:
                try:
                    check(body, response)
                except RetryableError as exc:  # the body may carry a better hint (GraphQL cost)
                    exc.status = status
                    exc.retry_after = exc.retry_after if exc.retry_after is not None else retry_after
                    raise
                except QuotaExhausted:
                    raise
                except ProviderError:
                    pass  # whatever the body says, a 429 is worth another attempt
            raise RetryableError(self.provider, summarize(body) or "the server is unavailable or throttling",
                                 retry_after=retry_after, throttled=status == 429, status=status, request_id=rid)
        if status in (401, 403):
            raise AuthError(self.provider, "the credentials were refused: check the access token and "
                            "its permissions" + _suffix(summarize(body)), status=status, request_id=rid)
        if status >= 400:
            raise ResponseError(self.provider, "the request was rejected" + _suffix(summarize(body)),
                                status=status, request_id=rid)
        if body is None:
            raise RetryableError(self.provider, "the answer was not valid JSON (a maintenance page or a "
                                 "cut-short body)", status=status, request_id=rid)
        if check is not None:
            check(body, response)
        return body

    # tenacity hooks -----------------------------------------------------------------------
    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hint = getattr(exc, "retry_after", None)
        if hint is not None:
            return min(max(hint, MIN_RETRY_WAIT_S), MAX_RETRY_WAIT_S)
        from tenacity.wait import wait_exponential_jitter

        return max(MIN_RETRY_WAIT_S, wait_exponential_jitter(initial=1, max=60, jitter=1)(state))

    def _stop_on_total_wait(self, state: RetryCallState) -> bool:
        return state.idle_for + (state.upcoming_sleep or 0) > self.settings.max_total_wait_s

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception()
        self.stats.retries += 1
        if getattr(exc, "throttled", False):
            self.stats.throttle_wait_s += state.upcoming_sleep
        log.info("%s: retrying in %.1fs after %s", self.provider, state.upcoming_sleep, describe(exc))


def _suffix(text: str | None) -> str:
    return f": {text}" if text else ""


class HostBoundHeaderAuth(requests.auth.AuthBase):
    """Sets a credential header only on requests to the configured host.

    An absolute URL handed back by an API (a next link, a download link) on another host gets no
    credential; redirects are refused separately, so the header can never follow one.
    """

    def __init__(self, base_url: str, header: str, value_fn: Callable[[], str]):
        self.netloc = urlsplit(base_url).netloc.lower()
        self.header = header
        self.value_fn = value_fn

    def __call__(self, request):
        if urlsplit(request.url).netloc.lower() == self.netloc:
            request.headers[self.header] = self.value_fn()
        return request
