"""How an API answer comes off the wire: read whole, under a wall-clock deadline and a size cap,
before anything parses it. A read timeout alone lets a server trickle one byte a minute forever.

Files an API hands back (a bulk result: gigabytes, longer than any deadline) are not read here but
streamed to disk by `HttpClient.download`, which only asks that their bytes keep coming.

`DeadlineAdapter.exchange` sends one request. For a plain session (no disk cache, no proxy, no
client certificate, a body of bytes) it speaks HTTP/1.1 through the standard library's
`http.client` on its own keep-alive connections: requests over urllib3 cost about 1.4 ms more CPU
a request than that (a 130 KB GraphQL page: urllib3's pool, response and chunked reads, requests'
response building), which was a tenth of our CPU a product when paging a shop. Everything else
(the disk cache, which keeps urllib3's response, a proxy, a streamed download) goes through
requests' own `HTTPAdapter.send`. Either way the caller gets a `requests.Response` and the
errors requests raises (`requests.ConnectionError`, `requests.Timeout` and their kin), so retries
and classification do not change. Tests mock `exchange` (tests/conftest.py sets `responses`'s
target to it), so the deadline, the size cap and the send hook run under every mocked answer too.
"""

from __future__ import annotations

import http.client
import select
import ssl
import threading
import time
import zlib
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.exceptions import ChunkedEncodingError, ConnectTimeout, ContentDecodingError, ReadTimeout, SSLError
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers

