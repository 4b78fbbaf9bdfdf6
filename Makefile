# Covet Backup: `make run` sets up and starts everything; `make test` runs the whole suite.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test bench venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

run: venv
	scripts/run.sh

test: venv
	scripts/ensure_redis.sh
	scripts/ensure_databases.sh
	scripts/ensure_browser.sh
	scripts/ensure_azurite.sh
	$(PY) -m pytest

bench: venv
	scripts/ensure_pgbackrest.sh
	$(PY) bench/pipeline.py
	$(PY) bench/engines.py
	$(PY) bench/wal_push.py
	$(PY) bench/pitr.py
	$(PY) bench/binlog_replay.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
