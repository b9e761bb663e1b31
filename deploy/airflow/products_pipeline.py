"""Airflow 3 DAGs for the products pipeline: a fleet of units every six hours, compaction daily.

products_pipeline, "0 */6 * * *", catchup off, one run at a time:
  prepare    run_pipeline.py prepare: the store's conditional-write probe and the Delta tables,
             created once before anything fans out (first runs never race to create a table)
  units      run_pipeline.py units, inside a task (never at parse time, which would resolve secret
             references on every parse): the units that can run, per provider
  shopify    a group: `ready` (its units), then `run`, mapped, one instance per unit, all at once:
             each shop has its own cost bucket
  amazon     the same, one instance at a time: accounts share a credential's request rate
  ebay       the same, one instance at a time: a keyset's daily budget and request rate
  unready    fails, naming each, when a configured unit could not run (no connection, a secret
             that does not resolve); the others run regardless
Each mapped instance runs `run_pipeline.py --accounts <provider>:<account> --streams <stream>`
against the configured destination (PIPELINE_DESTINATION: best an object store, so that any
worker carries on where the last stopped).

products_compact, daily at 03:30 UTC (between two fleet runs): run_pipeline.py compact.

No pool to create. A task in a pool that does not exist is never scheduled and nothing reports it,
so concurrency is set with max_active_tis_per_dagrun, which needs none; with max_active_runs=1 it
holds across runs too. Every eBay unit waits for the one before it, even on another keyset.

The worker's environment (read when a task runs):
  PRODUCTS_PIPELINE_REPO     the checkout on the worker (default /opt/airflow/repo)
  PRODUCTS_PIPELINE_PYTHON   its interpreter (default <repo>/.venv/bin/python); the Airflow
                             environment needs none of the pipeline's packages
  PIPELINE_DESTINATION, PIPELINE_TABLE_FORMAT, PIPELINE_ACCOUNTS_FILE, AWS_* (or the worker's role)
                             as for any run (README, "Two set-ups")
  PIPELINE_LEASE_SECONDS     also read at parse time: the retry delay is a minute longer

Credentials: one Airflow Connection per account, `products_<provider>_<account>`, the account
name lower-cased with every run of other characters than a-z and 0-9 made one "_"
(shopify:eu-store.myshopify.com -> products_shopify_eu_store_myshopify_com). Its fields reach the
task's environment as variables named after the connection id in capitals: login -> <ID>_CLIENT_ID
(Amazon: <ID>_CREDENTIAL_ID), password -> <ID>_CLIENT_SECRET (Amazon: <ID>_CREDENTIAL_SECRET), and
each key of extra -> <ID>_<KEY> (a legacy Shopify token as {"access_token": ...}, an eBay seller's
{"refresh_token": ...}). The accounts file names them as references:
  client_secret = "env:PRODUCTS_SHOPIFY_EU_STORE_CLIENT_SECRET"
Per-account names, not the provider variables, because the units task resolves every account at
once, and two eBay accounts given one EBAY_REFRESH_TOKEN would look like one seller. A unit the
worker's environment already makes ready (file: or aws-sm: references) needs no connection. Any
secrets backend (Vault, AWS Secrets Manager) serves the connections.

Exit codes: 75 (another run holds the unit's lease) fails the try, so it is retried after
retry_delay, longer than the lease (PIPELINE_LEASE_SECONDS): a run killed mid-unit leaves its lease
until it expires, and a skip would lose the cycle. 2 (configuration) fails without retrying; 3
(eBay's budget spent, what came is kept) passes with a warning; anything else fails and retries.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, Connection, TaskGroup, get_current_context, task
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowNotFoundException
from airflow.sdk.log import mask_secret

PROVIDERS = ("shopify", "amazon", "ebay")
# max_active_tis_per_dagrun of each provider's mapped task: None runs every instance at once.
CONCURRENCY = {"shopify": None, "amazon": 1, "ebay": 1}
LOGIN_KEY = {"shopify": "client_id", "amazon": "credential_id", "ebay": "client_id"}
PASSWORD_KEY = {"shopify": "client_secret", "amazon": "credential_secret", "ebay": "client_secret"}
OK, CONFIG, PARTIAL, LOCKED = 0, 2, 3, 75
LEASE_SECONDS = float(os.environ.get("PIPELINE_LEASE_SECONDS") or 900)
RETRY_DELAY = timedelta(seconds=LEASE_SECONDS + 60)  # a dead run's lease has expired by then
DEFAULT_ARGS = {"retries": 3, "retry_delay": RETRY_DELAY}

log = logging.getLogger("products_pipeline")


def connection_id(provider: str, account: str) -> str:
    """The Airflow Connection that holds an account's credentials."""
    return f"products_{provider}_{re.sub(r'[^a-z0-9]+', '_', account.lower()).strip('_')}"


