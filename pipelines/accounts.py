"""Accounts: the provider accounts a run works on, from the accounts file or the environment.

The accounts file (TOML, `PIPELINE_ACCOUNTS_FILE`, default `<repo>/accounts.toml` when it exists)
holds one array of tables per provider. Each entry takes that provider's settings under the names
of its environment variables, lower-cased and without the provider prefix, so an entry is turned
into the variables it stands for and read by the same parser as the environment. Secret-bearing
keys take references only (pipelines/secret_refs.py), never a literal value.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pipelines.secret_refs import is_reference
from storage.paths import ACCOUNT_RE, STREAMS, UnitId

# key in the accounts file -> the environment variable it stands for
KEYS = {
    "shopify": {"shop_domain": "SHOPIFY_SHOP_DOMAIN", "api_version": "SHOPIFY_API_VERSION",
                "access_token": "SHOPIFY_ACCESS_TOKEN", "client_id": "SHOPIFY_CLIENT_ID",
                "client_secret": "SHOPIFY_CLIENT_SECRET", "api_base_url": "SHOPIFY_API_BASE_URL",
                "bulk_min_products": "SHOPIFY_BULK_MIN_PRODUCTS"},
    "amazon": {"credential_id": "AMAZON_CREATORS_CREDENTIAL_ID", "credential_secret": "AMAZON_CREATORS_CREDENTIAL_SECRET",
               "version": "AMAZON_CREATORS_VERSION", "partner_tag": "AMAZON_PARTNER_TAG",
               "marketplace": "AMAZON_MARKETPLACE", "search_keywords": "AMAZON_SEARCH_KEYWORDS",
               "asins": "AMAZON_ASINS", "api_base_url": "AMAZON_API_BASE_URL", "token_url": "AMAZON_TOKEN_URL",
               "requests_per_second": "AMAZON_REQUESTS_PER_SECOND"},
    "ebay": {"client_id": "EBAY_CLIENT_ID", "client_secret": "EBAY_CLIENT_SECRET", "oauth_token": "EBAY_OAUTH_TOKEN",
             "marketplace_id": "EBAY_MARKETPLACE_ID", "search_queries": "EBAY_SEARCH_QUERIES",
             "category_ids": "EBAY_CATEGORY_IDS", "filter": "EBAY_FILTER", "daily_call_budget": "EBAY_DAILY_CALL_BUDGET",
             "api_base_url": "EBAY_API_BASE_URL", "requests_per_second": "EBAY_REQUESTS_PER_SECOND",
             "refresh_token": "EBAY_REFRESH_TOKEN"},
}
SECRET_KEYS = {"shopify": {"access_token", "client_secret"}, "amazon": {"credential_secret"},
               "ebay": {"client_secret", "oauth_token", "refresh_token"}}
# Variables that are account settings rather than settings of the whole pipeline. The legacy PA-API
# variables count too: with a file they are as ignored as the rest.
ACCOUNT_VARIABLES = {v for keys in KEYS.values() for v in keys.values()} | {
    "AMAZON_PAAPI_ACCESS_KEY", "AMAZON_PAAPI_SECRET_KEY", "AMAZON_PAAPI_HOST", "AMAZON_PAAPI_REGION",
    "AMAZON_PAAPI_PARTNER_TAG"}
SECRET_VARIABLES = {p: {KEYS[p][k] for k in keys} for p, keys in SECRET_KEYS.items()}


class AccountsFileError(Exception):
    """The accounts file is malformed; the message names the file, the account and the key."""


@dataclass(frozen=True)
class AccountEntry:
    """One account as written: its provider, name (None: its natural id), streams and variables."""

    provider: str
    name: str | None
    streams: tuple[str, ...] | None
    variables: dict  # environment-variable name -> value or reference, as written
    where: str  # "<file>: shopify account 'us-store'" for messages
    path: Path


def default_path(repo_root: Path, env: Mapping[str, str]) -> Path | None:
    """The accounts file in force: PIPELINE_ACCOUNTS_FILE (relative to the repository), else
    <repo>/accounts.toml when it exists, else None (the environment defines the accounts)."""
    raw = env.get("PIPELINE_ACCOUNTS_FILE", "").strip()
    if raw:
        path = Path(raw).expanduser()
        return path if path.is_absolute() else repo_root / path
    path = repo_root / "accounts.toml"
    return path if path.is_file() else None


def read_file(path: Path, providers: tuple[str, ...]) -> list[AccountEntry]:
    """Every entry of the accounts file, checked for shape; AccountsFileError names what is wrong."""
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise AccountsFileError(f"{path}: no such accounts file (PIPELINE_ACCOUNTS_FILE); create it or unset the "
                                "variable") from None
    except OSError as exc:
        raise AccountsFileError(f"{path}: cannot read the accounts file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise AccountsFileError(f"{path}: not valid TOML: {exc}") from None
    entries = []
    for provider, tables in document.items():
        if provider not in providers:
            raise AccountsFileError(f"{path}: unknown provider [[{provider}]]; use {', '.join(providers)}")
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            raise AccountsFileError(f"{path}: write each {provider} account as a [[{provider}]] table")
        for index, table in enumerate(tables, start=1):
            entries.append(_entry(path, provider, index, table))
    _check_unique(path, entries)
    return entries


def _entry(path: Path, provider: str, index: int, table: dict) -> AccountEntry:
    name = table.get("name")
    where = f"{path}: {provider} account {name!r}" if name else f"{path}: {provider} account #{index}"
    if name is not None and (not isinstance(name, str) or not ACCOUNT_RE.fullmatch(name) or ".." in name):
        raise AccountsFileError(f"{where}: name must be 1-80 letters, digits, '.', '_' or '-', starting with a "
                                "letter or digit")
    streams = table.get("streams")
    if streams is not None:
        if not isinstance(streams, list) or not streams or any(s not in STREAMS for s in streams):
            raise AccountsFileError(f"{where}: streams must be a list drawn from {', '.join(STREAMS)}")
        streams = tuple(dict.fromkeys(streams))
    variables = {}
    for key, value in table.items():
        if key in ("name", "streams"):
            continue
        if key not in KEYS[provider]:
            raise AccountsFileError(f"{where}: unknown key {key!r}; {provider} accounts take "
                                    f"{', '.join(sorted(KEYS[provider]))}, name and streams")
        if key in SECRET_KEYS[provider]:
            if not is_reference(value):
                raise AccountsFileError(f"{where}: {key} holds a secret, so it must be a reference (env:NAME, "
                                        "file:/path or aws-sm:<secret-id>[#key]), not the value itself (the value "
                                        "is not shown)")
        elif isinstance(value, list):
            if not all(isinstance(v, (str, int)) for v in value):
                raise AccountsFileError(f"{where}: {key} must be a list of strings")
            value = ",".join(str(v) for v in value)
        elif isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise AccountsFileError(f"{where}: {key} must be a string or a number")
        variables[KEYS[provider][key]] = str(value)
    return AccountEntry(provider, name, streams, variables, where, path)


def _check_unique(path: Path, entries: list[AccountEntry]) -> None:
    seen: dict[tuple[str, str], AccountEntry] = {}
    for entry in entries:
        if entry.name is None:
            continue
        key = (entry.provider, entry.name.lower())
        if key in seen:
            raise AccountsFileError(f"{path}: two {entry.provider} accounts are named {entry.name!r} (names are "
                                    "unique within a provider, whatever their case); rename one")
        seen[key] = entry


def ignored_variables(env: Mapping[str, str]) -> list[str]:
    """Account variables set in the environment that an accounts file makes irrelevant."""
    return sorted(n for n in ACCOUNT_VARIABLES if (env.get(n) or "").strip())


def select(units: list[UnitId], specs: tuple[str, ...] | None) -> list[UnitId]:
    """The units `--accounts` names (`provider:name` or a name unique across providers); ValueError
    lists the choices for an unknown or ambiguous one."""
    if not specs:
        return units
    accounts = sorted({(u.provider, u.account) for u in units})
    choices = ", ".join(f"{p}:{a}" for p, a in accounts) or "(none configured)"
    chosen = set()
    for spec in specs:
        provider, _, name = spec.rpartition(":")
        matches = [(p, a) for p, a in accounts if a.lower() == name.lower() and (not provider or p == provider)]
        if not matches:
            raise ValueError(f"--accounts: no account {spec!r}; choose from {choices}")
        if len(matches) > 1:
            raise ValueError(f"--accounts: {spec!r} is ambiguous; name one of "
                             + ", ".join(f"{p}:{a}" for p, a in matches))
        chosen.add(matches[0])
    return [u for u in units if (u.provider, u.account) in chosen]
