"""Typed settings from the environment and the repository's `.env`.

Every default path is anchored at the repository, never at the current directory, because cron
starts the pipeline in `$HOME`. Secrets are `SecretStr` and no error message ever echoes one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from pathlib import Path

from dotenv import dotenv_values
from dotenv.parser import parse_stream
from pydantic import SecretStr

from pipelines import accounts as accounts_file
from pipelines import destination_settings as destinations
from pipelines.provider_settings import ConfigError, _amazon, _ebay, _get, _number, _shopify
from pipelines.secret_refs import Resolver, UnresolvedReference, is_reference
from storage.settings import DestinationSettings
from storage.paths import ACCOUNT_RE, STREAMS, UnitId

REPO_ROOT = Path(__file__).resolve().parent.parent
PROVIDERS = ("shopify", "amazon", "ebay")
DEFAULT_STREAMS = ("products",)  # orders are asked for: PIPELINE_STREAMS, --streams, an account's `streams`


@dataclass(frozen=True)
class Account:
    """One provider account: its name (the `account` column), its settings, and its streams."""

    provider: str
    name: str
    settings: object | None  # the provider's settings; None when the account cannot run
    reason: str | None = None  # why it cannot run
    streams: tuple[str, ...] = DEFAULT_STREAMS
    natural: bool = True  # named by its natural id (shop domain, marketplace): no `name` given

    @property
    def ready(self) -> bool:
        return self.settings is not None


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    logs_dir: Path
    cache_dir: Path
    cache_ttl: timedelta
    lookback: timedelta
    quarantine_max_percent: float
    output_file_mode: int
    connect_timeout_s: float
    read_timeout_s: float
    request_deadline_s: float
    max_attempts: int
    max_total_wait_s: float
    breaker_threshold: int
    rows_per_file: int
    anomaly_window: int
    anomaly_factor: float
    anomaly_floor: int
    metrics_file: Path | None
    accounts: tuple[Account, ...] = ()
    not_configured: dict[str, str] = field(default_factory=dict)  # provider with no account -> why
    warnings: tuple[str, ...] = ()  # for the log, once per run
    accounts_file: Path | None = None
    bulk_workers: int = 2  # PIPELINE_BULK_WORKERS: processes reading a large downloaded bulk result (1: this
    # one); 2 or more: a long paged crawl's batches are normalized by a worker process too
    orders_lookback: timedelta = timedelta(minutes=60)
    orders_customer_key: SecretStr | None = None  # PIPELINE_ORDERS_CUSTOMER=hash: the HMAC key
    orders_key_problem: str | None = None  # its reference did not resolve: orders units fail with this
    destination: DestinationSettings | None = None  # None: the local data_dir, Parquet (tests build Settings so)
    query_memory: str | None = None  # PIPELINE_QUERY_MEMORY: DuckDB's memory_limit for `query` (None: a quarter of RAM)

    def provider(self, name: str):
        """The settings of the provider's first ready account, or None."""
        return next((a.settings for a in self.accounts if a.provider == name and a.settings is not None), None)

    @property
    def shopify(self):
        return self.provider("shopify")

    @property
    def amazon(self):
        return self.provider("amazon")

    @property
    def ebay(self):
        return self.provider("ebay")

    def units(self, streams: tuple[str, ...] | None = None) -> list[UnitId]:
        """Every configured unit of work, in provider order then the accounts' own order."""
        return [UnitId(a.provider, a.name, s) for p in PROVIDERS for a in self.accounts if a.provider == p
                for s in (streams or a.streams)]

    def account(self, unit: UnitId) -> Account:
        return next(a for a in self.accounts if (a.provider, a.name) == (unit.provider, unit.account))

    def default_accounts(self) -> dict[str, str]:
        """Provider -> the account that runs from before units (one account per provider) belong
        to: its first account named by its natural id."""
        found = {}
        for a in self.accounts:
            if a.natural and a.provider not in found:
                found[a.provider] = a.name
        return found

    def check_one_orders_unit_per_seller(self, units: list[UnitId]) -> None:
        """ValueError when `units` would load one eBay seller's orders twice, or under another account
        than the one the configuration loads them with. eBay's orders belong to the seller, not to a
        marketplace: accounts whose refresh tokens are equal are one seller, and one of them (the one
        whose streams ask for orders) loads its orders."""
        configured = {}  # seller -> the account the configuration loads its orders with
        for a in self.accounts:
            if _seller(a) is not None and "orders" in a.streams:
                configured.setdefault(_seller(a), a.name)
        chosen = {}
        for unit in units:
            seller = _seller(self.account(unit)) if (unit.provider, unit.stream) == ("ebay", "orders") else None
            if seller is None:
                continue
            first, owner = chosen.setdefault(seller, unit.account), configured.get(seller, unit.account)
            if not unit.account == first == owner:
                pair = sorted({first, owner, unit.account})
                raise ValueError(
                    f"ebay accounts {pair[0]!r} and {pair[1]!r} share one refresh token, so they are one seller, and "
                    "eBay's orders belong to the seller, not to a marketplace: ask for orders on one of them only. "
                    f"In the accounts file, streams = [\"products\", \"orders\"] on one and [\"products\"] on the "
                    "other (PIPELINE_STREAMS and --streams apply to every account; --accounts picks one)")

    def secrets(self) -> list[str]:
        """Every secret value in these settings, for redaction."""
        values = [self.orders_customer_key.get_secret_value()] if self.orders_customer_key else []
        for a in self.accounts:
            for f in fields(a.settings) if a.settings is not None else ():
                value = getattr(a.settings, f.name)
                if isinstance(value, SecretStr):
                    values.append(value.get_secret_value())
        if self.destination is not None:
            values += [v for k, v in self.destination.aws.items() if k in destinations.AWS_SECRET_VARIABLES]
        return [v for v in values if v]


