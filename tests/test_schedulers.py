"""Every scheduler in the playbook ships as a file that works: cron, Task Scheduler, GitHub
Actions, Airflow (its DagBag check runs from `make check-airflow` in CI), and make."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

import yaml

from pipelines.config import load_settings
from pipelines.destination_settings import AWS_VARIABLES
from pipelines.run_pipeline import cli
from sandbox.catalog import CatalogSpec
from sandbox.shopify import ShopifySandbox
from storage import history_db, runlog
from tools.schedule import crontab_line

REPO = Path(__file__).resolve().parent.parent
TASK = "{http://schemas.microsoft.com/windows/2004/02/mit/task}"


def test_the_printed_crontab_line_runs_under_cron_rules_from_root_on_the_sandbox(tmp_path):
    token = "shpat_cron_test_token"
    with ShopifySandbox(CatalogSpec(size=40), token=token, throttle=False) as server:
        env_file = tmp_path / "pipeline.env"
        env_file.write_text("\n".join([
            f"SHOPIFY_API_BASE_URL={server.base_url}", "SHOPIFY_SHOP_DOMAIN=cron-shop.myshopify.com",
            f"SHOPIFY_ACCESS_TOKEN={token}", f"PIPELINE_DATA_DIR={tmp_path / 'data'}",
            f"PIPELINE_LOGS_DIR={tmp_path / 'logs'}", f"PIPELINE_CACHE_DIR={tmp_path / 'cache'}"]) + "\n")
        env_file.chmod(0o600)
        line = crontab_line(env_file=env_file, logs_dir=tmp_path / "logs")
        schedule, command = line.split(" ", 5)[:5], line.split(" ", 5)[5]
        assert schedule == ["0", "*/6", "*", "*", "*"]
        assert "%" not in command.replace(r"\%", "")  # every % escaped, as cron requires
        as_cron_runs_it = command.replace(r"\%", "%")
        completed = subprocess.run(["env", "-i", "PATH=/usr/bin:/bin", "/bin/sh", "-c", as_cron_runs_it],
                                   cwd="/", capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr + completed.stdout
    log = tmp_path / "logs" / f"pipeline_{datetime.now().strftime('%Y%m%d')}.log"
    assert "shopify:cron-shop.myshopify.com/products: ok, fetched 40, wrote 40" in log.read_text()
    assert runlog.read(tmp_path / "logs")[-1]["providers"]["shopify"]["written"] == 40
    assert list((tmp_path / "data" / "normalized").rglob("*.parquet"))


def test_make_crontab_prints_absolute_paths_for_this_checkout():
    line = crontab_line()
    assert str(REPO / ".venv" / "bin" / "python") in line and str(REPO / "pipelines" / "run_pipeline.py") in line
    assert line.startswith("0 */6 * * * ") and "--verbose" in line
    assert re.search(r"logs/pipeline_\$\(date \+\\%Y\\%m\\%d\)\.log 2>&1$", line)


def test_windows_task_definition_is_well_formed_and_runs_the_cli():
    root = ET.parse(REPO / "deploy" / "windows" / "products-pipeline-task.xml").getroot()
    assert root.tag == f"{TASK}Task"
    exec_ = root.find(f"{TASK}Actions/{TASK}Exec")
    command = exec_.find(f"{TASK}Command").text
    arguments = exec_.find(f"{TASK}Arguments").text
    assert command == r"C:\path\to\repo\.venv\Scripts\python.exe"
    assert exec_.find(f"{TASK}WorkingDirectory").text == r"C:\path\to\repo"
    script, *options = arguments.split()
    assert script == r"pipelines\run_pipeline.py"
    assert (REPO / Path(*script.split("\\"))).is_file()
    context = cli.make_context("run_pipeline.py", options)  # the options parse with the real CLI
    assert context.params["verbose"] is True
    interval = root.find(f"{TASK}Triggers/{TASK}CalendarTrigger/{TASK}Repetition/{TASK}Interval").text
    assert interval == "PT6H"
    assert root.find(f"{TASK}Settings/{TASK}MultipleInstancesPolicy").text == "IgnoreNew"


def test_the_github_workflow_carries_exactly_the_state_the_pipeline_uses():
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "pipeline.yml").read_text())
    triggers = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads `on` as True
    assert triggers["schedule"] == [{"cron": "0 */6 * * *"}] and "workflow_dispatch" in triggers
    assert workflow["concurrency"]["group"] and workflow["concurrency"]["cancel-in-progress"] is False
    steps = workflow["jobs"]["run"]["steps"]
    restore = next(s for s in steps if s.get("uses", "").startswith("actions/cache/restore@"))
    save = next(s for s in steps if s.get("uses", "").startswith("actions/cache/save@"))
    settings = load_settings({})
    expected = {str(p.relative_to(REPO)) for p in (settings.data_dir / "state", runlog.runlog_path(settings.logs_dir),
                                                   history_db.history_path(settings.logs_dir))}
    assert set(restore["with"]["path"].split()) == set(save["with"]["path"].split()) == expected
    assert restore["with"]["key"] == save["with"]["key"] and "github.run_id" in save["with"]["key"]
    assert restore["with"]["restore-keys"].strip() == restore["with"]["key"].split("${{")[0]
    run_step = next(s for s in steps if "run_pipeline.py" in s.get("run", ""))
    for name, value in run_step["env"].items():  # every credential from secrets or vars, none inline
        assert re.fullmatch(r"\$\{\{ (secrets|vars)\.%s \}\}" % name, value), name
    documented = set(re.findall(r"^#? ?(SHOPIFY_\w+|AMAZON_\w+|EBAY_\w+|PIPELINE_\w+)=",
                                (REPO / ".env.example").read_text(), re.M))
    store = {*AWS_VARIABLES, "AWS_REGION", "AWS_ENDPOINT_URL_S3"}  # what the object store's client reads
    assert set(run_step["env"]) <= documented | store
    assert workflow["permissions"] == {"contents": "read"}


def test_the_github_workflow_keeps_no_state_in_the_cache_with_an_object_store():
    """Two modes: PIPELINE_DESTINATION set (a bucket holds data, state and history: the runner keeps
    nothing) or not (today's rolling cache and artifact)."""
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "pipeline.yml").read_text())
    steps = workflow["jobs"]["run"]["steps"]
    local_only = [s for s in steps if s.get("uses", "").startswith(("actions/cache/", "actions/upload-artifact@"))]
    assert len(local_only) == 3
    for step in local_only:
        assert "vars.PIPELINE_DESTINATION == ''" in step["if"], step["name"]
    run_env = next(s for s in steps if "run_pipeline.py" in s.get("run", ""))["env"]
    assert run_env["PIPELINE_DESTINATION"] == "${{ vars.PIPELINE_DESTINATION }}"
    for name in AWS_VARIABLES[:2]:  # the store's key id and secret: secrets, never variables
        assert run_env[name] == "${{ secrets.%s }}" % name
    assert "env" not in workflow and "env" not in workflow["jobs"]["run"]  # no secret reaches another step


