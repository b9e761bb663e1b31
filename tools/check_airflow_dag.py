"""`make check-airflow`: the Airflow DAGs load with the right shape, then run for real.

Run with the Airflow venv's python and AIRFLOW_HOME a fresh folder. It needs none of the
pipeline's packages: the DAG's tasks run the pipeline with its own interpreter
(PRODUCTS_PIPELINE_PYTHON, the checkout's .venv), and so does the world they run against,
`python -m sandbox.fleet` (the provider sandboxes and a local S3, moto's server, on loopback).

1. Shape, from a DagBag: the tasks and their order, one mapped task per provider, the concurrency
   (Shopify at once, Amazon and eBay one at a time), no pool to create, retries with a delay
   longer than the lease, one run at a time, no catch-up, the schedules.
2. `dag.test()` twice against the fleet, credentials from Airflow connections given as
   AIRFLOW_CONN_<ID> variables: the first run lands every unit in the Delta tables, the second
   writes nothing (the run history in the bucket says so, unit by unit, and no table moves).
3. What dag.test() cannot show, since it runs one task at a time and ignores concurrency: the
   scheduler's own critical section (the query that queues task instances) is handed every mapped
   instance of the second run at once and queues every Shopify unit, one Amazon and one eBay unit;
   and a task in a pool that does not exist is never queued, which is why the DAG uses none.
4. The daily compaction DAG runs `run_pipeline.py compact` (against the fleet when the command
   exists, else through a stand-in interpreter that records what it was asked to run).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FOLDER = REPO / "deploy" / "airflow"
PIPELINE_PYTHON = Path(os.environ.get("PRODUCTS_PIPELINE_PYTHON") or REPO / ".venv" / "bin" / "python")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(FOLDER))  # before Airflow reads its settings
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")

from airflow.dag_processing.dagbag import DagBag

TASKS = {"prepare", "units", "unready"} | {f"{p}.{t}" for p in ("shopify", "amazon", "ebay") for t in ("ready", "run")}
CONCURRENCY = {"shopify": None, "amazon": 1, "ebay": 1}
LEASE_SECONDS = float(os.environ.get("PIPELINE_LEASE_SECONDS") or 900)


def shape_problems(bag: DagBag) -> list[str]:
    """What is wrong with the two DAGs' shape, as sentences."""
    problems = [f"import error in {path}: {error}" for path, error in bag.import_errors.items()]
    dag, compact = bag.dags.get("products_pipeline"), bag.dags.get("products_compact")
    if dag is None or compact is None:
        return problems + [f"DAGs found: {sorted(bag.dags)}; expected products_pipeline and products_compact"]
    tasks = dag.task_dict
    if set(tasks) != TASKS:
        return problems + [f"products_pipeline tasks: {sorted(tasks)}, expected {sorted(TASKS)}"]
    if tasks["units"].upstream_task_ids != {"prepare"}:
        problems.append("units must run after prepare (the tables exist before units fan out)")
    for name, limit in CONCURRENCY.items():
        task = tasks[f"{name}.run"]
        if not getattr(task, "is_mapped", False) or task.upstream_task_ids != {f"{name}.ready"}:
            problems.append(f"{name}.run: must be mapped over {name}.ready, which the units task feeds")
        if tasks[f"{name}.ready"].upstream_task_ids != {"units"}:
            problems.append(f"{name}.ready: must take the units task's plan")
        if task.partial_kwargs.get("max_active_tis_per_dagrun") != limit:
            problems.append(f"{name}.run: max_active_tis_per_dagrun must be {limit}")
    for d in (dag, compact):
        if d.max_active_runs != 1 or d.catchup:
            problems.append(f"{d.dag_id}: max_active_runs must be 1 and catchup False")
        for task in d.tasks:
            retries = task.partial_kwargs.get("retries") if getattr(task, "is_mapped", False) else task.retries
            delay = task.partial_kwargs.get("retry_delay") if getattr(task, "is_mapped", False) else task.retry_delay
            if task.pool != "default_pool":  # a pool that does not exist: never scheduled, never reported
                problems.append(f"{d.dag_id}.{task.task_id}: pool {task.pool!r}; the set-up documents no pool")
            if task.task_id != "unready" and (not retries or delay.total_seconds() <= LEASE_SECONDS):
                problems.append(f"{d.dag_id}.{task.task_id}: retries {retries}, retry_delay {delay}: it must retry "
                                f"after the lease ({LEASE_SECONDS:g} s, PIPELINE_LEASE_SECONDS) has expired")
    for d, cron in ((dag, "0 */6 * * *"), (compact, "30 3 * * *")):
        if getattr(d.timetable, "expression", getattr(d.timetable, "_expression", None)) != cron:
            problems.append(f"{d.dag_id}: schedule {d.timetable!r}, expected {cron}")
    return problems


