"""How an API answer comes off the wire: read whole, under a wall-clock deadline and a size cap,
before anything parses it. A read timeout alone lets a server trickle one byte a minute forever.

Files an API hands back (a bulk result: gigabytes, longer than any deadline) are not read here but
streamed to disk by `HttpClient.download`, which only asks that their bytes keep coming.
"""

from __future__ import annotations

import time

import requests
from requests.adapters import HTTPAdapter

MAX_BODY_BYTES = 256 * 1024 * 1024


class DeadlineAdapter(HTTPAdapter):
    """Reads every body in full under a wall-clock deadline and a size cap."""

    def __init__(self, deadline_s: float, max_bytes: int = MAX_BODY_BYTES, before_send=None):
        super().__init__()
        self.deadline_s = deadline_s
        self.max_bytes = max_bytes
        self.before_send = before_send  # called for network requests only, never for cache hits

    def send(self, request, stream=False, **kwargs):
        if self.before_send is not None:
            self.before_send(request)
        started = time.monotonic()
        response = super().send(request, stream=True, **kwargs)
        chunks, size = [], 0
        try:
            for chunk in response.iter_content(64 * 1024):
                chunks.append(chunk)
                size += len(chunk)
                if time.monotonic() - started > self.deadline_s:
                    raise requests.Timeout(f"response took longer than the {self.deadline_s:g}s deadline")
                if size > self.max_bytes:
                    raise requests.ConnectionError(f"response larger than {self.max_bytes} bytes")
        except BaseException:
            response.close()
            raise
        response._content = b"".join(chunks)
        response._content_consumed = True
        return response
