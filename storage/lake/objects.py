"""One bucket and prefix over boto3: plain reads and writes, the conditional writes that stand in
for locks (put-if-absent, If-Match), JSON documents written with them, and the start-up probe.

Retries: botocore's standard mode retries 500, 503 SlowDown and dropped connections with backoff
(up to 8 attempts). A conditional PUT retried after a reset may meet its own first attempt and
get 412: every document carries a one-time `write` token, so `write_document` reads back and
tells "my write landed" from "someone else's did".
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit

BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
PREFIX_RE = re.compile(r"[A-Za-z0-9._=/-]{0,512}")
PROBE_ETAG = '"00000000000000000000000000000000"'


class StoreError(Exception):
    """The object store failed or refused a request; the message names the key, never a secret."""


class PreconditionFailed(StoreError):
    """A conditional write lost: the object exists (put-if-absent) or changed (If-Match)."""


class StoreRefused(StoreError):
    """The store ignores conditional writes: writing to it would lose commits silently."""


@dataclass(frozen=True)
class S3Location:
    """Where an s3:// destination lives and how to reach it (credentials come from the AWS chain)."""

    bucket: str
    prefix: str
    endpoint: str | None = None  # AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL; None: AWS itself
    region: str | None = None

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def uri(self, name: str) -> str:
        return f"{self.url}/{name}"

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def storage_options(self, credentials: dict[str, str]) -> dict[str, str]:
        """delta-rs's options for this store: region, endpoint (plain http only to loopback, checked
        when parsed) and the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)."""
        options = {"AWS_REGION": self.region or "us-east-1", **credentials}
        if self.endpoint:
            options["AWS_ENDPOINT_URL"] = self.endpoint
            if self.endpoint.startswith("http://"):
                options["AWS_ALLOW_HTTP"] = "true"
        return options


def parse_s3_url(url: str, env) -> S3Location:
    """The destination `s3://bucket/prefix` with the endpoint and region from `env`; ValueError
    (never echoing a credential) for a URL with credentials in it, a bad bucket or prefix, or an
    endpoint reached over plain http that is not loopback."""
    parts = urlsplit(url)
    if parts.username or parts.password or "@" in parts.netloc:
        raise ValueError("the destination URL must not carry credentials (s3://key:secret@...): they come "
                         "from the standard AWS chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, "
                         "or the instance's role)")
    prefix = parts.path.strip("/")
    if not BUCKET_RE.fullmatch(parts.netloc) or ".." in parts.netloc:
        raise ValueError(f"{parts.netloc!r} is not an S3 bucket name (lower-case letters, digits, '.' and '-')")
    if not PREFIX_RE.fullmatch(prefix) or ".." in prefix.split("/") or parts.query or parts.fragment:
        raise ValueError(f"{prefix!r} is not a usable prefix (letters, digits, '.', '_', '-', '=' and '/')")
    endpoint = (env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or "").strip() or None
    if endpoint is not None:
        check_endpoint(endpoint)
    region = (env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "").strip() or None
    return S3Location(parts.netloc, prefix, endpoint.rstrip("/") if endpoint else None, region)


def check_endpoint(endpoint: str) -> None:
    """https anywhere; plain http only to this machine (a local MinIO or test server)."""
    parts = urlsplit(endpoint)
    if parts.username or parts.password:
        raise ValueError("the S3 endpoint URL must not carry credentials")
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and is_loopback(parts.hostname or ""):
        return
    raise ValueError(f"the S3 endpoint must be https, or http on loopback (got {parts.scheme}://{parts.hostname})")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Blob:
    body: bytes
    etag: str
    last_modified: datetime
    store_time: datetime  # the store's clock when it answered (the Date header)


