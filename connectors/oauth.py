"""OAuth2 access tokens as a requests AuthBase: minted on first use (with the client-credentials
grant, or eBay's refresh-token grant for a seller's user token), kept in memory for the run,
re-minted shortly before they expire or once after the API refuses one.

Tokens never reach the disk cache (token requests bypass it), a log line or an error message.
"""

from __future__ import annotations

import logging
import time
from typing import Callable
from urllib.parse import urlsplit

import requests

from connectors.http import AuthError, HttpClient, ResponseError
from connectors.redact import remember

log = logging.getLogger("pipeline.oauth")

DEFAULT_EXPIRES_IN_S = 3600  # when the answer has no expires_in
REFRESH_MARGIN_S = 60  # re-mint this long before expiry (a tenth of the lifetime for short tokens)


class TokenRefused(AuthError):
    """The token endpoint refused the client credentials, or the token it gave cannot do the job:
    minting again will not help. `error_code` is the OAuth error of the answer (`invalid_client`)."""

    def __init__(self, provider: str, message: str, *, error_code: str | None = None, **kwargs):
        super().__init__(provider, message, **kwargs)
        self.error_code = error_code


class MissingScope(TokenRefused):
    """The credentials cannot read what the stream reads (a scope, or the user's consent, is
    missing): no query is sent."""


class ClientCredentialsAuth(requests.auth.AuthBase):
    """Sets the token header (`Authorization` unless told otherwise) on requests to the API host,
    minting a token when it needs one (`mint` may use any grant)."""

    def __init__(self, api_base_url: str, mint: Callable[[], dict], header: Callable[[str], str],
                 clock: Callable[[], float] = time.monotonic, *, header_name: str = "Authorization"):
        self.netloc = urlsplit(api_base_url).netloc.lower()
        self.mint, self.header, self.clock, self.header_name = mint, header, clock, header_name
        self._token: str | None = None
        self._expires_at = 0.0
        self.minted = 0

    def __call__(self, request):
        if urlsplit(request.url).netloc.lower() == self.netloc:
            request.headers[self.header_name] = self.header(self.token())
        return request

    def token(self) -> str:
        if self._token is None or self.clock() >= self._expires_at:
            body = self.mint()
            token = body.get("access_token") if isinstance(body, dict) else None
            if not isinstance(token, str) or not token:
                raise ResponseError("oauth", "the token endpoint answered without an access_token")
            remember(token)
            expires_in = body.get("expires_in")
            lifetime = float(expires_in) if isinstance(expires_in, (int, float)) and expires_in > 0 else DEFAULT_EXPIRES_IN_S
            margin = min(REFRESH_MARGIN_S, lifetime / 10)
            self._token, self._expires_at = token, self.clock() + lifetime - margin
            self.minted += 1
        return self._token

    def invalidate(self) -> None:
        self._token = None


def request_with_refresh(http: HttpClient, auth, method: str, url: str, **kwargs):
    """request_json; on a 401 a minted token is re-minted once and the request retried once.

    Any other auth (a static token) is passed through: a refused static token stays refused.
    """
    try:
        return http.request_json(method, url, auth=auth, **kwargs)
    except TokenRefused:
        raise  # the token endpoint itself said no: a second try would hear the same
    except AuthError as exc:
        if exc.status != 401 or not isinstance(auth, ClientCredentialsAuth):
            raise
        log.info("%s: the API refused the access token (HTTP 401); minting a new one", http.provider)
        auth.invalidate()
        return http.request_json(method, url, auth=auth, **kwargs)


def request_token(http: HttpClient, url: str, *, basic: tuple[str, str] | None = None, **kwargs) -> dict:
    """POST to a token endpoint, never cached, the client authenticated with HTTP Basic when
    `basic` (client id, secret) is given; a 400, 401 or 403 raises TokenRefused carrying the
    OAuth error code of the answer. 429 and 5xx are retried like any call."""
    noted = _OAuthErrorCode(basic)
    try:
        return http.request_json("POST", url, auth=noted, cache=False, **kwargs)
    except (AuthError, ResponseError) as exc:
        if exc.status not in (400, 401, 403):
            raise
        raise TokenRefused(exc.provider, "the token endpoint refused the client credentials"
                           + (f" ({noted.code})" if noted.code else ""), status=exc.status,
                           request_id=exc.request_id, error_code=noted.code) from None


class _OAuthErrorCode(requests.auth.AuthBase):
    """Notes the `error` code of the token endpoint's answer (RFC 6749, section 5.2), which tells
    a wrong secret from an app that is not installed or a refresh token that is no longer valid;
    adds the client's Basic credentials when it has them."""

    def __init__(self, basic: tuple[str, str] | None = None):
        self.code: str | None = None
        self.basic = requests.auth.HTTPBasicAuth(*basic) if basic else None

    def __call__(self, request):
        if self.basic is not None:
            request = self.basic(request)
        request.register_hook("response", self._note)
        return request

    def _note(self, response, **kwargs):
        if response.status_code >= 400:
            try:
                error = response.json().get("error")
            except (ValueError, AttributeError):
                error = None
            self.code = error[:100] if isinstance(error, str) else None
        return response
