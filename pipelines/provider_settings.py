"""Each provider's settings from its environment variables: one parser per provider, returning the
settings of one account, or None and the reason it is not configured. The accounts file feeds the
same parsers (pipelines/accounts.py), so a setting means the same wherever it is written.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import SecretStr

from connectors.settings import (AMAZON_API_BASE_URL, AMAZON_TOKEN_ENDPOINTS, API_VERSION_RE, ASIN_RE,
                                 DEFAULT_SHOPIFY_API_VERSION, EBAY_API_BASE_URL, EBAY_MARKETPLACE_RE,
                                 MARKETPLACE_RE, PAAPI_RETIRED, SHOP_DOMAIN_RE, AmazonSettings, EbaySettings,
                                 ShopifySettings)
from storage.lake.objects import is_loopback


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable and what to do."""


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or not value.strip():
        return None
    return value  # not stripped: a stray newline in a host name must be refused, not hidden



def _number(env, name: str, default: float, *, minimum: float = 0, kind=float):
    raw = _get(env, name)
    if raw is None:
        return kind(default)
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number (got {raw!r}).") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum} (got {raw!r}).")
    return value





def validate_base_url(name: str, raw: str) -> str:
    """Check a base-URL override: http(s), a host, no credentials, path or query."""
    parts = urlsplit(raw)
    problem = None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problem = "must be a URL such as https://example.com or http://127.0.0.1:8080"
    elif parts.username or parts.password or "@" in parts.netloc:
        problem = "must not contain a user name or password"
    elif parts.path not in ("", "/") or parts.query or parts.fragment:
        problem = "must be a scheme and host (and optional port) only, with no path or query"
    elif parts.scheme == "http" and not is_loopback(parts.hostname):
        problem = "may use plain http only on a loopback address (127.0.0.1, ::1, localhost)"
    else:
        try:
            parts.port
        except ValueError:
            problem = "has an invalid port"
    if problem:
        raise ConfigError(f"{name} {problem} (got {raw!r}).")
    return f"{parts.scheme}://{parts.netloc}"


def _shopify(env) -> tuple[ShopifySettings | None, str | None]:
    domain = _get(env, "SHOPIFY_SHOP_DOMAIN")
    token = _get(env, "SHOPIFY_ACCESS_TOKEN")
    client_id, client_secret = _get(env, "SHOPIFY_CLIENT_ID"), _get(env, "SHOPIFY_CLIENT_SECRET")
    version = _get(env, "SHOPIFY_API_VERSION") or DEFAULT_SHOPIFY_API_VERSION
    base = _get(env, "SHOPIFY_API_BASE_URL")
    if domain is not None and not SHOP_DOMAIN_RE.fullmatch(domain):
        raise ConfigError(
            "SHOPIFY_SHOP_DOMAIN must be exactly <name>.myshopify.com, in lower case, "
            f"with no scheme, path or port (got {domain!r})."
        )
    if not API_VERSION_RE.fullmatch(version):
        raise ConfigError(
            f"SHOPIFY_API_VERSION must look like 2026-10 (a YYYY-MM release) (got {version!r})."
        )
    base_url = validate_base_url("SHOPIFY_API_BASE_URL", base) if base else None
    minted = _shopify_way_in(token, client_id, client_secret)
    if not (domain or token or minted):
        return None, "not configured"
    if not domain:
        return None, "not configured: set SHOPIFY_SHOP_DOMAIN"
    if not (token or minted):
        return None, "not configured: set SHOPIFY_CLIENT_ID and SHOPIFY_CLIENT_SECRET (or SHOPIFY_ACCESS_TOKEN)"
    return (
        ShopifySettings(
            shop_domain=domain,
            api_version=version,
            access_token=None if minted else SecretStr(token),
            base_url=base_url or f"https://{domain}",
            bulk_min_products=_number(env, "SHOPIFY_BULK_MIN_PRODUCTS", 10_000, minimum=0, kind=int),
            client_id=client_id.strip() if minted else None,
            client_secret=SecretStr(client_secret.strip()) if minted else None,
        ),
        None,
    )


