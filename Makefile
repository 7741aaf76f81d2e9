# taler-ops: `make test` and `make demo` do all set-up on a fresh Debian 12 machine.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
# PostgreSQL's server programs: PG_BIN if given, else the highest Debian
# /usr/lib/postgresql/<major>/bin holding initdb, else pg_config --bindir.  Recursively
# expanded, so recipes after `make postgresql` see a server it just installed.
PG_FIND = for d in $$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5 -rn); do \
            [ -x "$$d/initdb" ] && { echo "$$d"; exit 0; }; done; \
            d=$$(pg_config --bindir 2>/dev/null) && [ -x "$$d/initdb" ] && echo "$$d"
PG_BIN ?= $(shell $(PG_FIND))
# Installed when no server is found: Debian's default major (postgresql-15 on Debian 12).
PG_PACKAGE ?= postgresql
PYTEST_ARGS ?=

.PHONY: test unit lint demo crashloop soak postgresql sshd promtool chromium report-sample venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check -e .
	touch $@

# Debian's PostgreSQL when no server is installed (the tests start their own clusters
# with whichever PG_BIN finds).
postgresql:
	@test -n "$(PG_BIN)" && test -x "$(PG_BIN)/initdb" || { apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(PG_PACKAGE); }
	@test -x "$(PG_BIN)/initdb" || test -n "$$($(PG_FIND))" || { \
	  echo "no PostgreSQL server programs found (set PG_BIN=/path/to/bin)" >&2; exit 1; }

# OpenSSH's server and iproute2 for molecule/multihost, which starts one sshd per
# network namespace itself: installed under a policy-rc.d that stops Debian from
# starting a global sshd (a policy-rc.d created here is removed again).
sshd:
	@test -x /usr/sbin/sshd -a -x /usr/sbin/ip || { \
	  made=; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && \
	    chmod 0755 /usr/sbin/policy-rc.d && made=1; }; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssh-server iproute2; rc=$$?; \
	  [ -z "$$made" ] || rm -f /usr/sbin/policy-rc.d; exit $$rc; }

# promtool (Debian's prometheus package) checks and unit-tests the alert rules in
# monitoring/prometheus.  Only the tool is wanted: no recommends (node exporter), and
# the same policy-rc.d guard as above so Debian does not start a Prometheus server.
promtool:
	@command -v promtool >/dev/null || { \
	  made=; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && \
	    chmod 0755 /usr/sbin/policy-rc.d && made=1; }; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; \
	  rc=$$?; [ -z "$$made" ] || rm -f /usr/sbin/policy-rc.d; exit $$rc; }

# Debian's chromium loads the auditor's report headless in tests/test_report_browser.py (its
# screenshot is a test artefact).  No recommends; nothing is started.
chromium:
	@command -v chromium >/dev/null || { apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }

test: venv postgresql sshd promtool chromium lint
	TALER_OPS_PG_BIN="$(PG_BIN)" $(VENV)/bin/pytest $(PYTEST_ARGS)

# The auditor topology on this machine (playbooks/site.yml), traffic, sync, audit, status.
demo: venv postgresql
	PG_BIN="$(PG_BIN)" scripts/demo.sh

# docs/report-sample.html (+ .json, .txt): the report of a Taler-built auditor database
# filled with one finding of every kind, on a throwaway cluster (docs/report.md).
report-sample: venv postgresql
	TALER_OPS_PG_BIN="$(PG_BIN)" $(PY) docs/report_sample.py docs

# The full issue-9 crash loop: 50 kill -9 during a 1M-row pass (make test runs 8 on 150k).
crashloop: venv postgresql
	TALER_OPS_PG_BIN="$(PG_BIN)" TALER_OPS_CRASH_RUNS=50 TALER_OPS_CRASH_ROWS=1000000 \
	  $(VENV)/bin/pytest -s tests/test_crashloop.py

# The long soak with faults (issue 20): TALER_OPS_SOAK_MINUTES (default 30) of live traffic
# under restarts, sync kills, link cuts and GC (make test runs its 2-minute variant).
# TALER_OPS_SOAK_SEED replays a chaos schedule, TALER_OPS_SOAK_RATE sets rows/s (400).
soak: venv postgresql
	TALER_OPS_PG_BIN="$(PG_BIN)" $(VENV)/bin/pytest -s -m soak_long tests/test_soak.py

# Python (ruff: pyproject.toml) and Ansible (ansible-lint, production profile); part of `make test`.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/ansible-lint --offline

# The fast tier: neither `slow` nor `molecule` (tests/conftest.py assigns the markers), one
# worker per core; a file's tests stay on one worker, so its module fixtures are built once.
# `make test` stays serial: its scenarios and day-2 tests share fixed ports and paths.
unit: venv postgresql
	TALER_OPS_PG_BIN="$(PG_BIN)" $(VENV)/bin/pytest -m "not slow and not molecule and not soak_long" -n auto --dist loadfile $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
