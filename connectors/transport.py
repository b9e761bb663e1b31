"""How an API answer comes off the wire: read whole, under a wall-clock deadline and a size cap,
before anything parses it. A read timeout alone lets a server trickle one byte a minute forever.

Files an API hands back (a bulk result: gigabytes, longer than any deadline) are not read here but
streamed to disk by `HttpClient.download`, which only asks that their bytes keep coming.

`DeadlineAdapter.exchange` sends one request. For a plain session (no disk cache, no proxy, no
client certificate, a body of bytes) it speaks HTTP/1.1 through the standard library's
`http.client` on its own keep-alive connections: requests over urllib3 cost about 1 ms more CPU
a request than that (a 100 KB GraphQL page: urllib3's pool, response and chunked reads, requests'
response building), 12 to 18 us a product of a paging crawl (BENCHMARKS.md). Everything else
(the disk cache, which keeps urllib3's response, a proxy, a streamed download) goes through
requests' own `HTTPAdapter.send`. Either way the caller gets a `requests.Response` and the
errors requests raises (`requests.ConnectionError`, `requests.Timeout` and their kin), so retries
and classification do not change. Tests mock `exchange` (tests/conftest.py sets `responses`'s
target to it), so the deadline, the size cap and the send hook run under every mocked answer too.
"""

from __future__ import annotations

import http.client
import os
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
from requests.utils import DEFAULT_CA_BUNDLE_PATH, get_encoding_from_headers

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
        self._closes = 0  # a connection out when the adapter was closed is closed when it comes back
        self._lock = threading.Lock()
        self._contexts: dict = {}

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        if self.before_send is not None:
            self.before_send(request)
        started = time.monotonic()
        response = self.exchange(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies)
        if stream:
            return response
        if response._content_consumed:  # read by the direct path (or a mock) under the same rules
            self._check(started, len(response.content))
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
            self._closes += 1
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
        default_port = 443 if scheme == "https" else 80
        port = parts.port or default_port
        connect_s, read_s = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        key = (scheme, host, port, verify if isinstance(verify, (bool, str)) else repr(verify))
        where = f"{host}:{port}"
        head = _request_head(request, host, None if port == default_port else port, body)
        started = time.monotonic()
        closes = self._closes
        for attempt in (1, 2):
            connection, reused = self._checkout(key, scheme, host, port, verify)
            answer = None
            try:
                if connection.sock is None:
                    connection.timeout = connect_s
                    try:
                        connection.connect()
                    except TimeoutError:
                        raise ConnectTimeout(f"connecting to {where} timed out") from None
                connection.sock.settimeout(read_s)
                connection.sock.sendall(head + body if body else head)
                answer = http.client.HTTPResponse(connection.sock, method=request.method)
                answer.begin()
            except _STALE as exc:
                _discard(connection, answer)
                if reused and attempt == 1:
                    if self.before_send is not None:  # a request again: the budget and pacing see it
                        self.before_send(request)
                    continue
                lost = requests.ConnectionError(f"connection to {where} lost: {type(exc).__name__}")
                raise _mapped(lost, where) from None
            except BaseException as exc:
                _discard(connection, answer)
                raise _mapped(exc, where) from None
            break
        try:
            headers = _headers(answer)
            content = self._read(answer, headers.get("Content-Encoding", ""), started)
        except BaseException as exc:
            _discard(connection, answer)
            raise _mapped(exc, where) from None
        if answer.will_close:
            connection.close()
        else:
            self._checkin(key, connection, closes)
        return self._response(request, answer, headers, content)

    def _read(self, answer: http.client.HTTPResponse, encoding: str, started: float) -> bytes:
        lengths = answer.msg.get_all("Content-Length") or ()
        if len(lengths) > 1 or "," in (lengths[0] if lengths else ""):
            if len({value.strip() for length in lengths for value in length.split(",")}) > 1:
                raise requests.ConnectionError("the answer has conflicting Content-Length headers")
        encoding = encoding.strip().lower()
        decoder = None if encoding in ("", "identity") else _Inflater(encoding)
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
            chunks.append(decoder.finish())
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

    def _checkin(self, key, connection, closes: int) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < IDLE_PER_HOST and closes == self._closes:
                idle.append(connection)
                return
        connection.close()

    def _context(self, verify) -> ssl.SSLContext:
        """A TLS context as requests would verify with: its CA bundle (certifi's) unless `verify` names one."""
        context = self._contexts.get(verify)
        if context is None:
            if verify is False:
                context = ssl.create_default_context()
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            else:
                bundle = verify if isinstance(verify, str) else DEFAULT_CA_BUNDLE_PATH
                context = ssl.create_default_context(**({"capath": bundle} if os.path.isdir(bundle) else {"cafile": bundle}))
            self._contexts[verify] = context
        return context