def _shopify_way_in(token, client_id, client_secret) -> bool:
    """True for a Dev Dashboard app (client id and secret), False for a static token or nothing;
    both ways at once, or half of the pair, is refused."""
    if token and (client_id or client_secret):
        raise ConfigError("Set either SHOPIFY_CLIENT_ID and SHOPIFY_CLIENT_SECRET (a Dev Dashboard app) or "
                          "SHOPIFY_ACCESS_TOKEN (a legacy custom app), not both: remove one of the two ways.")
    if bool(client_id) != bool(client_secret):
        have, lack = (("SHOPIFY_CLIENT_ID", "SHOPIFY_CLIENT_SECRET") if client_id
                      else ("SHOPIFY_CLIENT_SECRET", "SHOPIFY_CLIENT_ID"))
        raise ConfigError(f"{have} is set but {lack} is not: a Dev Dashboard app needs both "
                          "(from the app's Settings page in the Dev Dashboard).")
    return bool(client_id)


def _csv(env, name: str) -> list[str]:
    return [part.strip() for part in (_get(env, name) or "").split(",") if part.strip()]


def _amazon(env) -> tuple[AmazonSettings | None, str | None]:
    cred_id = _get(env, "AMAZON_CREATORS_CREDENTIAL_ID")
    secret = _get(env, "AMAZON_CREATORS_CREDENTIAL_SECRET")
    version = _get(env, "AMAZON_CREATORS_VERSION")
    tag = _get(env, "AMAZON_PARTNER_TAG") or _get(env, "AMAZON_PAAPI_PARTNER_TAG")
    marketplace = _get(env, "AMAZON_MARKETPLACE") or "www.amazon.com"
    legacy = [n for n in ("AMAZON_PAAPI_ACCESS_KEY", "AMAZON_PAAPI_SECRET_KEY", "AMAZON_PAAPI_HOST",
                          "AMAZON_PAAPI_REGION") if _get(env, n)]
    if version is not None and version.strip() not in AMAZON_TOKEN_ENDPOINTS:
        raise ConfigError(f"AMAZON_CREATORS_VERSION must be one of {', '.join(AMAZON_TOKEN_ENDPOINTS)}, the "
                          f"version shown beside the credential in Associates Central (got {version!r}).")
    if not MARKETPLACE_RE.fullmatch(marketplace):
        raise ConfigError(f"AMAZON_MARKETPLACE must look like www.amazon.com or www.amazon.co.uk (got {marketplace!r}).")
    searches = []
    for item in _csv(env, "AMAZON_SEARCH_KEYWORDS"):
        keywords, _, index = item.partition("|")
        if not keywords.strip() or (index and not re.fullmatch(r"[A-Za-z]+", index.strip())):
            raise ConfigError("AMAZON_SEARCH_KEYWORDS takes comma-separated searches, each `keywords` or "
                              f"`keywords|SearchIndex` such as `steel mug|HomeAndKitchen` (got {item!r}).")
        searches.append((keywords.strip(), index.strip() or None))
    asins = [a.upper() for a in _csv(env, "AMAZON_ASINS")]
    bad = [a for a in asins if not ASIN_RE.fullmatch(a)]
    if bad:
        raise ConfigError(f"AMAZON_ASINS must be 10-character ASINs such as B0TESTMUG1 (got {bad[0]!r}).")
    base = _get(env, "AMAZON_API_BASE_URL")
    base_url = validate_base_url("AMAZON_API_BASE_URL", base) if base else AMAZON_API_BASE_URL
    token_override = _get(env, "AMAZON_TOKEN_URL")
    if not (cred_id or secret or version):
        return None, (PAAPI_RETIRED if legacy else "not configured")
    missing = [n for n, v in (("AMAZON_CREATORS_CREDENTIAL_ID", cred_id), ("AMAZON_CREATORS_CREDENTIAL_SECRET", secret),
                              ("AMAZON_CREATORS_VERSION", version), ("AMAZON_PARTNER_TAG", tag)) if not v]
    if not (searches or asins):
        missing.append("AMAZON_SEARCH_KEYWORDS or AMAZON_ASINS")
    if missing:
        return None, "not configured: set " + " and ".join(missing)
    version = version.strip()
    token_url = AMAZON_TOKEN_ENDPOINTS[version][0]
    if token_override:
        token_url = validate_base_url("AMAZON_TOKEN_URL", _origin(token_override)) + _path_of(token_override)
    return AmazonSettings(
        credential_id=cred_id.strip(), credential_secret=SecretStr(secret.strip()), version=version,
        partner_tag=tag.strip(), marketplace=marketplace, searches=tuple(searches), asins=tuple(asins),
        base_url=base_url, token_url=token_url,
        requests_per_second=_number(env, "AMAZON_REQUESTS_PER_SECOND", 1.0, minimum=0.01),
    ), None


