"""The Product model: the one schema. The Arrow schema is derived from it, never inferred
(storage/schemas.py: a run that writes nothing never imports pyarrow).

Data-quality rules live here, so no record can reach Parquet without passing them: source,
source_id and title present; a price, when present, finite and not negative (zero is a real
price: free items exist); every URL http or https.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timezone
from decimal import Decimal
from typing import Annotated, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from normalize import Rejected

SCHEMA_VERSION = 1


def http_url(value: str | None) -> str | None:
    if value is not None and not value.lower().startswith(("http://", "https://")):
        raise ValueError("URL must start with http:// or https://")
    return value


def _utc(value: datetime | None) -> datetime | None:
    if value is not None:
        if value.tzinfo is None:
            raise ValueError("timestamp must carry a time zone")
        try:
            value = value.astimezone(timezone.utc)
        except OverflowError:  # 0001-01-01T00:00:00+01:00 is before the first representable UTC time
            raise ValueError("timestamp out of range in UTC") from None
    return value


MONEY_PLACES = Decimal("0.0001")


def _money(value: Decimal | None) -> Decimal | None:
    # Four decimal places fit every currency; the Arrow column is decimal(18, 4).
    return None if value is None else value.quantize(MONEY_PLACES)


# The regex engine finds "  " in text of 4-byte characters (emoji) in two thirds of the time `in` takes.
_DOUBLE_SPACE = re.compile("  ").search
TITLE_MAX = 1_000
DESCRIPTION_MAX = 50_000


def _clean_text(limit: int, required: bool = False, multiline: bool = False):
    """NFC, control and invisible format characters dropped, whitespace collapsed, length capped."""

    def one_line(text: str) -> str:
        if text.isprintable():  # the common case: no control, format or private-use characters
            return " ".join(text.split())
        kept = "".join(" " if ch.isspace() else ch for ch in text
                       if ch.isspace() or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn"))
        return " ".join(kept.split())

    def clean(value: str | None) -> str | None:
        if value is None:
            return None
        value = unicodedata.normalize("NFC", value)
        if value.isprintable() and not _DOUBLE_SPACE(value) and value[:1] != " " and value[-1:] != " ":
            # Nothing to clean (most text): printable text has no line break and no whitespace but
            # the ASCII space, so splitting and joining would give it back unchanged.
            value = value[:limit]
        else:
            lines = value.splitlines() if multiline else [value]
            value = "\n".join(line for line in map(one_line, lines) if line)[:limit]
        if required and not value:
            raise ValueError("must not be empty (once control and invisible characters are removed)")
        return value

    return clean


clean_title = _clean_text(TITLE_MAX, required=True)
clean_description = _clean_text(DESCRIPTION_MAX, multiline=True)
MONEY_LIMIT = Decimal("1e14")  # decimal(18, 4): 14 digits before the point

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Title = Annotated[str, AfterValidator(clean_title)]
Description = Annotated[Optional[str], AfterValidator(clean_description)]
Url = Annotated[Optional[str], AfterValidator(http_url)]
Money = Annotated[
    Optional[Decimal], Field(ge=0, lt=MONEY_LIMIT, allow_inf_nan=False), AfterValidator(_money)
]
UtcTime = Annotated[Optional[datetime], AfterValidator(_utc)]
Currency = Annotated[Optional[str], StringConstraints(pattern=r"^[A-Z]{3}$")]


def _unencodable(value, path: str) -> str | None:
    """The path of the first text in `value` UTF-8 cannot encode (a lone surrogate), else None."""
    kind = type(value)
    if kind is str:
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                return path
        return None
    if kind is list:
        items = enumerate(value)
    elif isinstance(value, BaseModel):
        items = value.__dict__.items()
    else:
        return None
    for key, item in items:
        found = _unencodable(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


class Record(BaseModel):
    """A row of a table: every text in it must be writable as UTF-8. pydantic passes a plain
    `str` field's value through as Python holds it, lone surrogates included, and Arrow would then
    fail the whole batch's write; such a record is rejected here, naming the field."""

    # defer_build: pydantic builds a model's validator when a record first needs it, not at import.
    # Records that pass the normalizers' fast path (normalize/checked.py) never do: a run that
    # reads a few unchanged products and stops starts about 40 ms sooner (bench/bench.py).
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    @model_validator(mode="after")
    def _writable(self):
        field = _unencodable(self, "")
        if field is not None:
            raise Rejected("text that is not valid Unicode (a lone surrogate)", field)
        return self


class Variant(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    id: Optional[str] = None
    sku: Optional[str] = None
    barcode: Optional[str] = None
    title: Optional[str] = None
    price: Money = None
    compare_at_price: Money = None
    inventory_quantity: Optional[int] = None
    available: Optional[bool] = None


class Product(Record):
    """One content version of one product from one provider account."""

    source: Literal["shopify", "amazon", "ebay"]
    account: Text
    source_id: Text
    title: Title
    description: Description = None
    brand: Optional[str] = None
    category: Optional[str] = None
    url: Url = None
    image_url: Url = None
    price: Money = None
    currency: Currency = None
    compare_at_price: Money = None
    availability: Optional[str] = None
    condition: Optional[str] = None
    seller: Optional[str] = None
    seller_feedback_score: Optional[int] = None
    seller_feedback_percent: Optional[float] = Field(default=None, ge=0, le=100, allow_inf_nan=False)
    item_country: Optional[str] = None
    buying_options: Optional[list[str]] = None
    sku: Optional[str] = None
    gtin: Optional[str] = None
    epid: Optional[str] = None
    total_inventory: Optional[int] = None
    variants: Optional[list[Variant]] = None
    tags: Optional[list[str]] = None
    source_created_at: UtcTime = None
    source_updated_at: UtcTime = None
    fetched_at: datetime
    run_id: Text
    raw_hash: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    schema_version: int = SCHEMA_VERSION


def arrow_rows(products: list[Product]) -> list[dict]:
    """Each product's fields as `model_dump()` gives them (variants as dicts), read straight from
    the validated instances: half model_dump's cost on the way to Arrow, and the same values."""
    rows = []
    for product in products:
        row = product.__dict__.copy()
        if row["variants"] is not None:
            row["variants"] = [variant.__dict__ for variant in row["variants"]]
        rows.append(row)
    return rows




class ProductDeletion(Record):
    """A provider's word that a product was deleted (Shopify: a destroy event). It closes the
    product's history at `deleted_at`; it is deduplicated like a version of the product (its
    raw_hash is the product's latest once written), so re-reading the event writes nothing."""

    source: Literal["shopify", "amazon", "ebay"]
    account: Text
    source_id: Text  # the deleted product's id
    deleted_at: Annotated[datetime, AfterValidator(_utc)]
    event_id: Text
    fetched_at: datetime
    run_id: Text
    raw_hash: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    schema_version: int = 1

    @property
    def source_updated_at(self) -> None:
        return None  # no version of the product: nothing for a connector to skip

    def rows(self) -> dict[str, list]:
        return {"product_deletions": [self]}
