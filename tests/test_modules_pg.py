"""The pg_publication, pg_setting and pg_database modules (library/), run for real through
ansible-playbook on the clusters of tests/modules_pg_helpers.py, and the modules'
documentation.  pg_role and pg_privileges: tests/test_modules_pg_roles.py; pg_subscription:
tests/test_modules_pg_subscription.py.
"""

import os

import psycopg
import pytest

from ansible_runner import run_module, run_tasks
from conftest import wait_for
from modules_pg_helpers import pg  # noqa: F401 (fixture)
from modules_pg_helpers import login, one


def test_privileges_on_functions(pg):
    """EXECUTE on a function (every overload of the name): what the sync needs on the safe
    copy's taler_ops.analyze_exchange_table; EXECUTE granted to PUBLIC is not the role's own."""
    publisher, _ = pg
    publisher.psql("exch", "CREATE ROLE caller LOGIN")
    publisher.psql("exch", "CREATE FUNCTION exchange.analyze_it(t text) RETURNS void "
                           "LANGUAGE sql AS 'SELECT'")
    publisher.psql("exch", "CREATE FUNCTION exchange.analyze_it(t text, n int) RETURNS void "
                           "LANGUAGE sql AS 'SELECT'")
    publisher.psql("exch", 'CREATE FUNCTION exchange."Odd name"() RETURNS int '
                           "LANGUAGE sql AS 'SELECT 1'")
    publisher.psql("exch", "REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA exchange FROM PUBLIC")
    publisher.psql("exch", "GRANT USAGE ON SCHEMA exchange TO caller")
    base = dict(login(publisher, "exch"), role="caller", schema="exchange")
    args = dict(base, functions=["analyze_it"], function_privileges=["execute"], exclusive=True)

    def may_call(signature="exchange.analyze_it(text)"):
        return one(publisher, "exch", "SELECT has_function_privilege('caller', %s, 'EXECUTE')",
                   (signature,))

    check = run_module("pg_privileges", args, check=True, diff=True)
    assert check.ok and check.result["changed"], check
    assert check.result["queries"] == [
        'GRANT EXECUTE ON FUNCTION exchange.analyze_it(t text), '
        'exchange.analyze_it(t text, n integer) TO "caller"']
    assert check.result["diff"]["before"]["functions"] == {
        "exchange.analyze_it(t text)": [], "exchange.analyze_it(t text, n integer)": []}
    assert not may_call()

    run = run_tasks([{"pg_privileges": args}, {"pg_privileges": args}], diff=True)
    assert run.ok, run
    first, second = run.results
    assert first["changed"] and first["privileges"]["functions"] == {
        "exchange.analyze_it(t text)": ["EXECUTE"],
        "exchange.analyze_it(t text, n integer)": ["EXECUTE"]}
    assert first["privileges"]["tables"] == {}
    assert not second["changed"] and second["queries"] == [], second
    assert may_call() and may_call("exchange.analyze_it(text, int)")
    with psycopg.connect(publisher.uri("exch", user="caller"), autocommit=True) as conn:
        conn.execute("SELECT exchange.analyze_it('reserves')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute('SELECT exchange."Odd name"()')

    # A name that needs quoting is quoted by the server; absent revokes.
    odd = run_module("pg_privileges", dict(base, functions=["Odd name"],
                                           function_privileges=["ALL"]))
    assert odd.ok and odd.result["queries"] == [
        'GRANT EXECUTE ON FUNCTION exchange."Odd name"() TO "caller"'], odd
    gone = run_tasks([{"pg_privileges": dict(args, state="absent", exclusive=False)},
                      {"pg_privileges": dict(args, state="absent", exclusive=False)}])
    assert [r["changed"] for r in gone.results] == [True, False], gone
    assert not may_call()

    missing = run_module("pg_privileges", dict(base, functions=["analyze_it", "nope"],
                                               function_privileges=["EXECUTE"]))
    assert not missing.ok
    assert "no such function in schema 'exchange' of database 'exch': nope" in \
        missing.result["msg"]
    later = run_module("pg_privileges", dict(base, functions=["nope"],
                                             function_privileges=["EXECUTE"]), check=True)
    assert later.ok and not later.result["changed"] and len(later.result["warnings"]) == 1
    bad = run_module("pg_privileges", dict(base, functions=["analyze_it"],
                                           function_privileges=["USAGE"]))
    assert not bad.ok and "unknown function privilege 'USAGE'" in bad.result["msg"]
    lonely = run_module("pg_privileges", dict(base, functions=["analyze_it"]))
    assert not lonely.ok and "function_privileges" in lonely.result["msg"]


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
