"""OAuth2 client-credentials tokens as a requests AuthBase: minted on first use, kept in memory
for the run, re-minted shortly before they expire or once after the API refuses one.

Tokens never reach the disk cache (token requests bypass it), a log line or an error message.
"""

from __future__ import annotations

import time
from typing import Callable
from urllib.parse import urlsplit

import requests

from connectors.http import AuthError, HttpClient, ResponseError
from connectors.redact import remember

DEFAULT_EXPIRES_IN_S = 3600  # when the answer has no expires_in
REFRESH_MARGIN_S = 60  # re-mint this long before expiry (a tenth of the lifetime for short tokens)


class ClientCredentialsAuth(requests.auth.AuthBase):
    """Sets `Authorization` on requests to the API host, minting a token when it needs one."""

    def __init__(self, api_base_url: str, mint: Callable[[], dict], header: Callable[[str], str],
                 clock: Callable[[], float] = time.monotonic):
        self.netloc = urlsplit(api_base_url).netloc.lower()
        self.mint, self.header, self.clock = mint, header, clock
        self._token: str | None = None
        self._expires_at = 0.0
        self.minted = 0

    def __call__(self, request):
        if urlsplit(request.url).netloc.lower() == self.netloc:
            request.headers["Authorization"] = self.header(self.token())
        return request

    def token(self) -> str:
        if self._token is None or self.clock() >= self._expires_at:
            body = self.mint()
            token = body.get("access_token") if isinstance(body, dict) else None
            if not isinstance(token, str) or not token:
                raise ResponseError("oauth", "the token endpoint answered without an access_token")
            expires_in = body.get("expires_in")
            lifetime = float(expires_in) if isinstance(expires_in, (int, float)) and expires_in > 0 else DEFAULT_EXPIRES_IN_S
            margin = min(REFRESH_MARGIN_S, lifetime / 10)
            remember(token)
            self._token, self._expires_at = token, self.clock() + lifetime - margin
            self.minted += 1
        return self._token

    def invalidate(self) -> None:
        self._token = None


def request_with_refresh(http: HttpClient, auth: ClientCredentialsAuth, method: str, url: str, **kwargs):
    """request_json; on a 401 the token is re-minted once and the request retried once."""
    try:
        return http.request_json(method, url, auth=auth, **kwargs)
    except AuthError as exc:
        if exc.status != 401:
            raise
        auth.invalidate()
        return http.request_json(method, url, auth=auth, **kwargs)
