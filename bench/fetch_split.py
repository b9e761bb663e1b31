"""Where the paging crawl's own CPU goes, by layer: a Shopify crawl of the rich catalog against the
sandbox (in its own process), with the CPU spent inside each layer added up (this process's CPU,
`time.process_time`, around each call: nested layers include the ones below them).

  request_json        the HTTP layer's whole call: retries, sending, reading, decoding, checks
    _classify         decoding the answer (orjson, the long-number check) and the GraphQL checks
    _send_prepared    preparing the request and requests' Session.send, the transport below
      _direct         the direct path (connectors/transport.py): connection, send, answer
        begin         the status line and headers (http.client)
        _read         the body, under the deadline and size cap
  outside             the crawl's own work: cursors, children, records handed on

Usage: python bench/fetch_split.py [N]   (default 20000)
"""

from __future__ import annotations

import gc
import http.client
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402

from bench.common import SandboxProcess  # noqa: E402
from bench.stages import paging_records  # noqa: E402
from connectors import http as http_layer  # noqa: E402
from connectors import transport  # noqa: E402

LAYERS = [(http_layer.HttpClient, "request_json"), (http_layer.HttpClient, "_classify"),
          (http_layer.HttpClient, "_send_prepared"), (requests.Session, "send"),
          (transport.DeadlineAdapter, "_direct"), (http.client.HTTPResponse, "begin"),
          (transport.DeadlineAdapter, "_read")]


def timed(owner, name: str, totals: dict) -> None:
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        started = time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            totals[name] = totals.get(name, 0.0) + time.process_time() - started

    setattr(owner, name, wrapper)


def main() -> None:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    totals: dict[str, float] = {}
    for owner, name in LAYERS:
        timed(owner, name, totals)
    sandbox = SandboxProcess(size)
    try:
        with tempfile.TemporaryDirectory() as root:
            gc.freeze()
            gc.set_threshold(10_000)  # as a run's stages set it (pipelines.stages.lean_gc)
            started, count = time.process_time(), 0
            for _ in paging_records(sandbox, Path(root)):
                count += 1
            total = time.process_time() - started
    finally:
        sandbox.stop()
    print(f"Paging crawl of {count:,} rich products: our CPU a product, by layer (us)")
    print(f"  {'every layer':<16}{total / count * 1e6:8.1f}")
    for _, name in LAYERS:
        print(f"  {name:<16}{totals.get(name, 0.0) / count * 1e6:8.1f}")
    print(f"  {'outside':<16}{(total - totals.get('request_json', 0.0)) / count * 1e6:8.1f}")


if __name__ == "__main__":
    main()
