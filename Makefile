# taler-ops: `make test` and `make demo` do all set-up on a fresh Debian 12 machine.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
PG_BIN ?= /usr/lib/postgresql/15/bin
PYTEST_ARGS ?=

.PHONY: test unit lint demo crashloop postgresql sshd promtool venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check -e .
	touch $@

# Debian's PostgreSQL 15 when absent (the tests start their own clusters with it).
postgresql:
	@test -x $(PG_BIN)/initdb || { apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-15; }

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

test: venv postgresql sshd promtool
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The auditor topology on this machine (playbooks/site.yml), traffic, sync, audit, status.
demo: venv postgresql
	scripts/demo.sh

# The full issue-9 crash loop: 50 kill -9 during a 1M-row pass (make test runs 8 on 150k).
crashloop: venv postgresql
	TALER_OPS_CRASH_RUNS=50 TALER_OPS_CRASH_ROWS=1000000 $(VENV)/bin/pytest -s tests/test_crashloop.py

lint: venv
	$(VENV)/bin/ansible-lint --offline

clean:
	rm -rf $(VENV) .pytest_cache
