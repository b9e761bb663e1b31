"""A replay server: answers recorded from the sandbox, played back at almost no CPU cost, so a
benchmark measures the clients and not the server on the same two cores.

  record: python bench/replay.py record --upstream URL --out DIR
          a proxy in front of the sandbox that keeps every answer, keyed by the request
          (method, path and body: a client that starts afresh sends the same requests again)
  serve:  python bench/replay.py serve --recording DIR
          answers each request with the answer recorded for it (in order, for a request sent
          more than once); 404 for a request it never saw

Prints one JSON line ({"base_url": ..., "pid": ...}) when ready; stops when its stdin closes.
One asyncio loop, no framework: a request costs a hash and a dictionary look-up.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import http.client
import json
import mmap
import os
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit


def request_key(method: bytes, target: bytes, body: bytes) -> str:
    path = target.split(b"?", 1)[0]  # a signed download URL's signature changes from run to run
    return hashlib.sha1(method + b" " + path + b"\n" + body).hexdigest()


async def read_request(reader: asyncio.StreamReader):
    """(method, target, headers, body, keep-alive) of the next request, or None at the end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.split(b"\r\n")
    method, target, _ = lines[0].split(b" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name:
            headers[name.strip().lower().decode()] = value.strip().decode()
    length = int(headers.get("content-length") or 0)
    body = await reader.readexactly(length) if length else b""
    return method, target, headers, body, headers.get("connection", "").lower() != "close"


def response_head(status: int, content_type: str, length: int) -> bytes:
    return (f"HTTP/1.1 {status} {http.client.responses.get(status, '')}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


class Recorder:
    """Forwards every request to the upstream and keeps the answer."""

    def __init__(self, upstream: str, out: Path):
        self.upstream = urlsplit(upstream)
        out.mkdir(parents=True, exist_ok=True)
        self.data = (out / "answers.bin").open("ab")
        self.index = (out / "index.jsonl").open("a")
        self.lock = threading.Lock()

    def forward(self, method: bytes, target: bytes, headers: dict, body: bytes):
        headers = {k: v for k, v in headers.items() if k not in ("host", "connection", "content-length")}
        connection = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=600)
        try:
            connection.request(method.decode(), target.decode(), body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
            return response.status, response.getheader("Content-Type", "application/json"), answer
        finally:
            connection.close()

    async def handle(self, reader, writer):
        while (request := await read_request(reader)) is not None:
            method, target, headers, body, keep_alive = request
            status, content_type, answer = await asyncio.to_thread(self.forward, method, target, headers, body)
            with self.lock:
                offset = self.data.tell()
                self.data.write(answer)
                self.data.flush()
                self.index.write(json.dumps({"key": request_key(method, target, body), "status": status,
                                             "type": content_type, "offset": offset, "length": len(answer)}) + "\n")
                self.index.flush()
            writer.write(response_head(status, content_type, len(answer)) + answer)
            await writer.drain()
            if not keep_alive:
                break
        writer.close()


class Player:
    """Answers from a recording: a look-up and a write of bytes already in memory (mapped)."""

    def __init__(self, recording: Path):
        handle = (recording / "answers.bin").open("rb")
        self.data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if handle.seek(0, 2) else b""
        self.answers: dict[str, list] = {}
        for line in (recording / "index.jsonl").read_text().splitlines():
            entry = json.loads(line)
            head = response_head(entry["status"], entry["type"], entry["length"])
            self.answers.setdefault(entry["key"], []).append((head, entry["offset"], entry["length"]))
        self.served: dict[str, int] = {}
        self.misses = 0

    async def handle(self, reader, writer):
        while (request := await read_request(reader)) is not None:
            method, target, _, body, keep_alive = request
            key = request_key(method, target, body)
            answers = self.answers.get(key)
            if not answers:
                self.misses += 1
                message = b'{"errors":[{"message":"replay: no recorded answer for this request"}]}'
                writer.write(response_head(404, "application/json", len(message)) + message)
            else:
                count = self.served.get(key, 0)
                self.served[key] = count + 1
                head, offset, length = answers[min(count, len(answers) - 1)]
                writer.write(head)
                writer.write(memoryview(self.data)[offset:offset + length])
            await writer.drain()
            if not keep_alive:
                break
        writer.close()


async def main_async(handler, info: dict) -> None:
    server = await asyncio.start_server(handler.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({**info, "base_url": f"http://127.0.0.1:{port}", "pid": os.getpid()}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)), daemon=True).start()
    async with server:
        await stop.wait()
    print(json.dumps({"misses": getattr(handler, "misses", 0)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    record = sub.add_parser("record")
    record.add_argument("--upstream", required=True)
    record.add_argument("--out", type=Path, required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("--recording", type=Path, required=True)
    args = parser.parse_args()
    handler = Recorder(args.upstream, args.out) if args.mode == "record" else Player(args.recording)
    asyncio.run(main_async(handler, {"mode": args.mode}))


if __name__ == "__main__":
    main()