def _actionlint() -> Path:
    binary = Path(sys.executable).parent / ("actionlint.exe" if os.name == "nt" else "actionlint")
    assert binary.is_file(), (f"actionlint is not installed in this venv ({binary}): run `make check-workflow` "
                              "(or `make test`), which installs requirements-checks.txt")
    return binary


def test_actionlint_passes_the_workflow_and_flags_an_action_on_the_removed_node20_runtime(tmp_path):
    workflow = REPO / ".github" / "workflows" / "pipeline.yml"
    clean = subprocess.run([_actionlint(), workflow], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    old, swaps = re.subn(r"actions/upload-artifact@v\d+", "actions/upload-artifact@v5", workflow.read_text())
    assert swaps == 1
    (tmp_path / "pipeline.yml").write_text(old)
    flagged = subprocess.run([_actionlint(), tmp_path / "pipeline.yml"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=60)
    assert flagged.returncode != 0
    assert re.search(r'runtime "node20".*actions/upload-artifact@v5', flagged.stdout), flagged.stdout + flagged.stderr


def test_the_airflow_dag_file_is_written_for_airflow_3():
    text = (REPO / "deploy" / "airflow" / "products_pipeline.py").read_text()
    assert "schedule=" in text and "schedule_interval" not in text
    assert "max_active_runs=1" in text and "catchup=False" in text
    # A locked unit (exit 75) is retried after the lease expires, never skipped: a skip would lose the cycle
    # (the rest of the shape, and two real runs, are `make check-airflow`'s: it needs Airflow's own venv).
    assert "skip_on_exit_code" not in text and re.search(r"if code == LOCKED:\n\s+raise AirflowException", text)
    assert "RETRY_DELAY = timedelta(seconds=LEASE_SECONDS + 60)" in text
    pinned = (REPO / "deploy" / "airflow" / "requirements-airflow.txt").read_text().splitlines()
    packages = [line for line in pinned if line and not line.startswith("#")]
    assert packages and all("==" in line for line in packages)  # fully pinned
    assert any(line.startswith("apache-airflow==3.") for line in packages)


def test_make_run_pipeline_is_the_playbook_command():
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^run-pipeline:.*\n\t(.+)$", makefile, re.M).group(1)
    assert shlex.split(recipe)[1:] == ["pipelines/run_pipeline.py", "--verbose"]
