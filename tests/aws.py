"""A local AWS for tests: moto's server mode on loopback, with dummy credentials."""

from __future__ import annotations

import socket
from contextlib import contextmanager

from moto.server import ThreadedMotoServer

DUMMY = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret-key-value",
         "AWS_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def moto_server():
    """Yields the endpoint URL of a fresh moto server on 127.0.0.1; stopped after."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
