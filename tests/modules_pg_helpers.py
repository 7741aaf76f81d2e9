"""Shared by the tests of the PostgreSQL modules in library/ (tests/test_modules_pg*.py),
run for real through ansible-playbook.

Two throwaway clusters play exchange (publisher) and ingres (subscriber); the
publisher authenticates the replication role with SCRAM over TCP, so passwords
are really checked.  The password used contains a quote, a backslash and spaces:
Ansible's no_log masking only hides the exact string, so any escaped copy a
module leaked (conninfo or SQL quoting) would show up in the output.  The ``pg``
fixture (the two clusters, one pair per test module) is imported by the tests.
"""

import os

import psycopg
import pytest

from pgcluster import Cluster

PASSWORD = "Qz7'Kv9 \\Lm4\"Wx"
NEW_PASSWORD = "Rt5 'Yu8\\Op"
FRAGMENTS = ["Qz7", "Kv9", "Lm4", "Rt5", "Yu8", "SCRAM-SHA-256$"]
TABLES = ["reserves", "deposits", "wire_targets"]


def assert_no_secret(text):
    leaked = [f for f in FRAGMENTS if f in text]
    assert not leaked, f"secret fragments {leaked} in output"


@pytest.fixture(scope="module")
def pg():
    publisher = Cluster("modpub").start()
    subscriber = Cluster("modsub").start()
    try:
        for cluster, db in ((publisher, "exch"), (subscriber, "ingres")):
            cluster.createdb(db)
            cluster.psql(db, "CREATE SCHEMA exchange; " + " ".join(
                f"CREATE TABLE exchange.{t} (id bigint PRIMARY KEY, v text);" for t in TABLES))
        # The replication role must prove its password over TCP, like a remote auditor.
        hba = os.path.join(publisher.data, "pg_hba.conf")
        with open(hba) as fh:
            rules = fh.read()
        with open(hba, "w") as fh:
            fh.write("host all repl 127.0.0.1/32 scram-sha-256\n" + rules)
        publisher.psql("postgres", "SELECT pg_reload_conf()")
        yield publisher, subscriber
    finally:
        publisher.destroy()
        subscriber.destroy()


def login(cluster, db):
    return dict(login_host=cluster.sockets, login_port=cluster.port, login_user="postgres",
                login_db=db)


def one(cluster, db, query, params=None):
    with psycopg.connect(cluster.uri(db), autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
        return row[0] if row and len(row) == 1 else row