class Fleet:
    """`python -m sandbox.fleet` in the pipeline's venv: its world, and summaries of the bucket."""

    def __init__(self, workdir: Path):
        self.process = subprocess.Popen([str(PIPELINE_PYTHON), "-m", "sandbox.fleet", str(workdir)], cwd=REPO,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"airflow DAG check: `{PIPELINE_PYTHON} -m sandbox.fleet` did not start (make test "
                             "creates the pipeline's .venv)")
        self.world = json.loads(line)

    def summary(self) -> dict:
        self.process.stdin.write("summary\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def stop(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


def worker_environment(fleet: Fleet, tmp: Path) -> None:
    """What an operator sets on the worker, and the accounts' connections as AIRFLOW_CONN_<ID>."""
    os.environ.update(fleet.world["env"])
    os.environ.update({"PRODUCTS_PIPELINE_REPO": str(REPO), "PRODUCTS_PIPELINE_PYTHON": str(PIPELINE_PYTHON),
                       "PIPELINE_ENV_FILE": os.devnull, "PIPELINE_LOGS_DIR": str(tmp / "logs"),
                       "PIPELINE_CACHE_DIR": str(tmp / "cache"), "PIPELINE_DATA_DIR": str(tmp / "data")})
    for conn_id, fields in fleet.world["connections"].items():
        os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(fields)


def test_run(dag, **options) -> tuple[str, dict[str, list[str]], str]:
    """dag.test() with no retries (a failure shows at once): the run's state, each task's states, its id."""
    from airflow.utils.session import create_session

    for task in dag.tasks:
        if getattr(task, "is_mapped", False):
            task.partial_kwargs["retries"] = 0
        else:
            task.retries = 0
    run = dag.test(**options)
    with create_session() as session:
        states = {}
        for ti in run.get_task_instances(session=session):
            states.setdefault(ti.task_id, []).append(str(ti.state))
    return str(run.state), states, run.run_id


def missing_connection_problems(dag) -> list[str]:
    """Without the Amazon account's connection, the units task leaves that unit out and `unready`
    fails the run naming the connection to add (the units' own tasks are not run: marked done).
    The failure is expected, so Airflow's report of it is not printed."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    name = "AIRFLOW_CONN_PRODUCTS_AMAZON_WWW_AMAZON_COM"
    saved, outputs = os.environ.pop(name), {fd: os.dup(fd) for fd in (1, 2)}
    sys.stdout.flush()
    with open(os.devnull, "w") as quiet:
        for fd in outputs:
            os.dup2(quiet.fileno(), fd)
    try:
        state, states, run_id = test_run(dag, mark_success_pattern=r"(shopify|amazon|ebay)\..*")
    finally:
        for fd, copy in outputs.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.environ[name] = saved
    with create_session() as session:
        plan = session.query(XComModel.value).filter(
            XComModel.dag_id == dag.dag_id, XComModel.run_id == run_id, XComModel.task_id == "units",
            XComModel.key == "return_value").scalar()
    plan = json.loads(plan) if isinstance(plan, str) else plan
    said = "airflow connections add products_amazon_www_amazon_com"
    reasons = [u["reason"] for u in (plan or {}).get("unready", [])]
    if state != "failed" or states.get("unready") != ["failed"] or len(reasons) != 1 or said not in reasons[0]:
        return [(f"without its connection, the Amazon unit should fail `unready` naming it ({said}): "
                 f"run {state}, tasks {states}, unready {reasons}")]
    return []


def new_runs(before: dict, after: dict) -> list[dict]:
    seen = {r["run_id"] for r in before["runs"]}
    return [r for r in after["runs"] if r["run_id"] not in seen]


def landing_problems(expected: int, empty: dict, first: dict, second: dict) -> tuple[list[str], dict]:
    """Run one landed every unit (rows in the tables as written), run two wrote nothing."""
    problems, figures = [], {}
    one, two = new_runs(empty, first), new_runs(first, second)
    units_one = [u for r in one for u in r["units"]]
    units_two = [u for r in two for u in r["units"]]
    figures["units"] = len(units_one)
    if len(units_one) != expected or any(u["status"] != "ok" or not u["written"] for u in units_one):
        problems.append(f"first run: expected {expected} units ok with rows written, got {units_one}")
    written = {}
    for u in units_one:
        table = "orders" if u["stream"] == "orders" else "products"
        written[table] = written.get(table, 0) + (u["written"] or 0)
    for table, rows in written.items():
        if first["tables"].get(table, {}).get("rows") != rows:
            problems.append(f"first run: the Delta table {table} holds {first['tables'].get(table)}, written {rows}")
    figures["rows"] = {name: t["rows"] for name, t in first["tables"].items()}
    if len(units_two) != expected or any(u["status"] != "ok" or u["written"] for u in units_two):
        problems.append(f"second run: expected {expected} units ok with nothing written, got {units_two}")
    if second["tables"] != first["tables"]:
        problems.append(f"second run: the tables moved: {first['tables']} -> {second['tables']}")
    figures["second_written"] = sum(u["written"] or 0 for u in units_two)
    return problems, figures


def scheduler_problems(dag_id: str, run_id: str) -> tuple[list[str], dict]:
    """The scheduler's critical section, handed every mapped instance of a finished run at once:
    what it queues per task; then the same instances in a pool that does not exist. Rolled back."""
    from airflow.executors.executor_loader import ExecutorLoader
    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState

    runner = SchedulerJobRunner(job=Job(), executors=ExecutorLoader.init_executors())
    problems, queued = [], {}
    with create_session() as session:
        # As the scheduler meets them: the run in progress, the DAG unpaused (dag.test needs neither).
        session.query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.run_id == run_id).one().state = DagRunState.RUNNING
        session.query(DagModel).filter(DagModel.dag_id == dag_id).one().is_paused = False
        mapped = session.query(TaskInstance).filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id,
                                                    TaskInstance.map_index >= 0).all()
        for ti in mapped:
            ti.state = TaskInstanceState.SCHEDULED
        session.flush()
        for ti in runner._executable_task_instances_to_queued(max_tis=64, session=session):
            provider = ti.task_id.split(".")[0]
            queued[provider] = queued.get(provider, 0) + 1
        totals = {name: sum(1 for ti in mapped if ti.task_id == f"{name}.run") for name in CONCURRENCY}
        expected = {name: totals[name] if limit is None else min(limit, totals[name])
                    for name, limit in CONCURRENCY.items()}
        if queued != expected:
            problems.append(f"the scheduler queued {queued} of {totals}; expected {expected}")
        for ti in mapped:
            ti.state, ti.pool = TaskInstanceState.SCHEDULED, "products_no_such_pool"
        session.flush()
        if runner._executable_task_instances_to_queued(max_tis=64, session=session):
            problems.append("a task in a pool that does not exist was queued")
        session.rollback()
    return problems, {"queued": queued, "of": totals}


def compact_problems(bag: DagBag, tmp: Path) -> tuple[list[str], str]:
    """The daily DAG runs `run_pipeline.py compact`: for real once the command exists, else through a
    stand-in interpreter that records its arguments (the command is another change's)."""
    help_text = subprocess.run([str(PIPELINE_PYTHON), str(REPO / "pipelines" / "run_pipeline.py"), "--help"],
                               capture_output=True, text=True, check=False).stdout
    real = " compact " in help_text
    if not real:
        recorded = tmp / "compact-args"
        stand_in = tmp / "stand-in-python"
        stand_in.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" "$PIPELINE_DESTINATION" > {recorded}\n')
        stand_in.chmod(0o755)
        os.environ["PRODUCTS_PIPELINE_PYTHON"] = str(stand_in)
    try:
        state, states, _ = test_run(bag.dags["products_compact"])
    finally:
        os.environ["PRODUCTS_PIPELINE_PYTHON"] = str(PIPELINE_PYTHON)
    if state != "success":
        return [f"products_compact: run {state}, tasks {states}"], ""
    if real:
        return [], "ran compact on the fleet"
    args = recorded.read_text().split("\n") if recorded.exists() else []
    want = [str(REPO / "pipelines" / "run_pipeline.py"), "compact", os.environ["PIPELINE_DESTINATION"]]
    if args[:3] != want:
        return [f"products_compact ran {args}, expected run_pipeline.py compact on {want[2]}"], ""
    return [], "ran `run_pipeline.py compact` (a stand-in: the command is not in this checkout yet)"


def prove(bag: DagBag) -> tuple[list[str], list[str]]:
    """Steps 2 to 4; (problems, figures to print)."""
    from airflow.utils.db import initdb

    began = time.monotonic()
    initdb()
    with tempfile.TemporaryDirectory(prefix="airflow-fleet-") as folder:
        tmp = Path(folder)
        task_log = logging.getLogger("products_pipeline")  # the DAG's tasks: the pipeline's output
        task_log.setLevel(logging.INFO)
        task_log.addHandler(logging.FileHandler(tmp / "tasks.log"))
        fleet = Fleet(tmp / "fleet")
        try:
            worker_environment(fleet, tmp)
            dag, empty = bag.dags["products_pipeline"], fleet.summary()
            runs = []
            for _ in range(2):
                started = time.monotonic()
                state, states, run_id = test_run(dag)
                runs.append((state, states, run_id, fleet.summary(), time.monotonic() - started))
            problems = [f"dag.test() run {n}: {state}, tasks {states}"
                        for n, (state, states, _, _, _) in enumerate(runs, 1) if state != "success"]
            if problems:
                tail = (tmp / "tasks.log").read_text().splitlines()[-40:]
                return problems, ["the tasks' output, last 40 lines:", *tail]
            missing = missing_connection_problems(dag)
            landed, figures = landing_problems(fleet.world["units"], empty, runs[0][3], runs[1][3])
            scheduled, queued = scheduler_problems(dag.dag_id, runs[1][2])
            compacted, compact_note = compact_problems(bag, tmp)
        finally:
            fleet.stop()
    mapped = {name: len(runs[0][1].get(f"{name}.run", [])) for name in CONCURRENCY}
    lines = [
        (f"dag.test() run 1: {figures['units']} units landed ({mapped}), rows {figures['rows']}, "
         f"{runs[0][4]:.1f} s"),
        (f"dag.test() run 2: the same units, {figures['second_written']} rows written, tables unchanged, "
         f"{runs[1][4]:.1f} s"),
        ("without the Amazon account's connection, `unready` fails the run naming products_amazon_www_amazon_com "
         "and the `airflow connections add` command"),
        f"scheduler: of {queued['of']} mapped instances at once it queues {queued['queued']}; none in a missing pool",
        f"products_compact: {compact_note}",
        f"proof took {time.monotonic() - began:.1f} s",
    ]
    return landed + missing + scheduled + compacted, lines


def main() -> int:
    bag = DagBag(dag_folder=str(FOLDER))
    problems = shape_problems(bag)
    if not problems:
        print("airflow DAG check: products_pipeline (prepare, units, shopify/amazon/ebay mapped, unready) and "
              "products_compact load with the expected shape", flush=True)
        problems, lines = prove(bag)
        for line in lines:
            print(f"airflow DAG check: {line}", flush=True)
    for problem in problems:
        print(f"airflow DAG check: FAILED: {problem}", flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
