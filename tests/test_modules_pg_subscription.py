"""The pg_subscription module (library/), run for real through ansible-playbook: the
ingres cluster of tests/modules_pg_helpers.py subscribes to its exchange cluster."""

import psycopg

from ansible_runner import run_module, run_tasks
from conftest import wait_for
from modules_pg_helpers import pg  # noqa: F401 (fixture)
from modules_pg_helpers import NEW_PASSWORD, PASSWORD, assert_no_secret, login, one
from pgcluster import free_port


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


