"""A local S3 for the lake tests, the bench and `make demo-lake`: moto's server mode on loopback,
behind a small proxy that logs every request (method, path, status, bytes each way), can inject
object-store faults (503 SlowDown, 500, a connection reset mid-upload) and can strip the
conditional-write headers, to play a store that ignores them.

Both run in a child process of their own. deltalake's Rust calls hold the GIL while they wait on
the network, so a server thread in the same process as a Delta writer starves until the
request times out (measured: three minutes). `LocalS3` is the handle the parent uses.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import secrets
import socket
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.request import Request, urlopen

REGION = "us-east-1"
ACCESS_KEY_ID, SECRET_ACCESS_KEY = "AKIDLOCALS3SANDBOX00", "local-s3-sandbox-secret-not-real"
CONDITIONAL_HEADERS = ("if-match", "if-none-match")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class LocalS3:
    """Start with `with LocalS3() as s3:`; `s3.env(bucket)` gives the variables a run needs."""

    def __init__(self):
        self.process: subprocess.Popen | None = None
        self.port = self.moto_port = None

    def start(self) -> "LocalS3":
        self.process = subprocess.Popen([sys.executable, "-m", "sandbox.s3"], cwd=Path(__file__).resolve().parent.parent,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ports = json.loads(self.process.stdout.readline())
        self.port, self.moto_port = ports["proxy"], ports["moto"]
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stdin.close()  # the child exits when its stdin closes
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process.stdout.close()
            self.process = None

    def __enter__(self) -> "LocalS3":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, bucket: str | None = None, prefix: str = "") -> dict:
        """The AWS variables a run reads (and PIPELINE_DESTINATION when a bucket is given); never
        the machine's own AWS configuration."""
        env = {"AWS_ENDPOINT_URL_S3": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
               "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY, "AWS_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true",
               "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
        if bucket:
            env["PIPELINE_DESTINATION"] = f"s3://{bucket}/{prefix}".rstrip("/")
        return env

    def client(self):
        """A boto3 client on the local store (for tests and the demo to look inside)."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY_ID,
                            aws_secret_access_key=SECRET_ACCESS_KEY)

    def create_bucket(self, name: str | None = None) -> str:
        name = name or f"lake-{secrets.token_hex(4)}"
        self._control("bucket", {"name": name})
        return name

    def inject(self, **fault) -> None:
        """One scripted fault: kind status (status, code), reset (half the upload, then the
        connection dies), stall (the request hangs `seconds`, never reaching the store) or
        stall_after (the store does it, the answer hangs); method and a path regex select the
        requests it hits; `after` lets that many of them through first; times how many it hits. A
        stall is logged with status "stalled" as it begins."""
        self._control("faults", {"add": {"kind": "status", "status": 503, "code": "SlowDown", "method": None,
                                         "path": ".*", "times": 1, **fault}})

    def reset(self) -> None:
        """No faults, conditions honoured, an empty log: as started."""
        self.clear_faults()
        self.strip_conditions(False)
        self.log(clear=True)

    def clear_faults(self) -> None:
        self._control("faults", {"clear": True})

    def strip_conditions(self, on: bool = True) -> None:
        self._control("strip", {"on": on})

    def log(self, clear: bool = False) -> list[dict]:
        """Every request the proxy forwarded: method, path, status, bytes in and out, and the access
        key id that signed it."""
        return self._control("log", {"clear": clear})

    def _control(self, what: str, body: dict):
        request = Request(f"{self.endpoint}/_sandbox/{what}", data=json.dumps(body).encode(), method="POST")
        with urlopen(request, timeout=30) as answer:  # noqa: S310 - loopback only
            return json.loads(answer.read() or b"null")


# -- the child process ---------------------------------------------------------------------------
class _Proxy:
    def __init__(self, moto_port: int):
        self.moto_port = moto_port
        self.faults: list[dict] = []
        self.strip = False
        self.log: list[dict] = []
        self.lock = threading.Lock()

    def fault_for(self, method: str, path: str) -> dict | None:
        with self.lock:
            for fault in self.faults:
                if fault["times"] > 0 and fault["method"] in (None, method) and re.search(fault["path"], path):
                    if fault.get("after", 0) > 0:  # let this many matching requests through first
                        fault["after"] -= 1
                        return None
                    fault["times"] -= 1
                    return fault
        return None

    def control(self, what: str, body: dict):
        if what == "bucket":
            connection = http.client.HTTPConnection("127.0.0.1", self.moto_port, timeout=30)
            connection.request("PUT", f"/{body['name']}")
            connection.getresponse().read()
            return {"bucket": body["name"]}
        with self.lock:
            if what == "faults" and body.get("clear"):
                self.faults.clear()
            elif what == "faults":
                self.faults.append(body["add"])
            elif what == "strip":
                self.strip = bool(body["on"])
            elif what == "log":
                entries = list(self.log)
                if body.get("clear"):
                    self.log.clear()
                return entries
        return None


def _handler(proxy: _Proxy):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # the request log is kept, not printed
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _any(self):
            if self.path.startswith("/_sandbox/"):
                answer = json.dumps(proxy.control(self.path.rsplit("/", 1)[-1], json.loads(self._body() or b"{}")))
                return self._send(200, {"Content-Type": "application/json"}, answer.encode())
            fault = proxy.fault_for(self.command, self.path)
            if fault is not None and fault["kind"] == "reset":
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length // 2)  # half the upload arrives, then the connection dies
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                return self._record(0, length // 2, 0)
            body = self._body()
            if fault is not None and fault["kind"] == "stall":  # the request hangs: it never reaches the store
                self._record("stalled", len(body), 0)
                time.sleep(fault.get("seconds", 30))
                fault = {**fault, "status": 503, "code": "SlowDown"}
            if fault is not None and fault["kind"] != "stall_after":
                error = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{fault["code"]}</Code>'
                         f"<Message>injected by the local S3</Message></Error>").encode()
                self._record(fault["status"], len(body), len(error))
                return self._send(fault["status"], {"Content-Type": "application/xml"}, error)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            if proxy.strip:
                headers = {k: v for k, v in headers.items() if k.lower() not in CONDITIONAL_HEADERS}
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                headers["Content-Length"] = str(len(body))
            connection = http.client.HTTPConnection("127.0.0.1", proxy.moto_port, timeout=120)
            connection.request(self.command, self.path, body=body if body or self.command in ("PUT", "POST") else None,
                               headers=headers)
            answer = connection.getresponse()
            data = answer.read()
            if fault is not None:  # stall_after: the store did it, the answer never comes back in time
                self._record("stalled", len(body), 0)
                time.sleep(fault.get("seconds", 30))
            out = {k: v for k, v in answer.getheaders() if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"}
            self._record(answer.status, len(body), len(data))
            self._send(answer.status, out, data, head=self.command == "HEAD",
                       length=answer.getheader("Content-Length"))

        def _record(self, status: int, bytes_in: int, bytes_out: int) -> None:
            signed = re.search(r"Credential=([A-Z0-9]+)/", self.headers.get("Authorization", ""))
            with proxy.lock:
                proxy.log.append({"method": self.command, "path": self.path, "status": status,
                                  "bytes_in": bytes_in, "bytes_out": bytes_out,
                                  "key_id": signed.group(1) if signed else None})

        def _send(self, status: int, headers: dict, data: bytes, head: bool = False, length=None) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(length if head and length is not None else len(data)))
            self.end_headers()
            if not head:
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # delta-rs may stop reading a log file early
                    self.close_connection = True

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return  # a worker the crash tests killed mid-request: expected, not worth a traceback
        super().handle_error(request, client_address)


def serve() -> None:
    """The child: moto and the proxy on free loopback ports; prints them, serves until stdin closes."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from moto.server import ThreadedMotoServer

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    moto_port = moto.get_host_and_port()[1]
    server = _Server(("127.0.0.1", 0), _handler(_Proxy(moto_port)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"proxy": server.server_address[1], "moto": moto_port}), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    serve()