class _Raw:
    """What requests reads of a response's `raw` after the adapter: the http.client answer, only
    when it sets a cookie (requests then files it in the session's jar)."""

    def __init__(self, original):
        self._original_response = original

    def close(self) -> None:
        pass


def _request_head(request, host: str, port: int | None, body: bytes | None) -> bytes:
    """The request line and headers as http.client would write them, in one piece (with the body:
    one send and one segment), refused if a header holds a line break (http.client's putheader
    check, which costs as much as the rest of the request)."""
    method, path = request.method, request.path_url
    if not method.isalpha() or any(c in path for c in " \r\n\t"):
        raise requests.exceptions.InvalidURL("a method or path with a space or line break cannot be sent")
    headers = request.headers
    lines = [f"{method} {path} HTTP/1.1"]
    if "Host" not in headers:
        host = f"[{host}]" if ":" in host else host
        lines.append(f"Host: {host}:{port}" if port else f"Host: {host}")
    pairs = [(name, value if isinstance(value, str) else value.decode("latin-1")) for name, value in headers.items()]
    lines += [f"{name}: {value}" for name, value in pairs]
    if body and "Content-Length" not in headers:
        lines.append(f"Content-Length: {len(body)}")
    text = "\r\n".join(lines)
    if text.count("\n") != len(lines) - 1 or text.count("\r") != len(lines) - 1:
        # An auth hook sets its header after requests' own check: a credential with a line break
        # would split the head. Named by header, never by value.
        name = next(name for name, value in pairs if any(c in name + value for c in "\r\n"))
        raise requests.exceptions.InvalidHeader(f"the {name} header holds a line break; check the value it is "
                                                "set from (a credential with a trailing newline?)")
    return (text + "\r\n\r\n").encode("latin-1")


def _headers(answer: http.client.HTTPResponse) -> CaseInsensitiveDict:
    headers = CaseInsensitiveDict()
    for name, value in answer.getheaders():
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


class _Inflater:
    """A gzip or deflate body as urllib3 decodes one: every gzip member, deflate zlib-wrapped or
    raw; a stream that ends early is an error. At most `limit` bytes out of each call (the rest of
    its input is left unread: the caller's size cap has then been passed)."""

    def __init__(self, encoding: str):
        if encoding not in ("gzip", "x-gzip", "deflate"):
            raise ContentDecodingError(f"the answer's Content-Encoding {encoding!r} was not asked for ({ACCEPT_ENCODING})")
        self.gzip, self.fed = encoding != "deflate", False
        self.decoder = zlib.decompressobj(16 + zlib.MAX_WBITS if self.gzip else zlib.MAX_WBITS)

    def decompress(self, data: bytes, limit: int) -> bytes:
        first, self.fed = not self.fed, True
        try:
            out = self.decoder.decompress(data, limit)
        except zlib.error:
            if self.gzip or not first:
                raise
            self.decoder = zlib.decompressobj(-zlib.MAX_WBITS)  # deflate without the zlib wrapper
            out = self.decoder.decompress(data, limit)
        while self.gzip and self.decoder.eof and self.decoder.unused_data and (not limit or len(out) < limit):
            rest, self.decoder = self.decoder.unused_data, zlib.decompressobj(16 + zlib.MAX_WBITS)
            out += self.decoder.decompress(rest, limit - len(out) if limit else 0)
        return out

    def finish(self) -> bytes:
        tail = self.decoder.flush()
        if self.fed and not self.decoder.eof:
            raise ContentDecodingError("the compressed body ended before its end")
        return tail


def _discard(connection: http.client.HTTPConnection, answer: http.client.HTTPResponse | None) -> None:
    """Close a connection that failed, its answer's reader too (it holds the socket open)."""
    if answer is not None:
        answer.close()
    connection.close()


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
    """requests' exception for what http.client, ssl or the socket raised (the host, never the URL),
    or the direct path's own (the deadline, the cap, a body cut short), marked `quotable`:
    connectors.errors.describe may give its words, which are all ours."""
    if not isinstance(exc, Exception):
        return exc
    if isinstance(exc, requests.RequestException):  # raised by the direct path itself
        mapped = exc
    elif isinstance(exc, TimeoutError):
        mapped = ReadTimeout(f"reading from {where} timed out")
    elif isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None)
        mapped = SSLError(f"TLS with {where} failed: {exc.__class__.__name__}" + (f" ({reason})" if reason else ""))
    elif isinstance(exc, http.client.IncompleteRead):
        mapped = ChunkedEncodingError(f"the body from {where} was cut short")
    elif isinstance(exc, zlib.error):
        mapped = ContentDecodingError(f"the body from {where} did not decompress")
    elif isinstance(exc, (OSError, http.client.HTTPException)):
        mapped = requests.ConnectionError(f"connection to {where} failed: {type(exc).__name__}")
    else:  # its words might quote a header (a credential): its class only
        mapped = requests.RequestException(f"the request to {where} failed: {type(exc).__name__}")
    mapped.quotable = True
    return mapped