def _seller(account: Account) -> str | None:
    """The eBay seller an account stands for (its refresh token), or None."""
    token = getattr(account.settings, "refresh_token", None) if account.provider == "ebay" else None
    return token.get_secret_value() if token is not None else None


def read_environment(env_file: Path | None) -> dict[str, str]:
    """The process environment over the `.env` file's values (the environment wins)."""
    from_file = {}
    if env_file is not None and env_file.is_file():
        _check_env_file(env_file)
        from_file = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
    return {**from_file, **os.environ}


def _check_env_file(env_file: Path) -> None:
    """A line python-dotenv cannot parse (an unclosed quote, say) is an error naming the line:
    dotenv itself would only warn and drop it, and the run would then blame a missing setting."""
    with open(env_file, encoding="utf-8") as stream:
        for binding in parse_stream(stream):
            if binding.error:
                line = binding.original.line
                raise ConfigError(f"{env_file} line {line} cannot be parsed: each line must be NAME=value, "
                                  "with any quote closed on the same line (or a # comment); fix that line")


def _path(env, name: str, override: Path | None, default: Path) -> Path:
    if override is not None:
        return Path(override).expanduser().resolve()
    raw = _get(env, name)
    if raw is None:
        return default
    path = Path(raw).expanduser()
    return (path if path.is_absolute() else REPO_ROOT / path).resolve()


def _file_mode(env, name: str, default: int) -> int:
    raw = _get(env, name)
    if raw is None:
        return default
    if not re.fullmatch(r"0?o?[0-7]{3}", raw):
        raise ConfigError(f"{name} must be an octal file mode such as 0640 (got {raw!r}).")
    return int(raw.replace("o", "")[-3:], 8)