def _ebay(env, data_dir: Path) -> tuple[EbaySettings | None, str | None]:
    client_id, secret = _get(env, "EBAY_CLIENT_ID"), _get(env, "EBAY_CLIENT_SECRET")
    token = _get(env, "EBAY_OAUTH_TOKEN")
    marketplace = (_get(env, "EBAY_MARKETPLACE_ID") or "EBAY_US").strip()
    if not EBAY_MARKETPLACE_RE.fullmatch(marketplace):
        raise ConfigError(f"EBAY_MARKETPLACE_ID must be an eBay marketplace id such as EBAY_US or EBAY_GB (got {marketplace!r}).")
    queries = _csv(env, "EBAY_SEARCH_QUERIES")
    for query in queries:  # eBay's documented rules for q
        if len(query) > 100 or "*" in query:
            raise ConfigError(f"EBAY_SEARCH_QUERIES: each search must be at most 100 characters with no * (got {query[:120]!r}).")
    categories = _csv(env, "EBAY_CATEGORY_IDS")
    bad = [c for c in categories if not c.isdigit()]
    if bad:
        raise ConfigError(f"EBAY_CATEGORY_IDS must be numeric eBay category ids such as 29792 (got {bad[0]!r}).")
    base = _get(env, "EBAY_API_BASE_URL")
    base_url = validate_base_url("EBAY_API_BASE_URL", base) if base else EBAY_API_BASE_URL
    budget = _number(env, "EBAY_DAILY_CALL_BUDGET", 5000, minimum=1, kind=int)
    rate = _number(env, "EBAY_REQUESTS_PER_SECOND", 5.0, minimum=0.01)
    refresh = _get(env, "EBAY_REFRESH_TOKEN")
    if not (client_id or secret or token or refresh):
        return None, "not configured"
    missing = []
    if refresh and not (client_id and secret):
        # A user token is minted with the keyset the seller consented to: a static token cannot.
        missing.append("EBAY_CLIENT_ID and EBAY_CLIENT_SECRET (EBAY_REFRESH_TOKEN is minted into user tokens "
                       "with the keyset the seller consented to)" if not (client_id or secret) else
                       "EBAY_CLIENT_SECRET" if client_id else "EBAY_CLIENT_ID")
    elif not token and not (client_id and secret):
        missing.append("EBAY_CLIENT_SECRET" if client_id else "EBAY_CLIENT_ID")
    if not (queries or categories or refresh):  # an account for orders only needs no search
        missing.append("EBAY_SEARCH_QUERIES or EBAY_CATEGORY_IDS")
    if missing:
        return None, "not configured: set " + " and ".join(missing)
    minted = bool(client_id and secret)
    return EbaySettings(
        client_id=client_id.strip() if minted else None,
        client_secret=SecretStr(secret.strip()) if minted else None,
        static_token=None if minted else SecretStr(token.strip()),
        marketplace=marketplace, queries=tuple(queries), category_ids=tuple(categories),
        filter=_get(env, "EBAY_FILTER"), daily_call_budget=budget, base_url=base_url, requests_per_second=rate,
        calls_file=data_dir / "state" / f"ebay_calls.{_keyset(client_id if minted else None)}.json",
        refresh_token=SecretStr(refresh.strip()) if refresh else None,
    ), None


def _keyset(client_id: str | None) -> str:
    """A file-name-safe id of the eBay keyset (its client id): the daily budget is the keyset's,
    whichever accounts use it. A static token's keyset is unknown: those accounts share one count."""
    return hashlib.sha256(client_id.strip().encode()).hexdigest()[:12] if client_id else "static-token"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else url


def _path_of(url: str) -> str:
    return urlsplit(url).path if urlsplit(url).netloc else ""
