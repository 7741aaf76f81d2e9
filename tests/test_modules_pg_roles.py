"""The pg_role and pg_privileges modules (library/), run for real through ansible-playbook
on the publisher of tests/modules_pg_helpers.py; the privileges tests grant to the
replication role the role tests create."""

import os
import sys

import psycopg
import pytest

from ansible_runner import run_module, run_tasks
from modules_pg_helpers import pg  # noqa: F401 (fixture)
from modules_pg_helpers import NEW_PASSWORD, PASSWORD, TABLES, assert_no_secret, login, one


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
