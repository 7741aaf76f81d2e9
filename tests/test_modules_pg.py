"""The PostgreSQL modules in library/, run for real through ansible-playbook.

Two throwaway clusters play exchange (publisher) and ingres (subscriber); the
publisher authenticates the replication role with SCRAM over TCP, so passwords
are really checked.  The password used contains a quote, a backslash and spaces:
Ansible's no_log masking only hides the exact string, so any escaped copy a
module leaked (conninfo or SQL quoting) would show up in the output.
"""

import os
import sys

import psycopg
import pytest

from ansible_runner import run_module, run_tasks
from conftest import wait_for
from pgcluster import Cluster, free_port

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


# --- pg_role ---------------------------------------------------------------

def test_role_create_converge_and_password(pg):
    publisher, _ = pg
    args = dict(login(publisher, "exch"), name="repl", login=True, replication=True,
                password=PASSWORD)
    check = run_module("pg_role", args, check=True, diff=True)
    assert check.ok, check
    assert check.result["changed"] and check.result["diff"]["before"] == {}
    assert one(publisher, "exch", "SELECT count(*) FROM pg_roles WHERE rolname = 'repl'") == 0

    run = run_tasks([{"pg_role": args}, {"pg_role": args}], diff=True, verbosity=3,
                    callback="default")
    assert run.ok, run.stdout[-3000:]
    assert_no_secret(run.stdout + run.stderr)
    run = run_module("pg_role", args)
    assert run.ok and not run.result["changed"] and run.result["password_verified"], run
    verifier = one(publisher, "exch", "SELECT rolpassword FROM pg_authid WHERE rolname = 'repl'")
    assert verifier.startswith("SCRAM-SHA-256$")
    # The password really works over TCP with SCRAM.
    with psycopg.connect(host="127.0.0.1", port=publisher.port, dbname="exch", user="repl",
                         password=PASSWORD) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "repl"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host="127.0.0.1", port=publisher.port, dbname="exch", user="repl",
                        password="wrong").close()

    changed = run_module("pg_role", dict(args, password=NEW_PASSWORD, connection_limit=5),
                         diff=True)
    assert changed.ok and changed.result["changed"], changed
    assert changed.result["queries"] == [
        'ALTER ROLE "repl" WITH CONNECTION LIMIT 5', "ALTER ROLE \"repl\" PASSWORD '********'"]
    assert changed.result["diff"]["after"]["password"] == "******** (new)"
    assert_no_secret(changed.stdout)
    on_create = run_module("pg_role", dict(args, password="ignored", update_password="on_create",
                                           connection_limit=5))
    assert not on_create.result["changed"], on_create
    # Back to the original password for the replication tests.
    assert run_module("pg_role", dict(args, connection_limit=-1)).result["changed"]


def test_role_membership_attributes_and_absent(pg):
    publisher, _ = pg
    base = login(publisher, "exch")
    run = run_tasks([
        {"pg_role": dict(base, name="Readers Group")},
        {"pg_role": dict(base, name="au'ditor", login=True, member_of=["Readers Group"])},
        {"pg_role": dict(base, name="au'ditor", login=True, member_of=["Readers Group"])},
        {"pg_role": dict(base, name="au'ditor", member_of=[], createdb=True)},
    ])
    assert run.ok, run
    created, member, again, revoked = run.results
    assert created["changed"] and created["role"]["login"] is False
    assert member["role"]["member_of"] == ["Readers Group"]
    assert member["queries"][-1] == 'GRANT "Readers Group" TO "au\'ditor"'
    assert not again["changed"]
    assert revoked["queries"] == ['ALTER ROLE "au\'ditor" WITH CREATEDB',
                                  'REVOKE "Readers Group" FROM "au\'ditor"']
    assert one(publisher, "exch", "SELECT rolcreatedb FROM pg_roles WHERE rolname = 'au''ditor'")

    bad = run_module("pg_role", dict(base, name="x", member_of=["no-such-group"]))
    assert not bad.ok and "missing role(s): 'no-such-group'" in bad.result["msg"]

    gone = run_tasks([{"pg_role": dict(base, name="au'ditor", state="absent")},
                      {"pg_role": dict(base, name="au'ditor", state="absent")}])
    assert [r["changed"] for r in gone.results] == [True, False]
    assert gone.results[0]["role"] is None


