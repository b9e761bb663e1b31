"""The destination's settings as the storage layer reads them: a dataclass and its defaults, apart
from the writers, so that reading the configuration (and `--help`, and a settings error) loads no
pyarrow or SQLite state code. `pipelines/destination_settings.py` builds them from the environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

TABLE_FORMATS = ("parquet", "delta")
ROWS_PER_FILE = 250_000  # rows a Parquet file holds at most (storage/parquet.py says why)


@dataclass(frozen=True)
class DestinationSettings:
    """Where the data goes: a folder (`data_dir`) or an object store (`s3`), and in which format."""

    data_dir: Path
    logs_dir: Path
    table_format: str = "parquet"
    s3: object | None = None  # storage.lake.objects.S3Location
    lease_seconds: float = 900.0
    file_mode: int = 0o640
    rows_per_file: int = ROWS_PER_FILE
    aws: dict = field(default_factory=dict, repr=False, compare=False)  # AWS_* read with the settings

    @property
    def url(self) -> str:
        return self.s3.url if self.s3 is not None else str(self.data_dir)