def account_variables(provider: str, account: str) -> dict[str, str]:
    """The account's connection as variables `<CONNECTION ID>_<KEY>`, each value masked in the
    logs; AirflowNotFoundException when there is no such connection."""
    conn_id = connection_id(provider, account)
    conn = Connection.get(conn_id)
    prefix = conn_id.upper()
    fields = {LOGIN_KEY[provider]: conn.login, PASSWORD_KEY[provider]: conn.password, **conn.extra_dejson}
    variables = {}
    for key, value in fields.items():
        if not re.fullmatch(r"[A-Za-z0-9_]+", str(key)):
            raise AirflowFailException(f"connection {conn_id}: extra key {key!r} cannot name a variable; use letters, "
                                       "digits and _ (the accounts file's key, such as refresh_token)")
        if value not in (None, ""):
            mask_secret(str(value))
            variables[f"{prefix}_{key.upper()}"] = str(value)
    return variables


def pipeline_environment() -> dict[str, str]:
    """The worker's environment without Airflow's own settings and connections: the pipeline needs
    none of them, and every other account's secrets stay out of its reach."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW"))}


def pipeline_command(*args: str) -> list[str]:
    """`<python> <repo>/pipelines/run_pipeline.py args...`, from the worker's settings."""
    repo = Path(os.environ.get("PRODUCTS_PIPELINE_REPO") or "/opt/airflow/repo")
    python = os.environ.get("PRODUCTS_PIPELINE_PYTHON") or str(repo / ".venv" / "bin" / "python")
    script = repo / "pipelines" / "run_pipeline.py"
    if not script.is_file():
        raise AirflowFailException(f"no {script}: set PRODUCTS_PIPELINE_REPO to the pipeline's checkout on the worker")
    if not os.access(python, os.X_OK):
        raise AirflowFailException(f"{python} is not an interpreter this worker can run: set "
                                   "PRODUCTS_PIPELINE_PYTHON "
                                   "(the checkout's .venv/bin/python: `make test`, or pip install -r requirements.txt)")
    return [python, str(script), *args]


