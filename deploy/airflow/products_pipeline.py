"""Airflow 3 DAG for the products pipeline: one task per provider, every six hours.

Copy this file into the DAGs folder (or point the folder at this directory) and set, in the
worker's environment, the provider variables from .env.example (for Shopify, SHOPIFY_CLIENT_ID and
SHOPIFY_CLIENT_SECRET of a Dev Dashboard app, the way for stores set up since 2026, or a legacy
custom app's SHOPIFY_ACCESS_TOKEN; not both) plus:
  PRODUCTS_PIPELINE_REPO       the checkout on the worker (default /opt/airflow/repo)
  PRODUCTS_PIPELINE_PYTHON     its interpreter (default <repo>/.venv/bin/python)
  PRODUCTS_PIPELINE_PROVIDERS  the providers you use (default shopify,amazon,ebay)

Each provider is its own task, so a failing provider retries alone; the pipeline's per-provider
lock lets the tasks run side by side. The Shopify task mints its own short-lived tokens from the
client credentials and keeps them in memory; nothing is stored between runs. Exit code 75 means another run holds that provider's lock:
the task is skipped, not failed.
"""

import os
from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

REPO = os.environ.get("PRODUCTS_PIPELINE_REPO", "/opt/airflow/repo")
PYTHON = os.environ.get("PRODUCTS_PIPELINE_PYTHON", f"{REPO}/.venv/bin/python")
PROVIDERS = [p.strip() for p in os.environ.get("PRODUCTS_PIPELINE_PROVIDERS", "shopify,amazon,ebay").split(",") if p.strip()]
LOCKED = 75  # another run holds the provider's lock

with DAG(
    dag_id="products_pipeline",
    start_date=datetime(2025, 1, 1),
    schedule="0 */6 * * *",
    catchup=False,
    max_active_runs=1,
    tags=["etl", "products"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
) as dag:
    for provider in PROVIDERS:
        BashOperator(
            task_id=f"pipeline_{provider}",
            bash_command=f"{PYTHON} {REPO}/pipelines/run_pipeline.py --verbose --providers {provider}",
            append_env=True,  # credentials come from the worker's environment
            skip_on_exit_code=[LOCKED],
        )
