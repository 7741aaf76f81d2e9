"""Generated histories (taler_ops.sim.generator) audited: clean ones, planted
misbehaviour found by table and serial, new traffic examined alone, and a model- and
a Taler-built auditor database ending up identical."""

import json
import os
import time

import psycopg

from audit_helpers import auditor_flavour, dbs  # noqa: F401 (fixtures)
from audit_helpers import FINDING_OF, GEN_NOW, all_findings, found, make_auditor_db, run, stored
from conftest import FLAVOURS
from taler_build import require_taler_sql
from taler_ops import audit
from taler_ops.schema import dbinit


def test_generated_history_has_no_findings_even_internal(dbs):
    from taler_ops.sim import generator
    generator.bulk(dbs[0], 4000, seed=3, now_us=GEN_NOW)
    report = run(dbs, now_us=GEN_NOW, internal=True)
    assert report["findings"] == [], report["findings"][:5]
    assert report["rows_examined"] > 4000


def test_generated_injections_are_found_with_table_and_serial(dbs, tmp_path):
    from taler_ops.sim import generator
    record_path = tmp_path / "planted.json"
    generator.bulk(dbs[0], 4000, seed=4, now_us=GEN_NOW, inject=list(FINDING_OF),
                   record_path=str(record_path))
    record = json.loads(record_path.read_text())
    assert sorted(e["kind"] for e in record) == sorted(FINDING_OF)
    expected = sorted((FINDING_OF[e["kind"]], e["table"], e["serial"]) for e in record)
    plain = run(dbs, now_us=GEN_NOW)
    assert found(plain) == [f for f in expected if f[0] != "reserve_balance_summary_wrong"]
    internal = run(dbs, now_us=GEN_NOW, internal=True)
    assert found(internal) == [f for f in expected if f[0] == "reserve_balance_summary_wrong"]
    assert all_findings(dbs[1]) == stored(expected)


def test_generated_more_traffic_examines_only_the_new_rows(dbs):
    from taler_ops.sim import generator
    generator.bulk(dbs[0], 3000, seed=5, now_us=GEN_NOW)
    first = run(dbs, now_us=GEN_NOW)
    assert first["findings"] == []
    inserted = generator.bulk(dbs[0], 1500, seed=6, now_us=GEN_NOW)
    second = run(dbs, now_us=GEN_NOW)
    assert second["findings"] == []
    for name, check in second["checks"].items():
        for table, n in check["rows_examined"].items():
            if (name, table) != ("aggregation", "batch_deposits"):   # the open tail is re-read
                assert n == inserted.get(table, 0), (name, table)
        for key, before in check["progress_before"].items():
            assert check["progress_after"][key] >= before
    assert second["progress_moved"]


def test_model_and_taler_auditor_databases_end_up_identical(cluster, tmp_path):
    """One exchange history audited into a model-built and a Taler-built auditor database:
    every row of every Taler table (row ids aside) and the audit's own state are equal."""
    from taler_ops.schema import auditor_schema
    from taler_ops.sim import generator
    require_taler_sql()
    tag = f"{os.getpid()}_{time.monotonic_ns() % 10**6}"
    ex = cluster.createdb(f"ie_{tag}")
    dbinit.exchange_dbinit(ex)
    generator.bulk(ex, 2500, seed=11, now_us=GEN_NOW, inject=list(FINDING_OF),
                   record_path=str(tmp_path / "planted.json"))
    auds = {f: make_auditor_db(cluster.createdb(f"ia_{f}_{tag}"), f) for f in FLAVOURS}
    reports = {f: audit.run(ex, uri, now_us=GEN_NOW, internal=True, currency="KUDOS")
               for f, uri in auds.items()}
    assert reports["model"]["findings"] == reports["taler"]["findings"]
    assert len(reports["model"]["findings"]) == len(FINDING_OF)

    def contents(uri):
        out = {}
        with psycopg.connect(uri) as conn:
            for table in auditor_schema.TABLES:
                cols = [r[0] for r in conn.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass "
                    "AND attnum > 0 AND NOT attisdropped AND attidentity = '' ORDER BY attnum",
                    (f"auditor.{table}",))]
                out[table] = conn.execute(
                    f"SELECT {', '.join(c + '::text' for c in cols)} FROM auditor.{table} "
                    "ORDER BY 1, 2").fetchall() if cols else []
            out["audit_coins"] = conn.execute(
                "SELECT coin_pub, spent, refunded FROM taler_ops.audit_coins ORDER BY 1").fetchall()
        return out
    model, taler = contents(auds["model"]), contents(auds["taler"])
    assert model == taler
    assert model["auditor_progress"] and model["auditor_reserves"] and model["audit_coins"]