def test_scram_comparison_matches_libpq():
    """Our verifier check agrees with libpq's hashing, non-ASCII passwords included."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                    "plugins", "module_utils"))
    from taler_pg_sql import scram_matches
    conn = psycopg.pq.PGconn.connect(b"")  # libpq hashes without a server
    try:
        for password in ["plain", PASSWORD, "pässwörd ﬁ", "\u00a0spaced\u00ad"]:
            verifier = conn.encrypt_password(password.encode(), b"u", b"scram-sha-256").decode()
            assert scram_matches(password, verifier)
            assert not scram_matches(password + "x", verifier)
    finally:
        conn.finish()


def test_qualified_names_follow_sql_rules():
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                    "plugins", "module_utils"))
    from taler_pg_sql import parse_qualified, qualified_text
    assert parse_qualified("Exchange.Reserves") == ("exchange", "reserves")
    assert parse_qualified("reserves") == ("public", "reserves")
    assert parse_qualified('"My ""Schema"".x"."T"') == ('My "Schema".x', "T")
    assert qualified_text('My "Schema".x', "T") == '"My ""Schema"".x"."T"'
    assert qualified_text("exchange", "reserves") == "exchange.reserves"
    for bad in ["a.b.c", "a.", '"open', 'a"b', ""]:
        with pytest.raises(ValueError):
            parse_qualified(bad)


def test_role_without_password_converges(pg):
    """password: "" (peer-authenticated service roles) removes a password once, then is a no-op:
    pg_roles shows '********' either way, only pg_authid tells."""
    publisher, _ = pg
    base = dict(login(publisher, "exch"), name="peer_only", login=True)
    run = run_tasks([{"pg_role": dict(base, password=PASSWORD)},
                     {"pg_role": dict(base, password="")},
                     {"pg_role": dict(base, password="")}], diff=True)
    assert run.ok, run
    made, removed, again = run.results
    assert made["changed"] and made["role"]["password_set"]
    assert removed["changed"] and removed["queries"] == ['ALTER ROLE "peer_only" PASSWORD NULL']
    assert removed["role"]["password_set"] is False
    assert not again["changed"] and again["queries"] == [], again
    assert one(publisher, "exch", "SELECT rolpassword FROM pg_authid WHERE rolname = 'peer_only'") is None
    fresh = run_tasks([{"pg_role": dict(base, name="peer_new", password="")},
                       {"pg_role": dict(base, name="peer_new", password="")}])
    assert [r["changed"] for r in fresh.results] == [True, False], fresh
    assert_no_secret(run.stdout + run.stderr)


# --- pg_privileges ---------------------------------------------------------

def test_privileges_exclusive_least_privilege(pg):
    publisher, _ = pg
    base = dict(login(publisher, "exch"), role="repl", schema="exchange")
    publisher.psql("exch", "GRANT INSERT, DELETE ON exchange.reserves TO repl")
    args = dict(base, tables=["ALL"], privileges=["SELECT"], schema_privileges=["USAGE"],
                database_privileges=["CONNECT"], exclusive=True)

    check = run_module("pg_privileges", args, check=True, diff=True)
    assert check.ok and check.result["changed"], check
    assert check.result["diff"]["before"]["tables"]["exchange.reserves"] == ["INSERT", "DELETE"]
    assert one(publisher, "exch", "SELECT has_table_privilege('repl', 'exchange.reserves', 'INSERT')")

    run = run_tasks([{"pg_privileges": args}, {"pg_privileges": args}], diff=True)
    assert run.ok, run
    first, second = run.results
    assert first["queries"] == [
        'REVOKE INSERT, DELETE ON TABLE "exchange"."reserves" FROM "repl"',
        'GRANT SELECT ON TABLE "exchange"."deposits", "exchange"."reserves", '
        '"exchange"."wire_targets" TO "repl"',
        'GRANT USAGE ON SCHEMA "exchange" TO "repl"',
        'GRANT CONNECT ON DATABASE "exch" TO "repl"']
    assert first["privileges"]["tables"] == {f"exchange.{t}": ["SELECT"] for t in TABLES}
    assert not second["changed"] and second["queries"] == []
    assert not one(publisher, "exch",
                   "SELECT has_table_privilege('repl', 'exchange.reserves', 'INSERT')")

    revoke = run_module("pg_privileges", dict(base, tables=["wire_targets"], privileges=["ALL"],
                                              state="absent"))
    assert revoke.result["queries"] == [
        'REVOKE SELECT ON TABLE "exchange"."wire_targets" FROM "repl"']
    regrant = run_module("pg_privileges", dict(base, tables=["wire_targets"], privileges=["select"]))
    assert regrant.result["changed"]

    missing = run_module("pg_privileges", dict(base, tables=["reserves", "nope"],
                                               privileges=["SELECT"]))
    assert not missing.ok
    assert "no such table in schema 'exchange' of database 'exch': nope" in missing.result["msg"]
    check = run_module("pg_privileges", dict(base, role="later", tables=["reserves", "nope"],
                                             privileges=["SELECT"]), check=True)
    assert check.ok and check.result["changed"], check
    assert len(check.result["warnings"]) == 2
    assert check.result["queries"] == [
        'GRANT SELECT ON TABLE "exchange"."nope", "exchange"."reserves" TO "later"']
    bad = run_module("pg_privileges", dict(base, tables=["reserves"], privileges=["SELEKT"]))
    assert not bad.ok and "unknown table privilege 'SELEKT'" in bad.result["msg"]
    norole = run_module("pg_privileges", dict(base, role="ghost", tables=["reserves"],
                                              privileges=["SELECT"]))
    assert not norole.ok and "role 'ghost' does not exist" in norole.result["msg"]


def test_privileges_on_parameters(pg):
    """GRANT SET ON PARAMETER (PostgreSQL 15): what the sync's writer needs to switch the
    safe copy's triggers off for its own session, and nothing more."""
    publisher, _ = pg
    publisher.psql("exch", "CREATE ROLE writer LOGIN")
    base = dict(login(publisher, "exch"), role="writer")
    args = dict(base, parameters=["Session_Replication_Role"], parameter_privileges=["set"],
                exclusive=True)

    def may_set(setting="session_replication_role"):
        return one(publisher, "exch", "SELECT has_parameter_privilege('writer', %s, 'SET')",
                   (setting,))

    check = run_module("pg_privileges", args, check=True, diff=True)
    assert check.ok and check.result["changed"], check
    assert check.result["queries"] == [
        'GRANT SET ON PARAMETER "session_replication_role" TO "writer"']
    assert check.result["diff"]["before"]["parameters"] == {"session_replication_role": []}
    assert check.result["diff"]["after"]["parameters"] == {"session_replication_role": ["SET"]}
    assert not may_set()

    run = run_tasks([{"pg_privileges": args}, {"pg_privileges": args}], diff=True)
    assert run.ok, run
    first, second = run.results
    assert first["changed"] and first["privileges"]["parameters"] == {
        "session_replication_role": ["SET"]}
    assert not second["changed"] and second["queries"] == [], second
    assert may_set()
    # The role really may SET it now, and only that one superuser-only parameter.
    with psycopg.connect(publisher.uri("exch", user="writer"), autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SET log_statement = 'none'")

    # Only what is missing is granted; exclusive revokes what is not listed.
    both = run_module("pg_privileges", dict(args, parameter_privileges=["ALL"]))
    assert both.result["queries"] == [
        'GRANT ALTER SYSTEM ON PARAMETER "session_replication_role" TO "writer"']
    back = run_module("pg_privileges", dict(args, parameter_privileges=["SET"]), diff=True)
    assert back.result["queries"] == [
        'REVOKE ALTER SYSTEM ON PARAMETER "session_replication_role" FROM "writer"']
    assert back.result["diff"]["before"]["parameters"]["session_replication_role"] == [
        "SET", "ALTER SYSTEM"]
    # A custom (dotted) parameter is quoted part by part; grants need no definition yet.
    custom = run_module("pg_privileges", dict(base, parameters=["taler_ops.level"],
                                              parameter_privileges=["SET"]))
    assert custom.ok and custom.result["queries"] == [
        'GRANT SET ON PARAMETER "taler_ops"."level" TO "writer"'], custom
    assert may_set("taler_ops.level")

    gone = run_tasks([{"pg_privileges": dict(args, state="absent", exclusive=False)},
                      {"pg_privileges": dict(args, state="absent", exclusive=False)}])
    assert [r["changed"] for r in gone.results] == [True, False], gone
    assert gone.results[0]["queries"] == [
        'REVOKE SET ON PARAMETER "session_replication_role" FROM "writer"']
    assert not may_set()
    # Both privileges go in one statement.
    pair = run_module("pg_privileges", dict(args, parameter_privileges=["SET", "alter  system"]),
                      check=True)
    assert pair.result["queries"] == [
        'GRANT SET, ALTER SYSTEM ON PARAMETER "session_replication_role" TO "writer"']

    unknown = run_module("pg_privileges", dict(base, parameters=["no_such_setting"],
                                               parameter_privileges=["SET"]))
    assert not unknown.ok and "unknown configuration parameter(s): no_such_setting" in \
        unknown.result["msg"]
    bad = run_module("pg_privileges", dict(base, parameters=["work_mem"],
                                           parameter_privileges=["USAGE"]))
    assert not bad.ok and "unknown parameter privilege 'USAGE'" in bad.result["msg"]
    lonely = run_module("pg_privileges", dict(base, parameters=["work_mem"]))
    assert not lonely.ok and "parameter_privileges" in lonely.result["msg"]


# --- pg_publication --------------------------------------------------------

def test_publication_create_converge_check_diff(pg):
    publisher, _ = pg
    base = dict(login(publisher, "exch"), name="taler")
    args = dict(base, tables=["exchange.reserves"])
    check = run_module("pg_publication", args, check=True)
    assert check.result["changed"]
    assert one(publisher, "exch", "SELECT count(*) FROM pg_publication") == 0

    run = run_tasks([{"pg_publication": args}, {"pg_publication": args}])
    assert run.ok, run
    assert run.results[0]["queries"] == [
        'CREATE PUBLICATION "taler" FOR TABLE "exchange"."reserves" WITH '
        "(publish = 'insert, update, delete, truncate', publish_via_partition_root = false)"]
    assert not run.results[1]["changed"]

    converge = run_module("pg_publication", dict(
        base, tables=["exchange.deposits", 'EXCHANGE."reserves"'], publish=["insert"],
        publish_via_partition_root=True), diff=True)
    assert converge.ok, converge
    assert converge.result["queries"] == [
        'ALTER PUBLICATION "taler" ADD TABLE "exchange"."deposits"',
        "ALTER PUBLICATION \"taler\" SET (publish = 'insert', publish_via_partition_root = true)"]
    assert converge.result["diff"]["before"]["tables"] == ["exchange.reserves"]
    assert converge.result["diff"]["after"]["tables"] == ["exchange.deposits", "exchange.reserves"]
    assert one(publisher, "exch", "SELECT pubviaroot AND NOT pubupdate FROM pg_publication")

    back = run_module("pg_publication", args)
    assert back.result["queries"] == [
        'ALTER PUBLICATION "taler" DROP TABLE "exchange"."deposits"',
        "ALTER PUBLICATION \"taler\" SET (publish = 'insert, update, delete, truncate', "
        "publish_via_partition_root = false)"]

    missing = run_module("pg_publication", dict(base, tables=["exchange.reserves", "exchange.nope"]))
    assert not missing.ok
    assert "no such table in database 'exch': exchange.nope" in missing.result["msg"]

    run = run_tasks([{"pg_publication": dict(base, name="scratch", tables=[])},
                     {"pg_publication": dict(base, name="scratch", state="absent")},
                     {"pg_publication": dict(base, name="scratch", state="absent")}])
    assert [r["changed"] for r in run.results] == [True, True, False]


# --- pg_subscription -------------------------------------------------------

def publisher_connection(publisher, **extra):
    return dict(dict(host="127.0.0.1", port=publisher.port, dbname="exch", user="repl",
                     password=PASSWORD, options="-crow_security=off"), **extra)


def ensure_replication_role(publisher, *more_tasks):
    """The replication role with PASSWORD and SELECT on the tables, whatever ran before."""
    base = login(publisher, "exch")
    run = run_tasks(list(more_tasks) + [
        {"pg_role": dict(base, name="repl", login=True, replication=True, password=PASSWORD)},
        {"pg_privileges": dict(base, role="repl", schema="exchange", tables=["ALL"],
                               privileges=["SELECT"], schema_privileges=["USAGE"])},
        {"pg_publication": dict(base, name="taler", tables=["exchange.reserves"])}])
    assert run.ok, run


def sub_state(subscriber, column):
    return one(subscriber, "ingres", f"SELECT {column} FROM pg_subscription WHERE subname = 'ingres'")


def test_subscription_lifecycle(pg):
    publisher, subscriber = pg
    base = dict(login(subscriber, "ingres"), name="ingres")
    args = dict(base, publications=["taler"], connection=publisher_connection(publisher))
    # taler2 is created before the slot: a walsender decoding WAL from before a publication
    # existed fails with "publication does not exist" (and disable_on_error would disable us).
    ensure_replication_role(publisher, {"pg_publication": dict(
        login(publisher, "exch"), name="taler2", tables=["exchange.deposits"])})
    publisher.psql("exch", "INSERT INTO exchange.reserves VALUES (1, 'first')")

    # Log every statement, and fail one on purpose: still no password in the server log.
    subscriber.psql("postgres", "ALTER SYSTEM SET log_statement = 'all'")
    subscriber.psql("postgres", "SELECT pg_reload_conf()")
    check = run_module("pg_subscription", args, check=True, diff=True)
    assert check.ok and check.result["changed"], check
    assert "password=********" in check.result["queries"][0]
    assert sub_state(subscriber, "count(*)") == 0

    run = run_tasks([{"pg_subscription": args}, {"pg_subscription": args}], diff=True,
                    verbosity=3, callback="default")
    assert run.ok, run.stdout[-3000:]
    assert_no_secret(run.stdout + run.stderr)
    assert "password=********" in run.stdout
    again = run_module("pg_subscription", args)
    assert again.ok and not again.result["changed"] and again.result["queries"] == []
    assert again.result["subscription"]["password_set"] is True
    assert "password" not in again.result["subscription"]["connection"]
    assert wait_for(lambda: one(subscriber, "ingres", "SELECT count(*) FROM exchange.reserves") == 1), \
        open(subscriber.log).read()[-3000:]
    publisher.psql("exch", "INSERT INTO exchange.reserves VALUES (2, 'live')")
    assert wait_for(lambda: one(subscriber, "ingres", "SELECT count(*) FROM exchange.reserves") == 2)

    # Each option PostgreSQL can ALTER converges, and a rerun is quiet (one playbook, two
    # tasks per step; each result's state is read back from the catalog).
    steps = [
        (dict(synchronous_commit="local"),
         "ALTER SUBSCRIPTION \"ingres\" SET (synchronous_commit = 'local')", "synchronous_commit"),
        (dict(binary=True), 'ALTER SUBSCRIPTION "ingres" SET (binary = true)', "binary"),
        (dict(streaming=True), 'ALTER SUBSCRIPTION "ingres" SET (streaming = true)', "streaming"),
        (dict(disable_on_error=True), 'ALTER SUBSCRIPTION "ingres" SET (disable_on_error = true)',
         "disable_on_error"),
        (dict(enabled=False), 'ALTER SUBSCRIPTION "ingres" DISABLE', "enabled"),
    ]
    options, tasks = {}, []
    for change, _, _ in steps:
        options.update(change)
        tasks += [{"pg_subscription": dict(args, **options)}] * 2
    run = run_tasks(tasks)
    assert run.ok, run
    for i, (change, query, key) in enumerate(steps):
        first, second = run.results[2 * i], run.results[2 * i + 1]
        assert first["queries"] == [query], change
        assert first["subscription"][key] == change[key]
        assert not second["changed"], change
    assert sub_state(subscriber, "ARRAY[subsynccommit, subbinary::text, substream::text, "
                     "subdisableonerr::text, subenabled::text]") == [
        "local", "true", "true", "true", "false"]
    options["enabled"] = True

    # Check mode: reported, not done (the catalog is read in between by the next task).
    run = run_tasks([dict({"pg_subscription": dict(args, **options)}, check_mode=True),
                     {"pg_subscription": dict(args, **options)}])
    check, enable = run.results
    assert check["queries"] == ['ALTER SUBSCRIPTION "ingres" ENABLE']
    assert check["subscription"]["enabled"] is True  # predicted
    assert enable["queries"] == check["queries"]  # so check mode did not enable it
    assert sub_state(subscriber, "subenabled") is True

    # Publications: a second one, refreshed with its data.
    publisher.psql("exch", "INSERT INTO exchange.deposits VALUES (7, 'dep')")
    both = dict(args, publications=["taler", "taler2"], **options)
    run = run_tasks([{"pg_subscription": both}, {"pg_subscription": both}])
    assert run.results[0]["queries"] == [
        'ALTER SUBSCRIPTION "ingres" SET PUBLICATION "taler", "taler2" '
        "WITH (refresh = true, copy_data = true)"]
    assert not run.results[1]["changed"]
    assert wait_for(lambda: one(subscriber, "ingres", "SELECT count(*) FROM exchange.deposits") == 1)

    # state=refresh picks up a table added to a publication.
    run = run_tasks([
        {"pg_publication": dict(login(publisher, "exch"), name="taler2",
                                tables=["exchange.deposits", "exchange.wire_targets"])},
        dict({"pg_subscription": dict(both, state="refresh")}, check_mode=True),
        {"pg_subscription": dict(both, state="refresh")}])
    assert run.ok, open(subscriber.log).read()[-3000:]
    _, check, refresh = run.results
    assert check["refreshed"] and check["changed"]
    assert "exchange.wire_targets" not in check["tables"]
    assert refresh["queries"] == [
        'ALTER SUBSCRIPTION "ingres" REFRESH PUBLICATION WITH (copy_data = true)']
    assert "exchange.wire_targets" in refresh["tables"]

    # Connection: a new key, then a new password (the role's too); both masked.
    conn2 = publisher_connection(publisher, application_name="taler-ingres")
    run = run_module("pg_subscription", dict(both, connection=conn2), diff=True)
    assert run.result["queries"] == [
        "ALTER SUBSCRIPTION \"ingres\" CONNECTION 'host=127.0.0.1 port=%d dbname=exch user=repl "
        "password=******** options=-crow_security=off application_name=taler-ingres'"
        % publisher.port]
    assert run.result["diff"]["after"]["connection"]["application_name"] == "taler-ingres"
    assert "password" not in run.result["diff"]["after"]["connection"]
    conn3 = dict(conn2, password=NEW_PASSWORD)
    run = run_tasks([
        {"pg_role": dict(login(publisher, "exch"), name="repl", password=NEW_PASSWORD)},
        {"pg_subscription": dict(both, connection=conn3)},
        {"pg_subscription": dict(both, connection=conn3)}], diff=True, verbosity=3,
        callback="default")
    assert run.ok, run.stdout[-3000:]
    assert_no_secret(run.stdout + run.stderr)
    assert "******** (new)" in run.stdout
    stored = one(subscriber, "ingres", "SELECT subconninfo FROM pg_subscription")
    assert psycopg.conninfo.conninfo_to_dict(stored)["password"] == NEW_PASSWORD
    publisher.psql("exch", "INSERT INTO exchange.reserves VALUES (3, 'after new password')")
    assert wait_for(lambda: one(subscriber, "ingres", "SELECT count(*) FROM exchange.reserves") == 3)

    # slot_name: point at another (existing) slot; needs a disable/enable around it.
    publisher.psql("exch", "SELECT pg_create_logical_replication_slot('ingres_b', 'pgoutput')")
    moved = run_tasks([{"pg_subscription": dict(both, connection=conn3, slot_name="ingres_b")},
                       {"pg_subscription": dict(both, connection=conn3, slot_name="ingres_b")}])
    assert moved.results[0]["queries"] == [
        'ALTER SUBSCRIPTION "ingres" DISABLE',
        "ALTER SUBSCRIPTION \"ingres\" SET (slot_name = 'ingres_b')",
        'ALTER SUBSCRIPTION "ingres" ENABLE']
    assert not moved.results[1]["changed"]
    assert sub_state(subscriber, "subslotname") == "ingres_b"
    assert wait_for(lambda: one(publisher, "postgres",
                                "SELECT active FROM pg_replication_slots WHERE slot_name = 'ingres_b'")), \
        open(subscriber.log).read()[-3000:]

    # A statement that fails on the server (owner must exist) with the conninfo in the session.
    failed = run_module("pg_subscription", dict(both, connection=conn3, slot_name="ingres_b",
                                                owner="no such owner"))
    assert not failed.ok and 'role "no such owner" does not exist' in failed.result["msg"]
    with open(subscriber.log) as fh:
        assert_no_secret(fh.read())
    subscriber.psql("postgres", "ALTER SYSTEM RESET log_statement")
    subscriber.psql("postgres", "SELECT pg_reload_conf()")

    # Absent drops the subscription and its (current) slot on the publisher.
    gone = run_tasks([{"pg_subscription": dict(base, state="absent")},
                      {"pg_subscription": dict(base, state="absent")}])
    assert [r["changed"] for r in gone.results] == [True, False]
    assert sub_state(subscriber, "count(*)") == 0
    slots = one(publisher, "postgres", "SELECT array_agg(slot_name ORDER BY 1) FROM pg_replication_slots")
    assert slots == ["ingres"]  # the slot it was moved away from stays, as documented
    publisher.psql("postgres", "SELECT pg_drop_replication_slot('ingres')")


def test_subscription_enable_disable_refresh_by_name(pg):
    """Issue 19 item 2: an existing subscription is paused, resumed and refreshed by its name
    alone, as upgrade.yml does; what the task leaves out (connection, publications, the other
    options) stays as it is, and a refresh runs only when the publisher lists other tables."""
    publisher, subscriber = pg
    # Own tables and publication: the other tests' subscriptions left rows in exchange.reserves
    # that an initial copy would collide with.
    for cluster, db in ((publisher, "exch"), (subscriber, "ingres")):
        cluster.psql(db, "CREATE TABLE IF NOT EXISTS exchange.paused_a (id bigint PRIMARY KEY);"
                         " CREATE TABLE IF NOT EXISTS exchange.paused_b (id bigint PRIMARY KEY)")
    ensure_replication_role(publisher, {"pg_publication": dict(
        login(publisher, "exch"), name="paused", tables=["exchange.paused_a"])})
    publisher.psql("exch", "INSERT INTO exchange.paused_a VALUES (1); "
                           "INSERT INTO exchange.paused_b VALUES (1)")
    base = dict(login(subscriber, "ingres"), name="paused")
    created = run_module("pg_subscription", dict(
        base, publications=["paused"], connection=publisher_connection(publisher),
        synchronous_commit="local", binary=True, disable_on_error=True))
    assert created.ok, created
    assert wait_for(lambda: one(subscriber, "ingres", "SELECT count(*) FROM exchange.paused_a") == 1)
    stored = one(subscriber, "ingres", "SELECT subconninfo FROM pg_subscription WHERE subname = 'paused'")
    settings = ("SELECT ARRAY[subsynccommit, subbinary::text, substream::text, subdisableonerr::text,"
                " subenabled::text, array_to_string(subpublications, ',')]"
                " FROM pg_subscription WHERE subname = 'paused'")

    # Pause: reported in check mode, done once, quiet after; nothing else is touched.
    pause = dict(base, enabled=False)
    run = run_tasks([dict({"pg_subscription": pause}, check_mode=True),
                     {"pg_subscription": pause}, {"pg_subscription": pause}], diff=True)
    assert run.ok, run
    check, paused, again = run.results
    assert check["changed"] and check["queries"] == ['ALTER SUBSCRIPTION "paused" DISABLE']
    assert check["subscription"]["enabled"] is False  # predicted
    assert paused["queries"] == check["queries"]  # so check mode did not disable it
    assert paused["diff"]["before"]["enabled"] is True and paused["diff"]["after"]["enabled"] is False
    assert paused["subscription"]["publications"] == ["paused"]
    assert not again["changed"] and again["queries"] == []
    assert one(subscriber, "ingres", settings) == ["local", "true", "false", "true", "false", "paused"]
    assert one(subscriber, "ingres", "SELECT subconninfo FROM pg_subscription "
                                     "WHERE subname = 'paused'") == stored
    assert wait_for(lambda: one(subscriber, "ingres", "SELECT count(*) FROM pg_stat_subscription "
                                                      "WHERE subname = 'paused' AND pid IS NOT NULL") == 0)
    publisher.psql("exch", "INSERT INTO exchange.paused_a VALUES (2)")

    # A refresh needs an enabled subscription: said so, nothing done.
    refused = run_module("pg_subscription", dict(base, state="refresh"))
    assert not refused.ok and "is disabled; PostgreSQL refreshes only enabled" in refused.result["msg"]

    # The publication gains a table: resume and refresh by name; the stored connection (and
    # its password) is what the module asks the publisher with, and nothing of it is shown.
    resume = dict(base, enabled=True, state="refresh")
    run = run_tasks([
        {"pg_publication": dict(login(publisher, "exch"), name="paused",
                                tables=["exchange.paused_a", "exchange.paused_b"])},
        dict({"pg_subscription": resume}, check_mode=True),
        {"pg_subscription": resume}, {"pg_subscription": resume}],
        verbosity=3, callback="taler_json")
    assert run.ok, run
    assert_no_secret(run.stdout + run.stderr)
    _, check, resumed, again = run.results
    assert check["changed"] and check["refreshed"]
    assert check["queries"] == ['ALTER SUBSCRIPTION "paused" ENABLE',
                                'ALTER SUBSCRIPTION "paused" REFRESH PUBLICATION WITH (copy_data = true)']
    assert "exchange.paused_b" not in check["tables"]
    assert resumed["queries"] == check["queries"] and resumed["refreshed"]
    assert "exchange.paused_b" in resumed["tables"]
    assert not again["changed"] and not again["refreshed"] and again["queries"] == []
    assert one(subscriber, "ingres", settings) == ["local", "true", "false", "true", "true", "paused"]
    assert wait_for(lambda: one(subscriber, "ingres", "SELECT count(*) FROM exchange.paused_b") == 1)
    assert wait_for(lambda: one(subscriber, "ingres", "SELECT count(*) FROM exchange.paused_a") == 2)

    # A table leaves the publication: the refresh drops it from the subscription.
    run = run_tasks([
        {"pg_publication": dict(login(publisher, "exch"), name="paused", tables=["exchange.paused_a"])},
        {"pg_subscription": dict(base, state="refresh")}])
    assert run.ok, run
    assert run.result["refreshed"] and list(run.result["tables"]) == ["exchange.paused_a"]
    # Without asking the publisher the module cannot know: it refreshes.
    blind = run_module("pg_subscription", dict(base, state="refresh", validate_publisher=False))
    assert blind.ok and blind.result["changed"] and blind.result["refreshed"]

    # The stored password no longer works: the error says so and holds no trace of it.
    run = run_tasks([
        {"pg_role": dict(login(publisher, "exch"), name="repl", password=NEW_PASSWORD)},
        dict({"pg_subscription": dict(base, state="refresh")}, ignore_errors=True)],
        verbosity=3, callback="taler_json")
    assert run.result.get("failed") and 'password authentication failed for user "repl"' in \
        run.result["msg"], run.result
    assert_no_secret(run.stdout + run.stderr)

    # By name alone nothing can be created: said so, except in check mode (an earlier task
    # would create it).
    ghost = dict(login(subscriber, "ingres"), name="ghost", enabled=False)
    missing = run_module("pg_subscription", ghost)
    assert not missing.ok
    assert "subscription 'ghost' does not exist; creating it needs publications and connection" \
        in missing.result["msg"]
    check = run_module("pg_subscription", ghost, check=True)
    assert check.ok and not check.result["changed"] and check.result["subscription"] is None
    assert any("'ghost' does not exist" in w for w in check.result["warnings"])

    # Dropping the slot connects with the stored password: give the role it back first.
    ensure_replication_role(publisher)
    gone = run_module("pg_subscription", dict(base, state="absent"))
    assert gone.ok and gone.result["changed"], gone


def test_subscription_bad_input_fails_clearly(pg):
    publisher, subscriber = pg
    base = dict(login(subscriber, "ingres"), name="broken")
    ensure_replication_role(publisher)
    cases = [
        (dict(publications=["taler", "no_such_pub"], connection=publisher_connection(publisher)),
         "subscription 'broken': no such publication on the publisher (host=127.0.0.1 port=%d "
         "dbname=exch): no_such_pub" % publisher.port),
        (dict(publications=["taler"],
              connection=publisher_connection(publisher, extra={"sslmod": "require"})),
         'bad connection for subscription \'broken\': invalid connection option "sslmod"'),
        (dict(publications=["taler"],
              connection=publisher_connection(publisher, port=free_port(), connect_timeout=3)),
         "subscription 'broken': cannot connect to the publisher (host=127.0.0.1 port="),
        (dict(publications=["taler"], connection=publisher_connection(publisher, password="wrong")),
         'password authentication failed for user "repl"'),
        (dict(publications=["unreadable"], connection=publisher_connection(publisher)),
         "subscription 'broken': role 'repl' on the publisher (host=127.0.0.1 port=%d dbname=exch) "
         "cannot read published table(s) exchange.secrets (needs USAGE on the schema and SELECT "
         "on the table)" % publisher.port),
    ]
    publisher.psql("exch", "CREATE TABLE IF NOT EXISTS exchange.secrets (id int PRIMARY KEY)")
    run_module("pg_publication", dict(login(publisher, "exch"), name="unreadable",
                                      tables=["exchange.secrets"]))
    tasks = [dict({"pg_subscription": dict(base, **args)}, ignore_errors=True) for args, _ in cases]
    run = run_tasks(tasks, verbosity=3, callback="taler_json")
    assert len(run.results) == len(cases), run
    for result, (_, expected) in zip(run.results, cases):
        assert result.get("failed"), result
        assert expected in result["msg"], result["msg"]
    assert_no_secret(run.stdout + run.stderr)
    assert one(subscriber, "ingres", "SELECT count(*) FROM pg_subscription") == 0
    # In check mode the same problem is a warning: an earlier task would have created it.
    check = run_module("pg_subscription", dict(base, **cases[0][0]), check=True)
    assert check.ok and check.result["changed"], check
    assert any("no such publication" in w for w in check.result["warnings"])
    missing = run_module("pg_subscription", dict(base, publications=["taler"]))
    assert not missing.ok and "connection" in missing.result["msg"]


def test_newer_server_options_only_where_the_server_has_them(pg):
    """Issue 18 item 6: options of PostgreSQL 16/17/18 are refused clearly on an older server
    (the statements for newer servers: tests/test_pg_options.py), accepted on a newer one;
    left unset, nothing changes on the server here."""
    publisher, subscriber = pg
    version = one(subscriber, "postgres", "SELECT current_setting('server_version_num')::int")
    ensure_replication_role(publisher)
    base = dict(login(subscriber, "ingres"), name="newer", publications=["taler"],
                connection=publisher_connection(publisher), slot_name="newer", create_slot=True)
    cases = [("run_as_owner", True, 160000), ("origin", "none", 160000),
             ("password_required", True, 160000), ("failover", False, 170000),
             ("streaming", "parallel", 160000)]
    refused = [c for c in cases if version < c[2]]
    tasks = [dict({"pg_subscription": dict(base, **{option: value})}, ignore_errors=True)
             for option, value, _ in refused]
    pub_refused = version < 180000
    tasks.append(dict({"pg_publication": dict(login(publisher, "exch"), name="taler",
                                              tables=["exchange.reserves"],
                                              publish_generated_columns="none")},
                      ignore_errors=True))
    run = run_tasks(tasks)
    assert len(run.results) == len(tasks), run
    for result, (option, _, since) in zip(run.results, refused):
        assert result.get("failed") and not result.get("changed"), result
        assert f"option {option}" in result["msg"] and \
            f"needs PostgreSQL {since // 10000} or later" in result["msg"], result["msg"]
        assert f"server_version_num {version}" in result["msg"]
    pub = run.results[-1]
    if pub_refused:
        assert pub.get("failed") and "publish_generated_columns needs PostgreSQL 18" in pub["msg"]
    else:
        assert not pub.get("failed"), pub
    assert one(subscriber, "ingres", "SELECT count(*) FROM pg_subscription") == 0
    # Unset, the module behaves as before: create, rerun quiet, drop.
    run = run_tasks([{"pg_subscription": base}, {"pg_subscription": base},
                     {"pg_subscription": dict(base, state="absent")}])
    assert run.ok, run
    created, again, _ = run.results
    assert created["changed"] and not again["changed"] and again["queries"] == []
    assert not any(k in created["subscription"] for k, _, since in cases
                   if since > version and k != "streaming")


# --- pg_setting -------------------------------------------------------------

def test_setting_units_restart_and_reset(pg):
    publisher, _ = pg
    base = login(publisher, "postgres")
    run = run_tasks([
        {"pg_setting": dict(base, name="max_slot_wal_keep_size", value="10GB")},
        {"pg_setting": dict(base, name="max_slot_wal_keep_size", value="10240MB")},
        {"pg_setting": dict(base, name="wal_level", value="logical")},
        {"pg_setting": dict(base, name="max_wal_senders", value=12)},
        {"pg_setting": dict(base, name="max_wal_senders", value="12")},
    ], diff=True)
    assert run.ok, run
    keep, same, wal, senders, senders2 = run.results
    assert keep["changed"] and keep["queries"][0] == \
        "ALTER SYSTEM SET \"max_slot_wal_keep_size\" = '10GB'"
    assert keep["restart_required"] is False
    assert wait_for(lambda: one(publisher, "postgres", "SHOW max_slot_wal_keep_size") == "10GB")
    assert not same["changed"]
    assert not wal["changed"] and not wal["restart_required"]
    assert senders["changed"] and senders["restart_required"] and senders["context"] == "postmaster"
    assert not senders2["changed"] and senders2["restart_required"]  # until someone restarts
    assert senders["diff"] == {"before": "max_wal_senders = 10\n", "after": "max_wal_senders = 12\n"}

    check = run_module("pg_setting", dict(base, name="max_wal_senders", state="absent"), check=True)
    assert check.result["changed"]
    assert "max_wal_senders" in one(publisher, "postgres",
                                    "SELECT string_agg(name, ',') FROM pg_file_settings "
                                    "WHERE sourcefile LIKE '%auto.conf'")
    reset = run_tasks([{"pg_setting": dict(base, name=n, state="absent")}
                       for n in ("max_wal_senders", "max_slot_wal_keep_size", "max_wal_senders")])
    assert [r["changed"] for r in reset.results] == [True, True, False]
    assert reset.results[0]["queries"][0] == 'ALTER SYSTEM RESET "max_wal_senders"'
    assert not reset.results[0]["restart_required"]  # back to the running 10

    bad = run_tasks([dict({"pg_setting": dict(base, name="no_such_setting", value="1")},
                          ignore_errors=True),
                     dict({"pg_setting": dict(base, name="wal_level", value="fancy")},
                          ignore_errors=True)])
    assert "unknown setting 'no_such_setting'" in bad.results[0]["msg"]
    assert "invalid value 'fancy' for setting 'wal_level'" in bad.results[1]["msg"]


# --- pg_database ------------------------------------------------------------

def test_database_create_converge_drop(pg):
    _, subscriber = pg
    base = dict(login(subscriber, "postgres"), name="Taler Ingres")
    run = run_tasks([
        {"pg_role": dict(login(subscriber, "postgres"), name="ingres-owner")},
        {"pg_database": dict(base, owner="ingres-owner")},
        {"pg_database": dict(base, owner="ingres-owner")},
        {"pg_database": dict(base, owner="postgres", connection_limit=3)},
        dict({"pg_database": dict(base, locale="C")}, ignore_errors=True),
        {"pg_database": dict(base, state="absent")},
        {"pg_database": dict(base, state="absent")},
    ], diff=True)
    _, created, again, altered, wrong_locale, dropped, gone = run.results
    assert created["queries"] == [
        "CREATE DATABASE \"Taler Ingres\" WITH TEMPLATE \"template0\" ENCODING 'UTF8' "
        "LOCALE 'C.UTF-8' OWNER \"ingres-owner\""]
    assert created["database"]["owner"] == "ingres-owner"
    assert not again["changed"]
    assert altered["queries"] == ['ALTER DATABASE "Taler Ingres" OWNER TO "postgres"',
                                  'ALTER DATABASE "Taler Ingres" WITH CONNECTION LIMIT 3']
    assert wrong_locale["failed"] and "PostgreSQL cannot change them" in wrong_locale["msg"]
    assert dropped["changed"] and not gone["changed"]


def test_modules_document_themselves():
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    names = ["pg_role", "pg_privileges", "pg_publication", "pg_subscription", "pg_setting",
             "pg_database"]
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-doc"), "-M",
                           "library", "--json", *names], cwd=root, capture_output=True, text=True,
                          env=dict(os.environ, ANSIBLE_CONFIG=os.path.join(root, "ansible.cfg")))
    assert proc.returncode == 0, proc.stderr
    import json
    docs = json.loads(proc.stdout)
    for name in names:
        doc = docs[name]
        assert doc["doc"]["options"]["login_db"]["required"] is True  # the shared fragment
        assert doc["examples"] and doc["return"]["queries"]
