"""Secret redaction for every log record, traceback and error message the pipeline emits."""

from __future__ import annotations

import base64
import logging
import re
from urllib.parse import quote

MASK = "***"
# Token shapes we know, for secrets that did not come from our settings.
PATTERNS = [
    re.compile(r"shp(at|ca|pa|ss)_[0-9A-Za-z_]{8,}"),
    re.compile(r"(?i)bearer\s+[^\s,]+"),
    re.compile(r"(AKIA|ASIA)[0-9A-Z]{16}"),  # AWS access key ids: long-term and temporary (STS)
    re.compile(r"X-Amz-(Signature|Credential|Security-Token)=[^&\s]+"),  # presigned S3 URLs
    # An AWS secret key or session token beside its name (a config dump, an env listing, a header).
    re.compile(r"(?i)(aws_secret_access_key|secret_?access_?key|aws_session_token|session_?token|"
               r"x-amz-security-token)['\"]?(\s*[:=]\s*['\"]?|\s+)[A-Za-z0-9/+=]{16,}"),
    re.compile(r"X-Goog-(Signature|Credential)=[^&\s]+"),  # signed storage URLs (Shopify bulk results)
    re.compile(r"v\^1\.1#\S+"),
]


_RUNTIME_SECRETS: set[str] = set()


def remember(secret: str) -> None:
    """Register a secret learned at run time (a minted access token) for redaction by value."""
    if secret and len(secret) >= 8:
        _RUNTIME_SECRETS.add(secret)


class Redactor:
    """Replaces known secret values (plain, URL-encoded, base64) and token-shaped strings."""

    def __init__(self, secrets: list[str] = ()):
        self.values = _forms(secrets)

    def __call__(self, text: str) -> str:
        for value in [*self.values, *_forms(_RUNTIME_SECRETS)]:
            text = text.replace(value, MASK)
        for pattern in PATTERNS:
            text = pattern.sub(MASK, text)
        return text


def _forms(secrets) -> list[str]:
    """Each secret as written plain, URL-encoded and base64-encoded, longest first."""
    forms = set()
    for secret in secrets:
        if len(secret) >= 4:
            forms.update({secret, quote(secret, safe=""), base64.b64encode(secret.encode()).decode()})
    return sorted(forms, key=len, reverse=True)


class RedactingFilter(logging.Filter):
    def __init__(self, redactor: Redactor):
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = self.redactor(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True
