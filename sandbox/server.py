"""The loopback HTTP server every provider sandbox runs on, with scripted faults and a request log.

Faults (one per API request, in order): an HTTP status with headers and body, a connection reset,
a body cut short, a body trickled past any deadline, an HTML page with status 200, a redirect.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit


@dataclass
class Fault:
    kind: str  # status | reset | truncate | trickle | html | redirect
    status: int = 503
    headers: dict = field(default_factory=dict)
    body: object = None
    location: str = "http://127.0.0.2:9/elsewhere"
    seconds: float = 5.0
    times: int = 1


class SandboxServer:
    """Subclasses implement handle_api(method, path, headers, body, query) -> (status, json, info)."""

    def __init__(self, port: int = 0):
        self.port = port
        self.faults: list[Fault] = []
        self.latency_s = 0.0  # added before every API answer (to make runs overlap in race tests)
        self.gate = None  # a threading.Event: answers wait until it is set (at most a minute)
        self.held = 0  # requests that have waited at the gate
        self.log: list[dict] = []
        self._server = None
        self._thread = None
        self._log_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "SandboxServer":
        handler = _make_handler(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- faults and log ----------------------------------------------------------------------
    def inject(self, fault: Fault) -> None:
        self.faults.append(fault)

    def next_fault(self) -> Fault | None:
        with self._log_lock:
            while self.faults:
                fault = self.faults[0]
                if fault.times <= 0:
                    self.faults.pop(0)
                    continue
                fault.times -= 1
                return fault
        return None

    def record(self, entry: dict) -> None:
        with self._log_lock:
            self.log.append(entry)

    def api_requests(self) -> list[dict]:
        return [e for e in self.log if not e["path"].startswith("/_sandbox/")]

    def handle_control(self, path: str, body: dict):
        if path == "/_sandbox/log":
            return 200, {"requests": self.log}
        return 404, {"error": "unknown control path"}

    def handle_api(self, method, path, headers, body, query):  # pragma: no cover - abstract
        raise NotImplementedError


def _make_handler(sandbox: SandboxServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart

        def log_message(self, *args):  # quiet: the sandbox keeps its own log
            pass

        def do_GET(self):
            self._handle("GET")

        def do_POST(self):
            self._handle("POST")

        def _handle(self, method: str):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            entry = {"method": method, "path": parts.path, "query": parts.query, "at": time.time(),
                     "headers": {k: v for k, v in self.headers.items()}}
            if parts.path.startswith("/_sandbox/"):
                status, body = sandbox.handle_control(parts.path, json.loads(raw or b"{}"))
                entry["status"] = status
                sandbox.record(entry)
                return self._send_json(status, body)
            if sandbox.gate is not None:
                sandbox.held += 1
                sandbox.gate.wait(60)
            if sandbox.latency_s:
                time.sleep(sandbox.latency_s)
            fault = sandbox.next_fault()
            if fault is not None:
                entry.update(status=fault.status if fault.kind == "status" else fault.kind, fault=fault.kind)
                sandbox.record(entry)
                return self._send_fault(fault)
            try:
                query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
                status, body, info = sandbox.handle_api(method, parts.path, self.headers, raw, query)
            except Exception as exc:  # a sandbox bug answers 500, like a real server would
                status, body, info = 500, {"errors": [{"message": f"sandbox error: {exc!r}"}]}, {}
            entry.update(status=status, **{k: v for k, v in info.items() if k != "raw"})
            entry["body"] = raw.decode("utf-8", "replace")
            sandbox.record(entry)
            if info.get("raw"):
                return self._send_bytes(status, body, "application/jsonl")
            self._send_json(status, body, info.get("headers"))

        def _send_bytes(self, status: int, data: bytes | Path, content_type: str):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(data.stat().st_size if isinstance(data, Path) else len(data)))
            self.end_headers()
            if isinstance(data, Path):  # a large file, straight from disk
                with data.open("rb") as handle:
                    self.wfile.flush()
                    self.connection.sendfile(handle)
                return
            self.wfile.write(data)

        def _send_json(self, status: int, body, headers: dict | None = None):
            try:  # UTF-8 as the real APIs answer, not \u escapes; a planted lone surrogate stays escaped
                data = json.dumps(body, ensure_ascii=False).encode()
            except UnicodeEncodeError:
                data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _send_fault(self, fault: Fault):
            if fault.kind == "status":
                return self._send_json(fault.status, fault.body if fault.body is not None else
                                       {"errors": [{"message": "sandbox fault"}]}, fault.headers)
            if fault.kind == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()
                return
            if fault.kind == "html":
                data = b"<html><body><h1>Down for maintenance</h1></body></html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                return self.wfile.write(data)
            if fault.kind == "redirect":
                self.send_response(fault.status if 300 <= fault.status < 400 else 302)
                self.send_header("Location", fault.location)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if fault.kind == "truncate":
                data = b'{"data": {"products": {"nodes": ['
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data) + 500))
                self.end_headers()
                self.wfile.write(data)
                self.close_connection = True
                return
            if fault.kind == "trickle":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "100000")
                self.end_headers()
                deadline = time.monotonic() + fault.seconds
                try:
                    while time.monotonic() < deadline:
                        self.wfile.write(b" ")
                        self.wfile.flush()
                        time.sleep(0.05)
                except OSError:
                    pass
                self.close_connection = True
                return
            raise ValueError(f"unknown fault {fault.kind}")

    return Handler