def load_settings(
    env: Mapping[str, str],
    *,
    data_dir: Path | None = None,
    logs_dir: Path | None = None,
    cache_dir: Path | None = None,
    destination: str | None = None,
    table_format: str | None = None,
) -> Settings:
    """Build settings from an environment mapping; raises ConfigError naming the variable."""
    local, s3 = destinations.where(env, destination=destination, data_dir=data_dir, repo_root=REPO_ROOT)
    resolved_data_dir = _path(env, "PIPELINE_DATA_DIR", local, REPO_ROOT / "data")
    resolved_logs_dir = _path(env, "PIPELINE_LOGS_DIR", logs_dir, REPO_ROOT / "logs")
    file_mode = _file_mode(env, "PIPELINE_OUTPUT_FILE_MODE", 0o640)
    rows_per_file = _number(env, "PIPELINE_ROWS_PER_FILE", 250_000, minimum=1, kind=int)
    path = accounts_file.default_path(REPO_ROOT, env)
    resolver = Resolver(env)
    if path is None:
        accounts, not_configured, warnings = [], {}, []
        for provider in PROVIDERS:
            account, reason = _account(provider, None, dict(env), resolver, resolved_data_dir)
            if account is not None:
                accounts.append(account)
            else:
                not_configured[provider] = reason
    else:
        accounts, warnings = _file_accounts(path, resolver, resolved_data_dir), []
        not_configured = {p: "not configured" for p in PROVIDERS if all(a.provider != p for a in accounts)}
        ignored = accounts_file.ignored_variables(env)
        if ignored:
            warnings.append(f"the accounts file {path} defines the accounts, so these variables are ignored: "
                            f"{', '.join(ignored)}")
    streams = _streams(env)
    if streams:
        accounts = [replace(a, streams=streams) for a in accounts]
    _check_names(accounts, path)
    settings = Settings(
        data_dir=resolved_data_dir,
        logs_dir=resolved_logs_dir,
        cache_dir=_path(env, "PIPELINE_CACHE_DIR", cache_dir, REPO_ROOT / ".cache" / "api"),
        cache_ttl=timedelta(seconds=_number(env, "PIPELINE_CACHE_TTL_SECONDS", 3600)),
        lookback=timedelta(minutes=_number(env, "PIPELINE_LOOKBACK_MINUTES", 10)),
        quarantine_max_percent=_number(env, "PIPELINE_QUARANTINE_MAX_PERCENT", 2.0),
        bulk_workers=_number(env, "PIPELINE_BULK_WORKERS", 2, minimum=1, kind=int),
        output_file_mode=file_mode,
        connect_timeout_s=_number(env, "PIPELINE_CONNECT_TIMEOUT_SECONDS", 10, minimum=0.1),
        read_timeout_s=_number(env, "PIPELINE_READ_TIMEOUT_SECONDS", 60, minimum=0.1),
        request_deadline_s=_number(env, "PIPELINE_REQUEST_DEADLINE_SECONDS", 300, minimum=0.1),
        max_attempts=_number(env, "PIPELINE_MAX_ATTEMPTS", 6, minimum=1, kind=int),
        max_total_wait_s=_number(env, "PIPELINE_MAX_RETRY_WAIT_SECONDS", 600),
        breaker_threshold=_number(env, "PIPELINE_BREAKER_THRESHOLD", 5, minimum=1, kind=int),
        rows_per_file=rows_per_file,
        anomaly_window=_number(env, "PIPELINE_ANOMALY_WINDOW", 8, minimum=1, kind=int),
        anomaly_factor=_number(env, "PIPELINE_ANOMALY_FACTOR", 3.0, minimum=1.0),
        anomaly_floor=_number(env, "PIPELINE_ANOMALY_FLOOR", 50, minimum=0, kind=int),
        metrics_file=_path(env, "PIPELINE_METRICS_FILE", None, None) if _get(env, "PIPELINE_METRICS_FILE") else None,
        accounts=tuple(accounts),
        not_configured=not_configured,
        warnings=tuple(warnings),
        accounts_file=path,
        orders_lookback=timedelta(minutes=_number(env, "PIPELINE_ORDERS_LOOKBACK_MINUTES", 60)),
        **_orders_customer(env, resolver),
        query_memory=(_get(env, "PIPELINE_QUERY_MEMORY") or "").strip() or None,
        destination=destinations.destination_settings(env, s3, data_dir=resolved_data_dir, logs_dir=resolved_logs_dir,
                                                      file_mode=file_mode, rows_per_file=rows_per_file,
                                                      table_format=table_format),
    )
    try:
        settings.check_one_orders_unit_per_seller(settings.units())
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None
    return settings


def _orders_customer(env, resolver: Resolver) -> dict:
    """PIPELINE_ORDERS_CUSTOMER: `none` (default: customer_ref stays null) or `hash` (an HMAC-SHA256
    of the customer's id under PIPELINE_ORDERS_CUSTOMER_KEY, a secret that may be a reference)."""
    mode = (_get(env, "PIPELINE_ORDERS_CUSTOMER") or "none").strip().lower()
    if mode not in ("none", "hash"):
        raise ConfigError(f"PIPELINE_ORDERS_CUSTOMER must be none or hash (got {mode!r}).")
    if mode == "none":
        return {}
    raw = _get(env, "PIPELINE_ORDERS_CUSTOMER_KEY")
    if raw is None:
        raise ConfigError("PIPELINE_ORDERS_CUSTOMER=hash needs PIPELINE_ORDERS_CUSTOMER_KEY: a secret of at least "
                          "32 characters (or a reference to one, such as file:/run/secrets/orders_key).")
    try:
        key = resolver.resolve(raw) if is_reference(raw) else raw
    except UnresolvedReference as exc:
        return {"orders_key_problem": f"PIPELINE_ORDERS_CUSTOMER_KEY: {exc}"}
    if len(key) < 32:
        raise ConfigError("PIPELINE_ORDERS_CUSTOMER_KEY must be at least 32 characters: a short key lets anyone "
                          "who has the data guess customer ids back from their hashes.")
    return {"orders_customer_key": SecretStr(key)}


