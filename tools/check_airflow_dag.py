"""Load the Airflow DAG through a DagBag and check its shape. Run with the Airflow venv's python."""

import sys
from pathlib import Path

from airflow.dag_processing.dagbag import DagBag

FOLDER = Path(__file__).resolve().parent.parent / "deploy" / "airflow"


def main() -> int:
    bag = DagBag(dag_folder=str(FOLDER))
    problems = [f"import error in {path}: {error}" for path, error in bag.import_errors.items()]
    dag = bag.dags.get("products_pipeline")
    if dag is None:
        problems.append("no DAG products_pipeline")
    else:
        tasks = {t.task_id: t for t in dag.tasks}
        if set(tasks) != {"pipeline_shopify", "pipeline_amazon", "pipeline_ebay"}:
            problems.append(f"tasks: {sorted(tasks)}")
        if dag.max_active_runs != 1 or dag.catchup:
            problems.append("max_active_runs must be 1 and catchup False")
        cron = getattr(dag.timetable, "_expression", None) or str(getattr(dag, "schedule", ""))
        if "0 */6 * * *" not in str(cron):
            problems.append(f"schedule: {cron}")
        for name, task in tasks.items():
            provider = name.removeprefix("pipeline_")
            if f"--providers {provider}" not in task.bash_command or "run_pipeline.py" not in task.bash_command:
                problems.append(f"{name}: command {task.bash_command!r}")
            if 75 not in (task.skip_on_exit_code or []):
                problems.append(f"{name}: exit code 75 must skip")
            if task.retries < 1:
                problems.append(f"{name}: no retries")
    for problem in problems:
        print(f"airflow DAG check: {problem}")
    if not problems:
        print(f"airflow DAG check: products_pipeline loads with {len(dag.tasks)} tasks, schedule 0 */6 * * *, ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