def run_pipeline(args: list[str], env: dict[str, str], what: str) -> int:
    """Run the pipeline with its output in the task's log; the exit code, after failing the task
    (to retry, or at once for a configuration error) for any but 0 and 3."""
    command = pipeline_command(*args)
    log.info("%s: %s", what, " ".join(command[1:]))
    with subprocess.Popen(command, env=env, cwd=Path(command[1]).parent.parent, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as process:
        for line in process.stdout:
            log.info("%s", line.rstrip())
    code = process.returncode
    if code == LOCKED:
        raise AirflowException(f"{what}: another run holds the lease (exit 75); retried in {RETRY_DELAY}, after a dead "
                               f"run's lease ({LEASE_SECONDS:g} s, PIPELINE_LEASE_SECONDS) has expired")
    if code == CONFIG:
        raise AirflowFailException(f"{what}: configuration error (exit 2, said above); not retried until it is fixed")
    if code == PARTIAL:
        log.warning("%s: partial (exit 3): a quota stopped it, what came is kept; the next run carries on", what)
    elif code != OK:
        raise AirflowException(f"{what}: run_pipeline.py exited {code} (see above)")
    return code


def list_units(env: dict[str, str]) -> list[dict]:
    """`run_pipeline.py units`: one dict per configured unit (provider, account, stream, ready, reason)."""
    done = subprocess.run(pipeline_command("units"), env=env, capture_output=True, text=True, check=False)
    for line in done.stderr.splitlines():
        log.warning("%s", line)
    if done.returncode != OK:
        failure = AirflowFailException if done.returncode == CONFIG else AirflowException
        raise failure(f"run_pipeline.py units exited {done.returncode} (said above)")
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def plan(env: dict[str, str]) -> dict[str, list[dict]]:
    """Every configured unit that can run, per provider, with the account's connection in reach,
    and under "unready" each one that cannot, with the reason."""
    listed = list_units(env)
    accounts = sorted({(u["provider"], u["account"]) for u in listed})
    owners, missing, variables = {}, {}, {}
    for provider, account in accounts:
        conn_id = connection_id(provider, account)
        owners.setdefault(conn_id, []).append(f"{provider}:{account}")
        try:
            variables.update(account_variables(provider, account))
        except AirflowNotFoundException:
            missing[(provider, account)] = conn_id
    if variables:  # again, with every account's credentials: readiness as the units will see it
        listed = list_units({**env, **variables})
    plan_ = {provider: [] for provider in (*PROVIDERS, "unready")}
    for unit in listed:
        key, conn_id = (unit["provider"], unit["account"]), connection_id(unit["provider"], unit["account"])
        reason = unit["reason"]
        if len(owners[conn_id]) > 1:
            reason = (f"accounts {' and '.join(owners[conn_id])} share the connection id {conn_id}: rename one "
                      "in the accounts file")
        elif not unit["ready"] and key in missing:
            reason = (f"{reason}; its credentials go in the Airflow connection {conn_id}, which does not exist: "
                      f"airflow connections add {conn_id} --conn-type generic --conn-login ... --conn-password ...")
        elif unit["ready"]:
            reason = None
        entry = {"provider": unit["provider"], "account": unit["account"], "stream": unit["stream"]}
        if reason is None:
            plan_[unit["provider"]].append(entry)
        else:
            log.error("%s:%s/%s cannot run: %s", *entry.values(), reason)
            plan_["unready"].append({**entry, "reason": reason})
    return plan_


with DAG(
    dag_id="products_pipeline",
    description="Shopify, Amazon and eBay units of work into the destination, one mapped task per unit",
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    schedule="0 */6 * * *",
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["etl", "products"],
    doc_md=__doc__,
) as dag:

    @task
    def prepare() -> None:
        """The destination is ready (the probe, the Delta tables) before any unit runs."""
        run_pipeline(["prepare"], pipeline_environment(), "prepare")

    @task
    def units() -> dict[str, list[dict]]:
        """The units that can run, per provider; those that cannot, under "unready"."""
        return plan(pipeline_environment())

    @task
    def ready(planned: dict[str, list[dict]], provider: str) -> list[dict]:
        """One provider's units that can run (Airflow maps over a task's whole return value only)."""
        return planned[provider]

    @task(map_index_template="{{ unit_label }}")
    def run_unit(unit: dict) -> None:
        """One unit of work, with its account's connection in the environment."""
        label = f"{unit['provider']}:{unit['account']}/{unit['stream']}"
        get_current_context()["unit_label"] = label
        env = pipeline_environment()
        try:
            env.update(account_variables(unit["provider"], unit["account"]))
        except AirflowNotFoundException:
            pass  # the units task found it ready without one (file: or aws-sm: references, the environment)
        run_pipeline(["--accounts", f"{unit['provider']}:{unit['account']}", "--streams", unit["stream"]], env, label)

    @task
    def unready(planned: dict[str, list[dict]]) -> None:
        """Fails when some configured unit could not run, naming each and why."""
        if planned["unready"]:
            raise AirflowFailException(f"{len(planned['unready'])} configured units could not run: " + "; ".join(
                f"{u['provider']}:{u['account']}/{u['stream']}: {u['reason']}" for u in planned["unready"]))

    planned = units()
    prepare() >> planned
    for name in PROVIDERS:
        with TaskGroup(group_id=name):
            run_unit.override(task_id="run", max_active_tis_per_dagrun=CONCURRENCY[name]).expand(
                unit=ready.override(task_id="ready")(planned, name))
    unready(planned)


with DAG(
    dag_id="products_compact",
    description="Compact the destination's Delta tables (optimize, checkpoint, vacuum) once a day",
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    schedule="30 3 * * *",
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["etl", "products", "maintenance"],
) as compact_dag:

    @task
    def compact() -> None:
        """run_pipeline.py compact on the configured destination."""
        run_pipeline(["compact"], pipeline_environment(), "compact")

    compact()
