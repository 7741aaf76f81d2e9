"""Shared fixtures: one real PostgreSQL cluster per test session, a fresh database per test."""

import itertools
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from pgcluster import Cluster  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_db_counter = itertools.count(1)


@pytest.fixture(scope="session")
def cluster():
    c = Cluster("pytest").start()
    yield c
    c.destroy()


@pytest.fixture
def fresh_db(cluster, request):
    """A new, empty database; returns its URI."""
    name = f"t{next(_db_counter)}_{request.node.name[:40]}".lower()
    name = "".join(ch if ch.isalnum() else "_" for ch in name)
    return cluster.createdb(name)


@pytest.fixture
def exchange_db(fresh_db):
    from taler_ops import dbinit
    dbinit.exchange_dbinit(fresh_db)
    return fresh_db


def write_conf(path, sections):
    """Write a Taler-style INI file: {section: {option: value}}."""
    with open(path, "w") as fh:
        for section, options in sections.items():
            fh.write(f"[{section}]\n")
            for key, value in options.items():
                fh.write(f"{key} = {value}\n")
            fh.write("\n")
    return str(path)


@pytest.fixture
def conf(tmp_path):
    """conf('name', {'section': {...}}) -> path of a new config file."""
    def make(name, sections):
        return write_conf(tmp_path / name, sections)
    return make


def run_cli(*args, check=False, **kwargs):
    """Run the real ``taler-ops`` entry point in a subprocess."""
    return subprocess.run([sys.executable, "-m", "taler_ops.cli", *map(str, args)],
                          capture_output=True, text=True, check=check, cwd=ROOT, **kwargs)


@pytest.fixture
def cli():
    return run_cli
