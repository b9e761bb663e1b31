"""Amazon Creators API item -> Product. Pure: no I/O, no clock."""

from __future__ import annotations

from datetime import datetime

from normalize import Rejected, make_product, obj, parse_price
from normalize.dedup import raw_hash
from normalize.models import Product

SOURCE = "amazon"
NORMALIZER_VERSION = 1


def to_product(raw: dict, *, account: str, fetched_at: datetime, run_id: str) -> Product:
    """The Product for one Creators API item (searchItems or getItems)."""
    if not isinstance(raw, dict):
        raise Rejected("record is not a JSON object")
    info = obj(raw.get("itemInfo"))
    listing = _buy_box(obj(raw.get("offersV2")).get("listings"))
    money = obj(obj(listing.get("price")).get("money"))
    nodes = obj(raw.get("browseNodeInfo")).get("browseNodes")
    node = obj(nodes[0]) if isinstance(nodes, list) and nodes else {}
    features = obj(info.get("features")).get("displayValues")
    return make_product(
        source=SOURCE,
        account=account,
        source_id=raw.get("asin"),
        title=_display(info.get("title")),
        description="\n".join(f for f in features if isinstance(f, str)) if isinstance(features, list) else None,
        brand=_display(obj(info.get("byLineInfo")).get("brand")),
        category=node.get("displayName") or node.get("contextFreeName"),
        url=raw.get("detailPageURL"),
        image_url=obj(obj(obj(raw.get("images")).get("primary")).get("large")).get("url"),
        price=parse_price(money.get("amount"), "offersV2.listings.price.money.amount"),
        currency=money.get("currency"),
        availability=_lower(obj(listing.get("availability")).get("type")),
        condition=obj(listing.get("condition")).get("value"),
        seller=obj(listing.get("merchantInfo")).get("name"),
        gtin=_first_external_id(obj(info.get("externalIds"))),
        fetched_at=fetched_at,
        run_id=run_id,
        raw_hash=raw_hash(SOURCE, NORMALIZER_VERSION, raw),
    )


def _buy_box(listings) -> dict:
    """The buy-box winner, else the first listing, else nothing."""
    if not isinstance(listings, list):
        return {}
    listings = [entry for entry in listings if isinstance(entry, dict)]
    winner = next((entry for entry in listings if entry.get("isBuyBoxWinner") is True), None)
    return winner or (listings[0] if listings else {})


def _display(value):
    value = obj(value).get("displayValue")
    return value if value is None or isinstance(value, str) else str(value)


def _first_external_id(ids: dict):
    for key in ("eans", "upcs", "isbns"):
        values = obj(ids.get(key)).get("displayValues")
        if isinstance(values, list) and values and isinstance(values[0], str):
            return values[0]
    return None




def _lower(value):
    return value.lower() if isinstance(value, str) else None
