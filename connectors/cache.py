"""The disk cache for development runs (--dry-run, --limit): what it may keep and how.

Only clean JSON answers are kept, serialized as JSON (never pickle), in a folder only the owner can
read, and keyed without the headers that carry credentials; an error never serves a stale answer.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path


def cached_session(cache_dir: Path, ttl: timedelta, secret_headers: tuple[str, ...]):
    """A session that caches 200 answers with clean JSON bodies in `cache_dir` for `ttl`."""
    # Imported here: only development runs cache, and requests_cache loads its DynamoDB backend
    # (boto3, about 70 ms) at import whenever boto3 is installed.
    import requests_cache

    cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(cache_dir, 0o700)
    return requests_cache.CachedSession(
        str(cache_dir / "http_cache.sqlite"),
        backend="sqlite",
        serializer="json",  # never pickle
        expire_after=ttl,
        allowable_codes=(200,),
        allowable_methods=("GET", "POST"),
        ignored_parameters=[*requests_cache.DEFAULT_IGNORED_PARAMS, *secret_headers],
        filter_fn=_is_clean_json,
        stale_if_error=False,
    )


def _is_clean_json(response) -> bool:
    """Only error-free JSON answers may be cached (a GraphQL body with `errors` is no success)."""
    if response.status_code != 200:
        return False
    try:
        body = json.loads(response.content)
    except ValueError:
        return False
    return isinstance(body, dict) and not body.get("errors")
