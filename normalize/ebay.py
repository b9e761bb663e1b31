"""eBay Browse item summary -> Product. Pure: no I/O, no clock."""

from __future__ import annotations

from datetime import datetime

from normalize import Rejected, make_product, obj, parse_price
from normalize.dedup import raw_hash
from normalize.models import Product

SOURCE = "ebay"
NORMALIZER_VERSION = 1
# Fields that move without the item changing: delivery estimates, affiliate tracking links,
# watcher counts and pickup distances. They stay out of raw_hash, so a re-read item is no new row.
VOLATILE_FIELDS = ("shippingOptions", "itemAffiliateWebUrl", "distanceFromPickupLocation", "watchCount",
                   "pickupOptions", "availableCoupons")


def to_product(raw: dict, *, account: str, fetched_at: datetime, run_id: str) -> Product:
    """The Product for one Browse API ItemSummary."""
    if not isinstance(raw, dict):
        raise Rejected("record is not a JSON object")
    price = obj(raw.get("price"))
    seller = obj(raw.get("seller"))
    categories = raw.get("categories")
    category = obj(categories[0]) if isinstance(categories, list) and categories else {}
    return make_product(
        source=SOURCE,
        account=account,
        source_id=raw.get("itemId"),
        title=raw.get("title"),
        description=raw.get("shortDescription"),
        category=category.get("categoryName"),
        url=raw.get("itemWebUrl"),
        image_url=obj(raw.get("image")).get("imageUrl"),
        price=parse_price(price.get("value"), "price.value"),
        currency=price.get("currency"),
        condition=raw.get("condition"),
        seller=seller.get("username"),
        seller_feedback_score=seller.get("feedbackScore"),
        seller_feedback_percent=_percent(seller.get("feedbackPercentage")),
        item_country=obj(raw.get("itemLocation")).get("country"),
        buying_options=raw.get("buyingOptions"),
        epid=raw.get("epid"),
        source_created_at=raw.get("itemCreationDate"),
        fetched_at=fetched_at,
        run_id=run_id,
        raw_hash=raw_hash(SOURCE, NORMALIZER_VERSION, raw, drop=VOLATILE_FIELDS),
    )


def _percent(value):
    # eBay sends feedbackPercentage as a decimal string ("99.6").
    if value is None:
        return None
    try:
        number = float(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None:
        raise Rejected("expected a percentage such as \"99.6\"", "seller.feedbackPercentage")
    return number
