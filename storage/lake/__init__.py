"""An object store (S3 and S3-compatible stores) as the destination: data, state, leases and run
history all live under one `s3://bucket/prefix`, so a worker with an empty disk carries on where
the last run stopped and many workers share one dataset.

  objects.py   the bucket over boto3: reads, conditional writes (the locks of object storage),
               the start-up probe that refuses a store ignoring them
  lease.py     one lease object per unit instead of a lock file: expires, renewed, taken over
  index.py     the unit's state: a manifest (meta, committed runs, index shards) written with
               If-Match, and the latest-hash and version index sharded by key prefix
  unit.py      LakeDestination and LakeUnit, the second implementation of the destination
  history.py   the run log as objects; budget.py the eBay keyset's calls reserved in blocks

boto3 is imported only here, and only when an s3:// destination is used.
"""