class ObjectStore:
    """Names are relative to the destination's prefix."""

    def __init__(self, location: S3Location, env=None):
        import boto3
        from botocore.config import Config

        self.location = location
        env = env or {}
        keys = {"aws_access_key_id": env.get("AWS_ACCESS_KEY_ID"), "aws_secret_access_key": env.get("AWS_SECRET_ACCESS_KEY"),
                "aws_session_token": env.get("AWS_SESSION_TOKEN")} if env.get("AWS_SECRET_ACCESS_KEY") else {}
        self.session = boto3.session.Session(region_name=location.region, **keys)
        config = Config(retries={"max_attempts": 8, "mode": "standard"}, connect_timeout=10, read_timeout=60,
                        max_pool_connections=32, s3={"addressing_style": "path"} if location.endpoint else None)
        self.client = self.session.client("s3", endpoint_url=location.endpoint, config=config)
        self._errors = self.client.exceptions

    def credentials(self) -> dict[str, str]:
        """The resolved AWS credentials as delta-rs storage options."""
        found = self.session.get_credentials()
        if found is None:
            raise StoreError("no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a "
                             "profile, or run with an instance or pod role")
        frozen = found.get_frozen_credentials()
        options = {"AWS_ACCESS_KEY_ID": frozen.access_key, "AWS_SECRET_ACCESS_KEY": frozen.secret_key}
        if frozen.token:
            options["AWS_SESSION_TOKEN"] = frozen.token
        return options

    def secrets(self) -> list[str]:
        """The secret parts of the resolved credentials, for redaction (the run registers them)."""
        options = self.credentials()
        return [v for k, v in options.items() if k != "AWS_ACCESS_KEY_ID"]

    # -- plain ---------------------------------------------------------------------------------
    def get(self, name: str) -> Blob | None:
        """The object, or None when there is none."""
        try:
            answer = self.client.get_object(Bucket=self.location.bucket, Key=self.location.key(name))
        except self._errors.NoSuchKey:
            return None
        except Exception as exc:
            raise self._error("read", name, exc) from exc
        return Blob(answer["Body"].read(), answer["ETag"], answer["LastModified"], _store_time(answer))

    def exists(self, name: str) -> bool:
        try:
            self.client.head_object(Bucket=self.location.bucket, Key=self.location.key(name))
            return True
        except Exception as exc:
            if _status(exc) == 404:
                return False
            raise self._error("look up", name, exc) from exc

    def put(self, name: str, body: bytes, *, if_match: str | None = None, if_absent: bool = False) -> str:
        """Write `body`; returns the new ETag. PreconditionFailed when the condition does not hold."""
        conditions = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"} if if_absent else {}
        try:
            answer = self.client.put_object(Bucket=self.location.bucket, Key=self.location.key(name), Body=body,
                                            **conditions)
        except Exception as exc:
            raise self._error("write", name, exc) from exc
        return answer["ETag"]

    def upload(self, path: Path, name: str) -> None:
        """A local file as one object (multipart for a large one; complete or absent, never half)."""
        try:
            self.client.upload_file(str(path), self.location.bucket, self.location.key(name))
        except Exception as exc:
            raise self._error("upload", name, exc) from exc

    def delete(self, name: str, *, if_match: str | None = None) -> None:
        try:
            self.client.delete_object(Bucket=self.location.bucket, Key=self.location.key(name),
                                      **({"IfMatch": if_match} if if_match else {}))
        except Exception as exc:
            if _status(exc) == 404:
                return
            raise self._error("delete", name, exc) from exc

    def delete_many(self, names: list[str]) -> None:
        for start in range(0, len(names), 1000):  # DeleteObjects takes at most 1,000 keys
            chunk = [{"Key": self.location.key(n)} for n in names[start:start + 1000]]
            try:
                self.client.delete_objects(Bucket=self.location.bucket, Delete={"Objects": chunk, "Quiet": True})
            except Exception as exc:
                raise self._error("delete", names[start], exc) from exc

    def list(self, prefix: str, *, start_after: str | None = None, limit: int | None = None) -> list[str]:
        """Names under `prefix`, in order (after `start_after`, at most `limit`)."""
        names, token, root = [], None, self.location.key("")
        while limit is None or len(names) < limit:
            args = {"Bucket": self.location.bucket, "Prefix": self.location.key(prefix)}
            if token:
                args["ContinuationToken"] = token
            elif start_after:
                args["StartAfter"] = self.location.key(start_after)
            if limit is not None:
                args["MaxKeys"] = min(1000, limit - len(names))
            try:
                answer = self.client.list_objects_v2(**args)
            except Exception as exc:
                raise self._error("list", prefix, exc) from exc
            names += [item["Key"][len(root):] for item in answer.get("Contents", [])]
            token = answer.get("NextContinuationToken")
            if not answer.get("IsTruncated"):
                break
        return names

    # -- documents -----------------------------------------------------------------------------
    def read_document(self, name: str) -> tuple[dict | None, str | None, Blob | None]:
        """(document, ETag, the blob) or (None, None, None) when absent."""
        blob = self.get(name)
        if blob is None:
            return None, None, None
        try:
            return json.loads(blob.body), blob.etag, blob
        except ValueError as exc:
            raise StoreError(f"{self.location.uri(name)} is not a JSON document: {exc}") from None

    def write_document(self, name: str, document: dict, *, etag: str | None) -> str:
        """Write `document` if the object is still at `etag` (None: only if absent); returns the new
        ETag. PreconditionFailed when another writer got there first."""
        document = {**document, "write": secrets.token_hex(8)}
        body = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
        try:
            return self.put(name, body, if_match=etag, if_absent=etag is None)
        except PreconditionFailed:
            found, found_etag, _ = self.read_document(name)
            if found is not None and found.get("write") == document["write"]:
                return found_etag  # a retried request met its own first attempt
            raise

    # -- probe ---------------------------------------------------------------------------------
    def probe(self) -> None:
        """Refuse a store that ignores conditional writes (StoreRefused): put-if-absent twice on a
        probe key, and an If-Match on an ETag it cannot have; both second writes must be refused."""
        name = f"_probe/{secrets.token_hex(8)}"
        self.put(name, b"probe", if_absent=True)
        try:
            for header, condition in (("If-None-Match: *", {"if_absent": True}), ("If-Match", {"if_match": PROBE_ETAG})):
                try:
                    self.put(name, b"probe again", **condition)
                except PreconditionFailed:
                    continue
                raise StoreRefused(
                    f"the object store at {self.location.endpoint or 'AWS S3'} accepted a write it should have "
                    f"refused ({header}): it ignores conditional writes, so concurrent commits, leases and state "
                    "would be lost silently. Nothing was written; use a store that honours them (AWS S3, MinIO, "
                    "Cloudflare R2, Ceph RGW) or remove whatever strips the headers on the way")
        finally:
            self.delete(name)

    def _error(self, verb: str, name: str, exc: Exception) -> StoreError:
        status = _status(exc)
        code = getattr(exc, "response", {}).get("Error", {}).get("Code") if hasattr(exc, "response") else None
        if status == 412 or code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 409:
            return PreconditionFailed(f"{self.location.uri(name)} changed under us (HTTP {status}, {code})")
        detail = f"HTTP {status} {code}" if status else type(exc).__name__
        return StoreError(f"could not {verb} {self.location.uri(name)}: {detail}")


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode") if isinstance(response, dict) else None


def _store_time(answer: dict) -> datetime:
    """The store's clock: the answer's Date header (an RFC 822 date, always UTC)."""
    date = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    when = parsedate_to_datetime(date) if date else answer["LastModified"]
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
