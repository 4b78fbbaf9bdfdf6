# Covet Backup: `make run` sets up and starts everything; `make test` runs the whole suite.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# pip-tools lives in a venv of its own: it is needed only to change the pins, never to run or test.
LOCK_VENV := .venv-lock
PIP_TOOLS := pip-tools==7.7.0
PIP_COMPILE := CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes \
	--allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links

.PHONY: run test bench venv venv-test lock clean

# The runtime set alone: what a production install gets.
venv: $(VENV)/.installed

# The runtime set plus the test tools.
venv-test: $(VENV)/.installed-test

# Each stamp is newer than the file it installed, so a second `make` installs nothing.
$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PY) -m pip install --quiet -r requirements-test.txt
	touch $@

run: venv
	scripts/run.sh

test: venv-test
	scripts/ensure_redis.sh
	scripts/ensure_databases.sh
	scripts/ensure_browser.sh
	scripts/ensure_azurite.sh
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest

# The benchmarks start their servers with the test suite's fixtures, so they need the test set too.
bench: venv-test
	scripts/ensure_pgbackrest.sh
	$(PY) bench/pipeline.py
	$(PY) bench/engines.py
	$(PY) bench/wal_push.py
	$(PY) bench/pitr.py
	$(PY) bench/binlog_replay.py

# Re-pin after editing requirements*.in: versions already pinned stay unless an .in file forbids them;
# `make lock UPGRADE=1` moves everything to the newest releases. The test set is compiled against
# requirements.txt so that a package both sets need has one version.
lock:
	test -x $(LOCK_VENV)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_VENV) && \
		$(LOCK_VENV)/bin/pip install --quiet $(PIP_TOOLS); }
	$(PIP_COMPILE) $(if $(UPGRADE),--upgrade) -o requirements.txt requirements.in
	$(PIP_COMPILE) $(if $(UPGRADE),--upgrade) -o requirements-test.txt requirements-test.in

clean:
	rm -rf $(VENV) $(LOCK_VENV) .pytest_cache .hypothesis