MAX_BODY_BYTES = 256 * 1024 * 1024
READ_SIZE = 256 * 1024  # at most one socket read each: the deadline is checked between them
IDLE_PER_HOST = 4
ACCEPT_ENCODING = "gzip, deflate"  # what the direct path decodes; sessions send this (http.py)
# A request that fails on a reused keep-alive connection before any answer arrives: the server had
# closed it while it sat idle. Sent once more on a fresh connection, as a browser would.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class DeadlineAdapter(HTTPAdapter):
    """Reads every body in full under a wall-clock deadline and a size cap.

    `direct`: plain requests go through `http.client` (module docstring); False for a session whose
    responses must be urllib3's (the disk cache keeps them). A streamed request (`stream=True`: a
    download) is returned unread, held to neither the deadline nor the cap.
    """

    def __init__(self, deadline_s: float | None, max_bytes: int | None = MAX_BODY_BYTES, before_send=None,
                 *, direct: bool = False):
        super().__init__()
        self.deadline_s = deadline_s
        self.max_bytes = max_bytes
        self.before_send = before_send  # called for network requests only, never for cache hits
        self.direct = direct
        self._idle: dict[tuple, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._contexts: dict = {}

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        if self.before_send is not None:
            self.before_send(request)
        started = time.monotonic()
        response = self.exchange(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies)
        if stream or response._content_consumed:
            if not stream and self.max_bytes is not None and len(response.content) > self.max_bytes:
                raise requests.ConnectionError(f"response larger than {self.max_bytes} bytes")
            return response
        chunks, size = [], 0
        try:
            for chunk in response.iter_content(64 * 1024):
                chunks.append(chunk)
                size += len(chunk)
                self._check(started, size)
        except BaseException:
            response.close()
            raise
        response._content = b"".join(chunks)
        response._content_consumed = True
        return response

    def exchange(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        """One request on the wire: the answer, read whole by the direct path, else unread (send reads it)."""
        body = request.body
        if (stream or not self.direct or proxies or cert or not isinstance(body, (bytes, str, type(None)))
                or not (timeout is None or isinstance(timeout, (int, float, tuple)))):
            return super().send(request, stream=True, timeout=timeout, verify=verify, cert=cert, proxies=proxies)
        return self._direct(request, body.encode("utf-8") if isinstance(body, str) else body, timeout, verify)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()
        super().close()

    def _check(self, started: float, size: int) -> None:
        if self.deadline_s is not None and time.monotonic() - started > self.deadline_s:
            raise requests.Timeout(f"response took longer than the {self.deadline_s:g}s deadline")
        if self.max_bytes is not None and size > self.max_bytes:
            raise requests.ConnectionError(f"response larger than {self.max_bytes} bytes")

    # the direct path ------------------------------------------------------------------------
    def _direct(self, request, body: bytes | None, timeout, verify) -> requests.Response:
        parts = urlsplit(request.url)
        scheme, host = parts.scheme.lower(), parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        connect_s, read_s = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        key = (scheme, host, port, verify if isinstance(verify, (bool, str)) else repr(verify))
        where = f"{host}:{port}"
        started = time.monotonic()
        for attempt in (1, 2):
            connection, reused = self._checkout(key, scheme, host, port, verify)
            try:
                if connection.sock is None:
                    connection.timeout = connect_s
                    try:
                        connection.connect()
                    except TimeoutError:
                        raise ConnectTimeout(f"connecting to {where} timed out") from None
                connection.sock.settimeout(read_s)
                connection.request(request.method, request.path_url, body=body, headers=request.headers)
                answer = connection.getresponse()
            except _STALE as exc:
                connection.close()
                if reused and attempt == 1:
                    continue
                raise requests.ConnectionError(f"connection to {where} lost: {type(exc).__name__}") from None
            except BaseException as exc:
                connection.close()
                raise _mapped(exc, where) from None
            break
        try:
            headers = _headers(answer)
            content = self._read(answer, headers.get("Content-Encoding", ""), started)
        except BaseException as exc:
            connection.close()
            raise _mapped(exc, where) from None
        if answer.will_close:
            connection.close()
        else:
            self._checkin(key, connection)
        return self._response(request, answer, headers, content)

    def _read(self, answer: http.client.HTTPResponse, encoding: str, started: float) -> bytes:
        decoder = _decoder(encoding)
        chunks, size = [], 0
        while True:
            chunk = answer.read1(READ_SIZE)
            if not chunk:
                break
            if decoder is not None:
                chunk = decoder.decompress(chunk, (self.max_bytes or 0) - size + 1 if self.max_bytes else 0)
            chunks.append(chunk)
            size += len(chunk)
            self._check(started, size)
        if answer.length:  # Content-Length promised more than came: http.client's read1 does not say so
            raise ChunkedEncodingError(f"the body ended {answer.length} bytes short of its Content-Length")
        answer.close()  # read to the end: the connection may carry the next request
        if decoder is not None:
            chunks.append(decoder.flush())
            self._check(started, size + len(chunks[-1]))
        return b"".join(chunks)

    def _response(self, request, answer, headers, content: bytes) -> requests.Response:
        response = requests.Response()
        response.status_code = answer.status
        response.reason = answer.reason
        response.headers = headers
        response.url = request.url
        response.request = request
        response.connection = self
        response.encoding = get_encoding_from_headers(headers)
        response.raw = _Raw(answer if "Set-Cookie" in headers else None)
        response._content = content
        response._content_consumed = True
        return response

    def _checkout(self, key, scheme, host, port, verify) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            idle = self._idle.get(key)
            while idle:
                connection = idle.pop()
                if not _dropped(connection.sock):
                    return connection, True
                connection.close()
        if scheme == "https":
            return http.client.HTTPSConnection(host, port, context=self._context(verify)), False
        if scheme != "http":
            raise requests.exceptions.InvalidSchema(f"no connection for {scheme!r} URLs")
        return http.client.HTTPConnection(host, port), False

    def _checkin(self, key, connection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < IDLE_PER_HOST:
                idle.append(connection)
                return
        connection.close()

    def _context(self, verify) -> ssl.SSLContext:
        """A TLS context as requests would verify with: certifi's CA bundle unless `verify` names one."""
        context = self._contexts.get(verify)
        if context is None:
            if verify is False:
                context = ssl.create_default_context()
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            else:
                import certifi  # requests' own CA bundle (a dependency of requests)

                bundle = verify if isinstance(verify, str) else certifi.where()
                context = ssl.create_default_context(**({"capath": bundle} if _is_dir(bundle) else {"cafile": bundle}))
            self._contexts[verify] = context
        return context


class _Raw:
    """What requests reads of a response's `raw` after the adapter: the http.client answer, only
    when it sets a cookie (requests then files it in the session's jar)."""

    def __init__(self, original):
        self._original_response = original

    def close(self) -> None:
        pass


def _headers(answer: http.client.HTTPResponse) -> CaseInsensitiveDict:
    headers = CaseInsensitiveDict()
    for name, value in answer.getheaders():
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _decoder(encoding: str):
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip", "deflate"):
        return zlib.decompressobj(zlib.MAX_WBITS | 32)  # a gzip or zlib header, either
    raise ContentDecodingError(f"the answer's Content-Encoding {encoding!r} was not asked for ({ACCEPT_ENCODING})")


def _dropped(sock) -> bool:
    """Whether an idle keep-alive connection was closed by the server (readable: EOF or junk)."""
    if sock is None:
        return True
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def _mapped(exc: BaseException, where: str) -> BaseException:
    """requests' exception for what http.client, ssl or the socket raised (the host, never the URL)."""
    if isinstance(exc, requests.RequestException):
        return exc
    if isinstance(exc, TimeoutError):
        return ReadTimeout(f"reading from {where} timed out")
    if isinstance(exc, ssl.SSLError):
        return SSLError(f"TLS with {where} failed: {exc.__class__.__name__}")
    if isinstance(exc, http.client.IncompleteRead):
        return ChunkedEncodingError(f"the body from {where} was cut short")
    if isinstance(exc, zlib.error):
        return ContentDecodingError(f"the body from {where} did not decompress")
    if isinstance(exc, (OSError, http.client.HTTPException)):
        return requests.ConnectionError(f"connection to {where} failed: {type(exc).__name__}")
    return exc


def _is_dir(path: str) -> bool:
    import os

    return os.path.isdir(path)
