"""taler_exchange_dbinit and taler_auditor_dbinit run through real Ansible."""

import psycopg
import pytest


@pytest.fixture
def login(cluster, fresh_db):
    dbname = psycopg.conninfo.conninfo_to_dict(fresh_db)["dbname"]
    return {"login_host": cluster.sockets, "login_port": cluster.port,
            "login_user": "postgres", "login_db": dbname}, fresh_db


def _tables(uri):
    with psycopg.connect(uri) as conn:
        return conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'exchange'"
                            ).fetchone()[0]


def test_exchange_module_check_diff_apply_idempotent(module_runner, login):
    args, uri = login
    res, _ = module_runner("taler_exchange_dbinit", dict(args, role="safe-copy"),
                           check=True, diff=True)
    assert res["changed"] is True and res["pending"] == ["model-exchange-0001", "model-exchange-0002"]
    assert res["diff"] == {"before": {"patches": []},
                           "after": {"patches": ["model-exchange-0001", "model-exchange-0002"]}}
    assert _tables(uri) == 0, "check mode must not touch the database"

    res, _ = module_runner("taler_exchange_dbinit", dict(args, role="safe-copy"), diff=True)
    assert res["changed"] is True and res["applied"] == ["model-exchange-0001", "model-exchange-0002"]
    assert res["setup"]["role"] == "safe-copy"
    assert _tables(uri) > 44

    for check in (True, False):
        res, _ = module_runner("taler_exchange_dbinit", dict(args, role="safe-copy"),
                               check=check)
        assert res["changed"] is False and res["applied"] == [] and res["pending"] == []


def test_exchange_module_refuses_layout_change_in_check_mode_too(module_runner, login):
    args, _ = login
    module_runner("taler_exchange_dbinit", dict(args, role="primary"))
    for check in (True, False):
        res, _ = module_runner("taler_exchange_dbinit", dict(args, role="ingres"), check=check)
        assert res.get("failed") and "created as 'primary'" in res["msg"]


def test_exchange_module_gc_and_absent(module_runner, login):
    args, uri = login
    module_runner("taler_exchange_dbinit", args)
    res, _ = module_runner("taler_exchange_dbinit", dict(args, gc=True), check=True)
    assert res["changed"] is False and res["gc"]["deleted"] == {}
    res, _ = module_runner("taler_exchange_dbinit", dict(args, gc=True))
    assert res["changed"] is False
    res, _ = module_runner("taler_exchange_dbinit", dict(args, state="absent"), check=True)
    assert res["changed"] is True and _tables(uri) > 0
    res, _ = module_runner("taler_exchange_dbinit", dict(args, state="absent"), diff=True)
    assert res["changed"] is True and _tables(uri) == 0
    assert res["diff"]["after"] == {"patches": []}
    res, _ = module_runner("taler_exchange_dbinit", dict(args, state="absent"))
    assert res["changed"] is False


def test_exchange_module_unreachable_fails_with_exit_code_and_no_password(module_runner, cluster):
    from pgcluster import free_port
    args = {"login_host": "127.0.0.1", "login_port": free_port(), "login_user": "taler",
            "login_password": "hunter2-secret", "login_db": "taler", "connect_timeout": 3}
    res, log = module_runner("taler_exchange_dbinit", args, verbosity=3)
    assert res.get("failed") and res["exit_code"] == 5
    assert "cannot connect to the exchange database" in res["msg"]
    assert "hunter2-secret" not in log


def test_auditor_module_restart_is_honest(module_runner, login):
    args, uri = login
    res, _ = module_runner("taler_auditor_dbinit", args)
    assert res["changed"] is True and res["applied"] == ["model-auditor-0001", "model-auditor-0002"]
    res, _ = module_runner("taler_auditor_dbinit", dict(args, restart=True))
    assert res["changed"] is False, "nothing to clear yet"
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("INSERT INTO auditor.auditor_progress VALUES ('k', 1)")
    res, _ = module_runner("taler_auditor_dbinit", dict(args, restart=True), check=True)
    assert res["changed"] is True and res["restarted"] is True
    res, _ = module_runner("taler_auditor_dbinit", dict(args, restart=True))
    assert res["changed"] is True
    with psycopg.connect(uri) as conn:
        assert conn.execute("SELECT count(*) FROM auditor.auditor_progress").fetchone()[0] == 0
    res, _ = module_runner("taler_auditor_dbinit", dict(args, state="absent"))
    assert res["changed"] is True
    res, _ = module_runner("taler_auditor_dbinit", dict(args, state="absent"))
    assert res["changed"] is False
