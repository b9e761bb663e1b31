"""Helpers for tests of an object-store destination: reading its Delta table or Parquet files and
listing its objects, the way a user's reader would (never `to_pyarrow_table()`, see storage/delta.py)."""

from __future__ import annotations

from sandbox.s3 import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY


def storage_options(server) -> dict:
    return {"AWS_ENDPOINT_URL": server.endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY}


def table_rows(server, bucket: str, prefix: str = "lake", columns=None) -> list[dict]:
    """Every row of the Delta table products (each column, or `columns`)."""
    from deltalake import DeltaTable

    table = DeltaTable(f"s3://{bucket}/{prefix}/normalized/products", storage_options=storage_options(server))
    return table.to_pyarrow_dataset().to_table(columns=columns, use_threads=False).to_pylist()


def parquet_rows(server, bucket: str, prefix: str = "lake", columns=None) -> list[dict]:
    """Every row of the Parquet files under normalized/products (the local layout, in a bucket)."""
    import pyarrow.dataset as ds
    from pyarrow import fs

    s3fs = fs.S3FileSystem(access_key=ACCESS_KEY_ID, secret_key=SECRET_ACCESS_KEY, region=REGION,
                           endpoint_override=server.endpoint, scheme="http")
    dataset = ds.dataset(f"{bucket}/{prefix}/normalized/products", filesystem=s3fs, format="parquet",
                         partitioning="hive")
    return dataset.to_table(columns=columns, use_threads=False).to_pylist()


def keys(server, bucket: str, prefix: str = "") -> list[str]:
    client, found, token = server.client(), [], None
    while True:
        page = client.list_objects_v2(Bucket=bucket, Prefix=prefix, **({"ContinuationToken": token} if token else {}))
        found += [item["Key"] for item in page.get("Contents", [])]
        token = page.get("NextContinuationToken")
        if not token:
            return found


def duplicates(rows: list[dict]) -> int:
    """(account, raw_hash) pairs written more than once (dedup is per unit)."""
    pairs = [(r["account"], r["raw_hash"]) for r in rows]
    return len(pairs) - len(set(pairs))


def wait_for_expiry(server, bucket: str, lease_key: str, seconds: float, deadline_s: float = 30) -> None:
    """Until the store's clock (its Date against the lease's Last-Modified, both in whole seconds,
    as the pipeline judges) says the lease is surely expired, or it is gone."""
    import time
    from datetime import timezone
    from email.utils import parsedate_to_datetime

    client, deadline = server.client(), time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            head = client.head_object(Bucket=bucket, Key=lease_key)
        except client.exceptions.ClientError:
            return
        now = parsedate_to_datetime(head["ResponseMetadata"]["HTTPHeaders"]["date"]).replace(tzinfo=timezone.utc)
        if (now - head["LastModified"]).total_seconds() > seconds + 1:
            return
        time.sleep(0.2)
