"""The direct path of connectors/transport.py (http.client, not urllib3) against a loopback server
that writes its answers byte for byte: keep-alive, connections the server dropped while idle,
chunked and gzip bodies, bodies cut short, timeouts, cookies, redirects, and what goes on the wire."""

from __future__ import annotations

import gzip
import ipaddress
import json
import datetime
import select
import socket
import ssl
import threading
import time
import tracemalloc
import zlib
from contextlib import contextmanager, suppress

import pytest

from connectors.http import HostBoundHeaderAuth, HttpClient, HttpSettings, RedirectRefused, RetriesExhausted
from connectors.transport import DeadlineAdapter

TOKEN = "shpat_transport_test_token"


def client(clock, **settings) -> HttpClient:
    return HttpClient("shopify", HttpSettings(**{"max_attempts": 1, **settings}), sleep=clock.sleep,
                      secret_headers=("X-Shopify-Access-Token",))


def answer(body: bytes, status: str = "200 OK", headers: tuple = (), length: int | None = None) -> bytes:
    head = [f"HTTP/1.1 {status}", "Content-Type: application/json",
            f"Content-Length: {len(body) if length is None else length}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def chunked(body: bytes, headers: tuple = (), size: int = 7) -> bytes:
    pieces = [body[i:i + size] for i in range(0, len(body), size)]
    head = "\r\n".join(["HTTP/1.1 200 OK", "Content-Type: application/json", "Transfer-Encoding: chunked", *headers])
    return (head + "\r\n\r\n").encode() + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


@contextmanager
def wire(respond, tls: ssl.SSLContext | None = None):
    """A loopback server: for each request, `respond(request, connection_number)` returns the bytes
    to write and what to do next ("keep" the connection, "close" it, or "hang": never answer).
    Yields (base URL, the requests it read as (connection number, head, body)). With `tls`, it
    speaks HTTPS with that context (a handshake the client refuses ends the connection)."""
    seen: list[tuple[int, str, bytes]] = []
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(conn: socket.socket, number: int):
        with conn, suppress(OSError):  # OSError: the client gave up (a cap, a timeout, a certificate)
            if tls is not None:
                conn = tls.wrap_socket(conn, server_side=True)
            converse(conn, number)

    def converse(conn: socket.socket, number: int):
        data = b""
        while not stop.is_set():
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, data = data.split(b"\r\n\r\n", 1)
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            while len(data) < length:
                data += conn.recv(65536)
            body, data = data[:length], data[length:]
            seen.append((number, head.decode("latin-1"), body))
            payload, then = respond(head.decode("latin-1"), number)
            if then == "hang":
                stop.wait(5)
                return
            conn.sendall(payload)
            if then == "close":
                return

    def accept():
        number = 0
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            number += 1
            threading.Thread(target=serve, args=(conn, number), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{listener.getsockname()[1]}", seen
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def server_closed(http: HttpClient, base: str) -> None:
    """Wait (2 s at most) until the server's close of the client's idle connections has arrived."""
    adapter = http.session.get_adapter(base)
    sockets = [connection.sock for idle in adapter._idle.values() for connection in idle]
    deadline = time.monotonic() + 2
    while sockets and time.monotonic() < deadline:
        sockets = [sock for sock in sockets if not select.select([sock], [], [], 0.01)[0]]


BODY = json.dumps({"data": {"title": "Tasse émaillée — édition spéciale", "n": 1}}, ensure_ascii=False).encode()
VALUE = json.loads(BODY)


def test_requests_share_one_keep_alive_connection_and_carry_what_a_run_sends(clock):
    http = client(clock)
    with wire(lambda head, n: (answer(BODY), "keep")) as (base, seen):
        auth = HostBoundHeaderAuth(base, "X-Shopify-Access-Token", lambda: TOKEN)
        for cursor in ("a", "b", "c"):
            assert http.request_json("POST", base + "/admin/api/2026-10/graphql.json?x=1",
                                     json_body={"query": "q", "after": cursor}, auth=auth) == VALUE
    assert [number for number, _, _ in seen] == [1, 1, 1] and http.stats.requests == 3
    head = seen[0][1].lower()
    assert head.startswith("post /admin/api/2026-10/graphql.json?x=1 http/1.1")
    for line in (f"x-shopify-access-token: {TOKEN.lower()}", "content-type: application/json",
                 "accept-encoding: gzip, deflate", f"host: {base[len('http://'):]}"):
        assert line in head.split("\r\n")
    assert [json.loads(body)["after"] for _, _, body in seen] == ["a", "b", "c"]


def test_a_connection_the_server_closed_while_idle_is_replaced_without_a_retry(clock):
    # The server closes after each answer without saying so (no Connection: close): the next
    # request finds the idle connection dead and opens another, no retry counted, no wait.
    with wire(lambda head, n: (answer(BODY), "close")) as (base, seen):
        http = client(clock)
        for _ in range(3):
            assert http.request_json("GET", base + "/x") == VALUE
            server_closed(http, base)
    assert [number for number, _, _ in seen] == [1, 2, 3]
    assert http.stats.retries == 0 and clock.sleeps == []


def test_a_request_the_idle_connection_loses_in_flight_is_sent_once_more_on_a_fresh_one(clock, monkeypatch):
    # The race the idle check cannot see: the server closes just as the request goes out.
    monkeypatch.setattr("connectors.transport._dropped", lambda sock: False)
    with wire(lambda head, n: (answer(BODY), "close")) as (base, seen):
        http = client(clock)
        assert http.request_json("GET", base + "/x") == VALUE
        server_closed(http, base)
        assert http.request_json("GET", base + "/x") == VALUE
    assert [number for number, _, _ in seen] == [1, 2] and http.stats.retries == 0


def test_chunked_and_gzip_bodies_are_decoded(clock):
    packed = gzip.compress(BODY)
    replies = iter([(chunked(BODY), "keep"),
                    (answer(packed, headers=("Content-Encoding: gzip",)), "keep"),
                    (chunked(packed, headers=("Content-Encoding: gzip",)), "keep")])
    with wire(lambda head, n: next(replies)) as (base, seen):
        http = client(clock)
        assert [http.request_json("GET", base + "/x") for _ in range(3)] == [VALUE] * 3
    assert len({number for number, _, _ in seen}) == 1


def test_the_size_cap_holds_for_the_decompressed_body_without_inflating_it_whole(clock):
    bomb = gzip.compress(b'{"a": "' + b"0" * 50_000_000 + b'"}', compresslevel=1)
    assert len(bomb) < 500_000
    with wire(lambda head, n: (answer(bomb, headers=("Content-Encoding: gzip",)), "keep")) as (base, _):
        tracemalloc.start()
        try:
            with pytest.raises(RetriesExhausted, match="ConnectionError: response larger than 1000000 bytes"):
                client(clock, max_body_bytes=1_000_000).request_json("GET", base + "/x")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 4_000_000, peak  # the 50 MB never held at once (unbounded inflating: 7.8 MB and up)


def test_an_encoding_not_asked_for_is_an_error_not_garbage(clock):
    with wire(lambda head, n: (answer(b"\x1b\x00", headers=("Content-Encoding: br",)), "keep")) as (base, _):
        with pytest.raises(RetriesExhausted, match="ContentDecodingError"):
            client(clock).request_json("GET", base + "/x")


def test_a_body_cut_short_of_its_content_length_is_retried_then_reported(clock):
    with wire(lambda head, n: (answer(BODY, length=len(BODY) + 50), "close")) as (base, seen):
        http = client(clock, max_attempts=2)
        with pytest.raises(RetriesExhausted, match="gave up after 2 attempts .*ChunkedEncodingError: the body ended "
                                                   "50 bytes short of its Content-Length"):
            http.request_json("GET", base + "/x")
    assert len(seen) == 2 and http.stats.retries == 1


def test_a_silent_server_times_out_and_a_closed_port_is_refused_naming_no_query(clock):
    with wire(lambda head, n: (b"", "hang")) as (base, _):
        started = time.monotonic()
        with pytest.raises(RetriesExhausted, match="ReadTimeout"):
            client(clock, read_timeout_s=0.3).request_json("GET", base + "/x")
        assert time.monotonic() - started < 3
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
    with pytest.raises(RetriesExhausted) as refused:
        client(clock).request_json("GET", f"http://127.0.0.1:{port}/x?signature=do-not-log")
    assert "ConnectionError" in str(refused.value) and "do-not-log" not in str(refused.value)
    assert refused.value.__cause__ is None


def test_a_cookie_set_on_the_direct_path_goes_with_the_next_request(clock):
    replies = iter([(answer(BODY, headers=("Set-Cookie: affinity=node-7; Path=/",)), "keep"), (answer(BODY), "keep")])
    with wire(lambda head, n: next(replies)) as (base, seen):
        http = client(clock)
        http.request_json("POST", base + "/x", json_body={"q": 1})
        http.request_json("POST", base + "/x", json_body={"q": 2})
    assert "cookie: affinity=node-7" not in seen[0][1].lower()
    assert "cookie: affinity=node-7" in seen[1][1].lower().split("\r\n")


def test_a_redirect_on_the_direct_path_is_refused_and_not_followed(clock):
    moved = answer(b"", status="302 Found", headers=("Location: http://127.0.0.2:9/elsewhere",))
    with wire(lambda head, n: (moved, "keep")) as (base, seen):
        with pytest.raises(RedirectRefused, match="127.0.0.2"):
            client(clock).request_json("GET", base + "/x")
    assert len(seen) == 1


def test_closing_the_client_closes_its_idle_connections(clock):
    with wire(lambda head, n: (answer(BODY), "keep")) as (base, seen):
        http = client(clock)
        http.request_json("GET", base + "/x")
        adapter = http.session.get_adapter(base)
        assert isinstance(adapter, DeadlineAdapter) and adapter.direct
        (connection,) = [c for idle in adapter._idle.values() for c in idle]
        http.close()
        assert connection.sock is None and adapter._idle == {}


def test_conflicting_content_lengths_are_refused_not_read_as_the_first(clock):
    split = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 8\r\n\r\n{\"a\": 1}"
    with wire(lambda head, n: (split, "close")) as (base, _):
        with pytest.raises(RetriesExhausted, match="ConnectionError"):
            client(clock).request_json("GET", base + "/x")


def test_gzip_members_raw_deflate_and_a_cut_gzip_stream_decode_as_urllib3_would(clock):
    half = len(BODY) // 2
    members = gzip.compress(BODY[:half]) + gzip.compress(BODY[half:])
    squeezer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw_deflate = squeezer.compress(BODY) + squeezer.flush()
    cut = gzip.compress(BODY)[:-12]
    replies = iter([(answer(members, headers=("Content-Encoding: gzip",)), "keep"),
                    (answer(raw_deflate, headers=("Content-Encoding: deflate",)), "keep"),
                    (answer(zlib.compress(BODY), headers=("Content-Encoding: deflate",)), "keep"),
                    (answer(cut, headers=("Content-Encoding: gzip",)), "keep")])
    with wire(lambda head, n: next(replies)) as (base, _):
        http = client(clock)
        assert [http.request_json("GET", base + "/x") for _ in range(3)] == [VALUE] * 3
        with pytest.raises(RetriesExhausted, match="ContentDecodingError"):
            http.request_json("GET", base + "/x")


def test_a_credential_with_a_line_break_never_reaches_the_wire_nor_the_message(clock):
    secret = "shpat_secret_value\r\nX-Injected: 1"
    with wire(lambda head, n: (answer(BODY), "keep")) as (base, seen):
        auth = HostBoundHeaderAuth(base, "X-Shopify-Access-Token", lambda: secret)
        with pytest.raises(Exception) as refused:
            client(clock).request_json("POST", base + "/x", json_body={"q": 1}, auth=auth)
    assert seen == []
    assert "X-Shopify-Access-Token header holds a line break" in str(refused.value)
    assert "shpat_secret_value" not in str(refused.value) and "Injected" not in str(refused.value)


def test_a_host_header_the_caller_sets_is_sent_once(clock):
    with wire(lambda head, n: (answer(BODY), "keep")) as (base, seen):
        client(clock).request_json("GET", base + "/x", headers={"Host": "shop.example"})
    hosts = [line for line in seen[0][1].lower().split("\r\n") if line.startswith("host:")]
    assert hosts == ["host: shop.example"]


def test_a_request_sent_again_on_a_fresh_connection_passes_the_send_hook_again(clock, monkeypatch):
    monkeypatch.setattr("connectors.transport._dropped", lambda sock: False)
    sent = []
    with wire(lambda head, n: (answer(BODY), "close")) as (base, seen):
        http = HttpClient("shopify", HttpSettings(max_attempts=1), sleep=clock.sleep, on_send=sent.append)
        http.request_json("GET", base + "/x")
        server_closed(http, base)
        http.request_json("GET", base + "/x")
    assert len(seen) == 2 and len(sent) == 3  # the lost send, then the one the server answered


def test_a_failed_read_closes_the_socket_at_once(clock):
    # The size cap passed on a Connection: close answer: the server sees the close straight away,
    # not when the exception (and the traceback holding the reader) is collected.
    big = answer(b'{"a": "' + b"x" * 200_000 + b'"}', headers=("Connection: close",))
    heard: list = []

    with socket.create_server(("127.0.0.1", 0)) as listener:
        def serve():
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(big)
                conn.settimeout(3)
                started = time.monotonic()
                try:
                    heard.append(conn.recv(1))
                except OSError as exc:  # a reset counts as closed too; a timeout does not
                    heard.append(exc)
                heard.append(time.monotonic() - started)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with pytest.raises(RetriesExhausted) as failure:
            client(clock, max_body_bytes=1000).request_json("GET", f"http://127.0.0.1:{listener.getsockname()[1]}/x")
        thread.join(5)
    assert failure.value is not None  # still alive: it cannot be what closed the socket
    assert heard[0] == b"" or isinstance(heard[0], ConnectionError)  # closed (or reset), not timed out
    assert heard[1] < 1.0


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A private CA, and a server certificate it signed for 127.0.0.1 (and one for another name):
    made here, so no key or certificate is kept in the repository."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(text):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    def signed(subject, key, issuer, issuer_key, *, ca, alt=None):
        builder = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
                critical=True)
            builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        else:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
            builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                                            critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def write(path, cert, key=None):
        data = cert.public_bytes(serialization.Encoding.PEM)
        if key is not None:
            data += key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
        path.write_bytes(data)
        return str(path)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = signed("test CA", ca_key, "test CA", ca_key, ca=True)
    paths = {"ca": write(folder / "ca.pem", ca)}
    for label, alt in (("loopback", [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       ("other", [x509.DNSName("shop.example")])):
        key = ec.generate_private_key(ec.SECP256R1())
        paths[label] = write(folder / f"{label}.pem", signed("server", key, "test CA", ca_key, ca=False, alt=alt), key)
    return paths


def server_tls(certfile: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile)
    return context


def test_https_goes_the_direct_path_verified_against_the_bundle_the_session_names(clock, certificates):
    with wire(lambda head, n: (answer(BODY), "keep"), tls=server_tls(certificates["loopback"])) as (base, seen):
        http = client(clock)
        http.session.verify = certificates["ca"]  # as REQUESTS_CA_BUNDLE would set it
        assert [http.request_json("GET", base + "/x") for _ in range(2)] == [VALUE] * 2
        idle = http.session.get_adapter(base)._idle
        assert [type(c).__name__ for pool in idle.values() for c in pool] == ["HTTPSConnection"]
    assert [number for number, _, _ in seen] == [1, 1]  # one TLS connection, kept alive


def test_an_unknown_issuer_or_another_name_is_refused_naming_the_host_and_why(clock, certificates):
    for certificate, verify, why in ((certificates["loopback"], True, "unable to get local issuer certificate"),
                                     (certificates["other"], certificates["ca"], "IP address mismatch")):
        with wire(lambda head, n: (answer(BODY), "keep"), tls=server_tls(certificate)) as (base, seen):
            http = client(clock)
            http.session.verify = verify
            with pytest.raises(RetriesExhausted, match="SSLError") as refused:
                http.request_json("GET", base + "/x?signature=do-not-log")
        message = str(refused.value)
        assert why in message and "127.0.0.1" in message and "do-not-log" not in message
        assert seen == []  # nothing was sent over a connection that failed its check


def test_verify_false_skips_the_check(clock, certificates):
    with wire(lambda head, n: (answer(BODY), "keep"), tls=server_tls(certificates["other"])) as (base, _):
        http = client(clock)
        http.session.verify = False
        assert http.request_json("GET", base + "/x") == VALUE


def test_a_connection_in_flight_when_the_client_closes_is_closed_not_pooled(clock):
    http = client(clock)

    def close_then_answer(head, n):
        if n == 1:
            http.close()  # while the first request waits for its answer
        return answer(BODY), "keep"

    with wire(close_then_answer) as (base, seen):
        assert http.request_json("GET", base + "/x") == VALUE
        adapter = http.session.get_adapter(base)
        assert all(not idle for idle in adapter._idle.values())  # nothing left open behind the close
        assert http.request_json("GET", base + "/x") == VALUE  # used again after the close: pooled as before
        assert [len(idle) for idle in adapter._idle.values()] == [1]
    assert [number for number, _, _ in seen] == [1, 2]
