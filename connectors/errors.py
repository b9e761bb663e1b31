"""The HTTP layer's error tree and the evidence its errors carry: what a failed provider call
raises, with provider, HTTP status, request id and a short summary of the answer so a person can
act, and never a secret or a whole payload."""

from __future__ import annotations


class ProviderError(Exception):
    """A provider call failed; carries provider, HTTP status and request id, never a secret."""

    def __init__(self, provider: str, message: str, *, status: int | None = None, request_id: str | None = None):
        self.provider = provider
        self.status = status
        self.request_id = request_id
        detail = f"{provider}: {message}"
        if status is not None:
            detail += f" (HTTP {status}"
            detail += f", request id {request_id})" if request_id else ")"
        super().__init__(detail)


class AuthError(ProviderError):
    """401/403: the credentials were refused; retrying will not help."""


class ResponseError(ProviderError):
    """A 4xx other than auth, or an answer the API documents as a permanent error."""


class RedirectRefused(ProviderError):
    """The API answered with a redirect; we never follow one, so no credential can leak."""


class RetryableError(ProviderError):
    """429, 5xx, a throttled GraphQL answer or a broken body: worth another attempt."""

    def __init__(self, provider, message, *, retry_after: float | None = None, throttled: bool = False, **kw):
        super().__init__(provider, message, **kw)
        self.retry_after = retry_after
        self.throttled = throttled


class RetriesExhausted(ProviderError):
    """Every attempt failed with a retryable error."""


class CircuitOpen(ProviderError):
    """Too many requests in a row failed: stop calling this provider for the rest of the run."""


class QuotaExhausted(ProviderError):
    """A call quota is spent (ours or the provider's): stop calling, keep what was fetched."""


def request_id_of(response) -> str | None:
    """The provider's request id from an answer's headers (what its support asks for), if any."""
    for name in ("X-Request-Id", "x-amzn-RequestId", "X-EBAY-C-REQUEST-ID"):
        if response.headers.get(name):
            return response.headers[name][:100]
    return None


def summarize(body) -> str | None:
    """A short, secret-free description of an error body."""
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, str):
            return errors[:200]
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            error_id = errors[0].get("errorId")
            message = str(errors[0].get("message", ""))[:200]
            return f"errorId {error_id}: {message}" if error_id is not None else message
        for key in ("message", "error_description", "error"):
            if isinstance(body.get(key), str):
                return body[key][:200]
    return None


def describe(exc: BaseException) -> str:
    """What went wrong, without the provider prefix; a library error by its class name only, unless
    our transport wrote its words (`quotable`: the host and the reason, never a URL or header)."""
    if isinstance(exc, ProviderError):
        return str(exc).split(": ", 1)[-1]
    if getattr(exc, "quotable", False):
        return f"{type(exc).__name__}: {exc}"
    return type(exc).__name__
