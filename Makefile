# Every target creates .venv and installs into it first (idempotent: reinstalls only when the
# requirements change). Needs only Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test sandbox run-pipeline clean-demo secrets-scan hooks crash-test race-test

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

demo: $(STAMP)  ## the pipeline on the sandbox, run twice, then after 3% of products change
	$(PY) -m sandbox.demo

test: $(STAMP)  ## the test suite
	$(PY) -m pytest -q

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

clean-demo:
	rm -rf .demo
