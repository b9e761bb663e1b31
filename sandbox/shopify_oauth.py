"""The Shopify sandbox's client-credentials token endpoint, as a Dev Dashboard app meets it.

`POST /admin/oauth/access_token` with a form body `grant_type=client_credentials&client_id=...
&client_secret=...` answers `{"access_token": "shpat_...", "scope": "read_products",
"expires_in": N}`. Its tokens live seconds, not Shopify's 24 hours, so tests and the demo see
them expire. Refusals are OAuth error bodies with HTTP 400: `invalid_client` for a wrong id or
secret, `app_not_installed` when the app is not installed on the shop (the answer Shopify's
token endpoint gives: Shopify/shopify-api-ruby#1322).
"""

from __future__ import annotations

import secrets
import threading
import time
from urllib.parse import parse_qs

TOKEN_PATH = "/admin/oauth/access_token"
FORM = "application/x-www-form-urlencoded"


def _oauth_error(code: str, description: str, status: int = 400):
    return status, {"error": code, "error_description": description}, {"kind": "token-refused"}


class TokenIssuer:
    """Mints short-lived tokens for one app and tells whether a token is still good."""

    def __init__(self, client_id: str | None, client_secret: str | None, *, lifetime_s: int = 5,
                 scope: str = "read_products", installed: bool = True, states_expiry: bool = True,
                 clock=time.monotonic):
        self.client_id, self.client_secret = client_id, client_secret
        self.lifetime_s, self.scope, self.clock = lifetime_s, scope, clock
        self.installed = installed  # False: the shop answers app_not_installed
        self.states_expiry = states_expiry  # False: the answer has no expires_in
        self.tokens: dict[str, float] = {}  # token -> when it expires, on the sandbox's clock
        self.minted = 0
        self._lock = threading.Lock()

    def answer(self, headers, raw: bytes):
        """(status, body, info) for one token request."""
        if (headers.get("Content-Type") or "").split(";")[0].strip() != FORM:
            return _oauth_error("invalid_request", f"The request body must be {FORM}.")
        fields = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        if fields.get("grant_type") != "client_credentials":
            return _oauth_error("unsupported_grant_type", "The grant type is not supported.")
        if (self.client_id is None or fields.get("client_id") != self.client_id
                or fields.get("client_secret") != self.client_secret):
            return _oauth_error("invalid_client", "Client authentication failed: unknown client or wrong secret.")
        if not self.installed:
            return _oauth_error("app_not_installed", "The application is not installed on this shop.")
        token = "shpat_" + secrets.token_hex(16)
        with self._lock:
            self.tokens[token] = self.clock() + self.lifetime_s
            self.minted += 1
        body = {"access_token": token, "scope": self.scope}
        if self.states_expiry:
            body["expires_in"] = int(self.lifetime_s)
        return 200, body, {"kind": "token"}

    def valid(self, token: str | None) -> bool:
        """True for a token this issuer minted that has not expired yet."""
        expires = self.tokens.get(token) if token else None
        return expires is not None and self.clock() < expires

    def expire_all(self) -> None:
        """End every token now, as a revoked or rotated secret would."""
        with self._lock:
            self.tokens = {t: self.clock() - 1 for t in self.tokens}
