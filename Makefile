# Every target creates .venv and installs into it first (idempotent: reinstalls only when the
# requirements change). Needs only Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test sandbox run-pipeline clean-demo secrets-scan hooks crash-test race-test check-airflow \
	check-workflow check-report crontab prune-logs bench bench-1m compact-race-test lake-race-test lake-crash-test demo-lake bench-lake clean-demo-lake bench-history bench-fleet

# requirements-checks.txt is hash-pinned (actionlint), so it gets its own pip call with --require-hashes.
$(STAMP): requirements.txt requirements-dev.txt requirements-checks.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements-checks.txt
	$(PY) -m compileall -q pipelines connectors normalize storage  # start-up without compiling, even under PYTHONDONTWRITEBYTECODE
	touch $(STAMP)

demo: $(STAMP)  ## the pipeline on the sandbox, run twice, then after 3% of products change
	$(PY) -m sandbox.demo

demo-lake: $(STAMP)  ## two shops, Amazon and eBay into one Delta table in a local S3 from parallel workers, then DuckDB
	$(PY) -m sandbox.demo_lake

TEST_WORKERS ?= 2
test: $(STAMP)  ## the test suite, in TEST_WORKERS processes (one test file stays in one process)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

sandbox: $(STAMP)  ## start the sandbox and print the variables to export
	$(PY) -m sandbox

run-pipeline: $(STAMP)  ## the real job, as in the playbook
	$(PY) pipelines/run_pipeline.py --verbose

secrets-scan: $(STAMP)  ## scan every tracked file for credentials (also run by CI)
	$(PY) tools/scan_secrets.py

hooks: $(STAMP)  ## install the pre-commit hooks (secret scan, no .env)
	$(VENV)/bin/pre-commit install

crash-test: $(STAMP)  ## 30 random SIGKILLs of sandbox runs, each followed by a clean rerun
	CRASH_KILLS=$${CRASH_KILLS:-30} $(PY) -m pytest -q -s tests/test_crash.py

race-test: $(STAMP)  ## 50 races of two runs of the same provider
	RACES=$${RACES:-50} $(PY) -m pytest -q -s tests/test_overlap.py

compact-race-test: $(STAMP)  ## compaction beside three Delta writers committing flat out, 5 times (the lost-commit retries for real)
	for i in 1 2 3 4 5; do COMPACT_WRITER_PAUSE=0 $(PY) -m pytest -q -p no:cacheprovider tests/test_compact.py \
		-k compacting_while_units_write || exit 1; done

lake-race-test: $(STAMP)  ## object store: 10 rounds of 4 workers on 4 units, 20 races of one unit twice
	LAKE_ROUNDS=$${LAKE_ROUNDS:-10} LAKE_RACES=$${LAKE_RACES:-20} $(PY) -m pytest -q -s tests/test_lake_leases.py

lake-crash-test: $(STAMP)  ## object store: every named kill point, then 20 random SIGKILLs, each followed by a rerun
	LAKE_CRASH_KILLS=$${LAKE_CRASH_KILLS:-20} $(PY) -m pytest -q -s tests/test_lake_crash.py

AIRFLOW_VENV := .venv-airflow
$(AIRFLOW_VENV)/.installed: deploy/airflow/requirements-airflow.txt
	test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r deploy/airflow/requirements-airflow.txt
	touch $@

# The DAGs' shape in a DagBag, then dag.test() twice against the sandboxes and a local S3 (first run lands
# every unit, the second writes nothing), the scheduler's concurrency, a missing connection, compaction.
# The tasks and the sandboxes run with the pipeline's .venv; the Airflow venv needs none of its packages.
check-airflow: $(STAMP) $(AIRFLOW_VENV)/.installed  ## the Airflow DAGs: their shape, then two real runs with dag.test()
	home=$$(mktemp -d) && AIRFLOW_HOME=$$home PRODUCTS_PIPELINE_PYTHON=$(CURDIR)/$(PY) \
		$(AIRFLOW_VENV)/bin/python tools/check_airflow_dag.py; rc=$$?; rm -rf $$home; exit $$rc

check-workflow: $(STAMP)  ## the GitHub workflow validates against GitHub's schema, passes zizmor and actionlint
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/pipeline.yml
	$(VENV)/bin/zizmor --offline --config .github/zizmor.yml .github/workflows/pipeline.yml
	$(VENV)/bin/actionlint .github/workflows/pipeline.yml

crontab: $(STAMP)  ## print a crontab line for this checkout (every 6 hours; EVERY_HOURS=N to change)
	@$(PY) tools/schedule.py crontab --every-hours $${EVERY_HOURS:-6}

prune-logs:  ## delete daily pipeline logs older than 30 days (KEEP_DAYS=N to change)
	find logs -maxdepth 1 -name 'pipeline_*.log' -mtime +$${KEEP_DAYS:-30} -print -delete

check-report: $(STAMP)  ## render the HTML report in headless Chromium (installs Debian's chromium if missing)
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	$(PY) tools/check_report.py --chromium chromium

DLT_VENV := bench/.venv-dlt
$(DLT_VENV)/.installed: bench/requirements-dlt.txt
	test -x $(DLT_VENV)/bin/python || $(PYTHON) -m venv $(DLT_VENV)
	$(DLT_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r bench/requirements-dlt.txt
	touch $@

bench: $(STAMP) $(DLT_VENV)/.installed  ## the rich catalog: stage CPU, 20k and 100k end to end, dlt on the sandbox and a replay server, the throttled crawl
	$(PY) bench/stages.py 20000
	$(PY) bench/bench.py 20000 100000
	$(PY) bench/compare_dlt.py --dlt-python $(DLT_VENV)/bin/python --repeat 3 20000 100000
	$(PY) bench/throttled_crawl.py 600

bench-1m: $(STAMP)  ## a million products: the bulk JSONL path, then paging (about 15 minutes; the catalog is built lazily)
	$(PY) bench/bulk.py 1000000
	$(PY) bench/bench.py 1000000

bench-lake: $(STAMP)  ## a unit's state in an object store at 1M products: requests and bytes of a first run and reruns
	$(PY) bench/lake_index.py $${PRODUCTS:-1000000}

bench-fleet: $(STAMP)  ## 20 Shopify shops x 2,000 products into one Delta table in a local S3 by 1, 2 and 4 workers: wall time, commits, retries, requests (about 8 minutes)
	$(PY) bench/fleet.py --shops $${SHOPS:-20} --products $${PRODUCTS:-2000} --workers $${WORKERS:-1,2,4}

clean-demo:
	rm -rf .demo

clean-demo-lake:
	rm -rf .demo-lake

bench-history: $(STAMP)  ## product history at a million products x 10 versions: views against a maintained table (about 10 minutes; the history table's rebuild uses the most memory, bounded by PIPELINE_QUERY_MEMORY; PRODUCTS=N to change)
	$(PY) bench/history.py --products $${PRODUCTS:-1000000} --versions $${VERSIONS:-10}
