"""The destination's settings: where data and state go (a folder or `s3://bucket/prefix`), in which
table format, and the lease duration of an object-store destination.

  --destination / PIPELINE_DESTINATION   a path (the default, <repo>/data) or s3://bucket/prefix;
                                         --data-dir / PIPELINE_DATA_DIR stay spellings of a path
  --table-format / PIPELINE_TABLE_FORMAT parquet (files, the default) or delta (a Delta table)
  PIPELINE_LEASE_SECONDS                 900: a unit's lease in an object store, renewed every fifth
  AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL   an S3-compatible store (MinIO, R2, Ceph); http only on loopback

The command line beats the environment: --destination, then --data-dir, then PIPELINE_DESTINATION,
then PIPELINE_DATA_DIR.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pipelines.provider_settings import ConfigError, _get, _number
from storage.settings import TABLE_FORMATS, DestinationSettings
from storage.lake.objects import parse_s3_url

AWS_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", *AWS_SECRET_VARIABLES)


def where(env: Mapping[str, str], *, destination: str | None, data_dir: Path | None, repo_root: Path):
    """(local data folder override or None, S3 location or None) from the options and `env`."""
    raw, name = destination, "--destination"
    if raw is None and data_dir is None:
        raw, name = _get(env, "PIPELINE_DESTINATION"), "PIPELINE_DESTINATION"
        if raw is not None and "://" not in raw:  # a path in the variable: relative to the repository
            path = Path(raw).expanduser()
            return (path if path.is_absolute() else repo_root / path).resolve(), None
    if raw is None:
        return data_dir, None
    raw = raw.strip()
    if raw.startswith("s3://"):  # the data folder (--data-dir, else PIPELINE_DATA_DIR) stays local-only
        try:
            return data_dir, parse_s3_url(raw, env)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}.") from None
    if "://" in raw:
        raise ConfigError(f"{name} takes a folder or s3://bucket/prefix (got a {raw.split('://')[0]}:// URL).")
    return Path(raw).expanduser().resolve(), None


def destination_settings(env: Mapping[str, str], s3, *, data_dir: Path, logs_dir: Path, file_mode: int,
                         rows_per_file: int, table_format: str | None) -> DestinationSettings:
    fmt = (table_format or _get(env, "PIPELINE_TABLE_FORMAT") or "parquet").strip().lower()
    if fmt not in TABLE_FORMATS:
        raise ConfigError(f"PIPELINE_TABLE_FORMAT (or --table-format) must be one of {', '.join(TABLE_FORMATS)} "
                          f"(got {fmt!r}).")
    lease = _number(env, "PIPELINE_LEASE_SECONDS", 900, minimum=0.1)
    aws = {name: env[name] for name in AWS_VARIABLES if env.get(name)} if s3 is not None else {}
    return DestinationSettings(data_dir=data_dir, logs_dir=logs_dir, table_format=fmt, s3=s3, lease_seconds=lease,
                               file_mode=file_mode, rows_per_file=rows_per_file, aws=aws)