def _parse(provider: str, env: Mapping[str, str], data_dir: Path):
    if provider == "ebay":
        return _ebay(env, data_dir)
    return {"shopify": _shopify, "amazon": _amazon}[provider](env)


def _account(provider: str, entry, variables: dict, resolver: Resolver, data_dir: Path):
    """(Account, None), or (None, why it is not configured) in the environment's case. References
    among the variables are resolved; one that fails leaves the account unable to run (it fails,
    the others run) with the reason, and a placeholder lets the rest be checked and named."""
    unresolved = None
    for name, value in variables.items():
        if is_reference(value) and (entry is not None or name in accounts_file.SECRET_VARIABLES[provider]):
            try:
                variables[name] = resolver.resolve(value)
            except UnresolvedReference as exc:
                unresolved = unresolved or (str(exc) if entry else f"{name}: {exc}")
                variables[name] = "unresolved-reference"
    try:
        settings, reason = _parse(provider, variables, data_dir)
    except ConfigError as exc:
        if entry is None:
            raise
        raise ConfigError(f"{entry.where}: {_in_file_terms(str(exc), provider)}") from None
    if settings is None:
        if entry is None:
            return None, reason
        raise ConfigError(f"{entry.where}: {_in_file_terms(reason, provider)}")
    name = (entry.name if entry else None) or settings.account
    settings = replace(settings, name=name)
    if provider == "ebay" and entry and "orders" in (entry.streams or ()) and settings.refresh_token is None:
        raise ConfigError(f"{entry.where}: streams asks for orders, which are read with the seller's consent: add "
                          "refresh_token (a reference such as env:EBAY_REFRESH_TOKEN) holding the refresh token "
                          "the seller granted this keyset")
    if unresolved and entry is not None:
        unresolved = f"{entry.path}: {provider} account {name!r}: {unresolved}"
    elif unresolved:
        unresolved = f"{provider} account {name!r}: {unresolved}"
    return Account(provider, name, None if unresolved else settings, unresolved,
                   (entry.streams if entry else None) or DEFAULT_STREAMS, natural=not (entry and entry.name)), None


def _file_accounts(path: Path, resolver: Resolver, data_dir: Path) -> list[Account]:
    """The accounts of the accounts file. A malformed entry is a ConfigError naming the file, the
    account and the key; a reference that does not resolve fails only its account."""
    try:
        entries = accounts_file.read_file(path, PROVIDERS)
    except accounts_file.AccountsFileError as exc:
        raise ConfigError(str(exc)) from None
    return [_account(entry.provider, entry, dict(entry.variables), resolver, data_dir)[0] for entry in entries]


def _in_file_terms(message: str, provider: str) -> str:
    """A parser's message with each variable name replaced by its key in the accounts file."""
    for key, variable in sorted(accounts_file.KEYS[provider].items(), key=lambda kv: -len(kv[1])):
        message = message.replace(variable, key)
    return message.replace("not configured: set", "missing").replace("(or ", "(or set ")


def _streams(env) -> tuple[str, ...] | None:
    raw = _get(env, "PIPELINE_STREAMS")
    if raw is None:
        return None
    streams = tuple(dict.fromkeys(s.strip() for s in raw.split(",") if s.strip()))
    unknown = [s for s in streams if s not in STREAMS]
    if unknown or not streams:
        raise ConfigError(f"PIPELINE_STREAMS takes a comma-separated list of {', '.join(STREAMS)} (got {raw!r}).")
    return streams


def _check_names(accounts: list[Account], path: Path | None) -> None:
    where = f"{path}: " if path else ""
    seen = {}
    for a in accounts:
        if not ACCOUNT_RE.fullmatch(a.name) or ".." in a.name:
            raise ConfigError(f"{where}{a.provider} account {a.name!r}: give it a `name` of letters, digits, '.', '_' or '-'.")
        key = (a.provider, a.name.lower())
        if key in seen:
            raise ConfigError(f"{where}two {a.provider} accounts are both named {a.name!r} (unnamed accounts take their "
                              "natural id: the shop domain, marketplace or marketplace id); give one a `name`.")
        seen[key] = a
