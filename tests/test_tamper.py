"""The tamper catalogue (tamper_catalogue.py) run against real syncs (issue 9).

Per case: clone a synced ingres/safe-copy pair, tamper with the ingres clone,
sync, check the outcome the catalogue expects and that the safe copy did not
change, then repair and check that the sync resumes and verify finds nothing.
"""

import json
import pathlib
import tempfile

import psycopg
import pytest

from conftest import FLAVOURS, flavour_param
from sync_helpers import clone, execute, make_template, watermarks
from tamper_catalogue import CASES, Copied, Halt, Ignored, LateRow, Refused
from taler_ops.schema import registry
from taler_ops.sim import generator
from taler_ops.schema.exchange_tables import TABLES

GOLDEN_ROWS = 3000


def _digest(uri):
    """Every column of every exchange table (mutable ones too): byte-identical or not."""
    out = {}
    with psycopg.connect(uri) as conn:
        for table in TABLES:
            out[table.name] = conn.execute(
                f'SELECT count(*), md5(string_agg(md5(t::text), \'\' ORDER BY "{table.serial}")) '
                f"FROM exchange.{table.name} t").fetchone()
    return out


def _conf(tmp_path, name, uri):
    path = tmp_path / f"{name}.conf"
    path.write_text(f"[exchangedb-postgres]\nCONFIG = {uri}\n")
    return path


def _run_sql(uri, statements):
    """As the ingres owner (sync_helpers.execute: no triggers or FKs in the way)."""
    if statements:
        execute(uri, *statements)


@pytest.fixture(scope="module", params=[flavour_param(f) for f in FLAVOURS])
def goldens(cluster, request):
    """{partitioned: (ingres template, safe-copy template)} of one flavour, synced once."""
    from conftest import run_cli
    flavour = request.param
    made = {}
    for partitioned in (False, True):
        tag = f"{'part' if partitioned else 'plain'}_{flavour}"
        partitions = 4 if partitioned else None
        make_template(cluster, f"tamper_ingres_{tag}", "ingres", partitions=partitions,
                      flavour=flavour)
        make_template(cluster, f"tamper_safe_{tag}", "safe-copy", flavour=flavour)
        ingres, safe = cluster.uri(f"tamper_ingres_{tag}"), cluster.uri(f"tamper_safe_{tag}")
        generator.bulk(ingres, GOLDEN_ROWS, seed=9)
        tmp = pathlib.Path(tempfile.mkdtemp())
        out = run_cli("sync", "-s", _conf(tmp, "i", ingres), "-d", _conf(tmp, "s", safe), "-t")
        assert out.returncode == 0, out.stdout + out.stderr
        made[partitioned] = (f"tamper_ingres_{tag}", f"tamper_safe_{tag}")
    return made


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_tamper_case(case, goldens, cluster, cli, tmp_path):
    ingres_tpl, safe_tpl = goldens[case.partitioned]
    ingres = clone(cluster, ingres_tpl, "tamper_i")
    safe = clone(cluster, safe_tpl, "tamper_s")
    src, dst = _conf(tmp_path, "ingres", ingres), _conf(tmp_path, "safe", safe)
    before, marks = _digest(safe), watermarks(safe)

    _run_sql(ingres, case.tamper)
    expect = case.expect
    if isinstance(expect, LateRow):
        first = cli("sync", "-s", src, "-d", dst, "-t", "-b", case.batch, "--hole-horizon", "0")
        assert first.returncode == 0, first.stdout + first.stderr
        with psycopg.connect(safe) as conn:
            assert conn.execute("SELECT count(*) FROM taler_ops.sync_holes WHERE table_name = %s "
                                "AND expired_tsz IS NOT NULL", (expect.table,)).fetchone()[0] >= 1
        before, marks = _digest(safe), watermarks(safe)
        _run_sql(ingres, expect.then)
        expect = Halt("late-row", expect.table)
        out = cli("sync", "-s", src, "-d", dst, "-t", "-b", case.batch, "--hole-horizon", "0")
    else:
        out = cli("sync", "-s", src, "-d", dst, "-t", "-b", case.batch)
    log = out.stdout + out.stderr

    if isinstance(expect, Halt):
        assert out.returncode == 1, log
        halt = [line for line in log.splitlines() if line.startswith("HALT ")]
        assert halt and f"table={expect.table} " in halt[0] and f"rule={expect.rule} " in halt[0], log
        after = _digest(safe)
        if case.name == "huge-batch-one-bad":
            # Earlier batches stay committed; nothing of the offending batch is written.
            bad = int(halt[0].split("serial=")[1].split()[0])
            mark = watermarks(safe)["reserves"]
            assert mark < bad and (bad - mark) <= case.batch
            with psycopg.connect(safe) as conn:
                assert conn.execute("SELECT max(reserve_uuid) FROM exchange.reserves"
                                    ).fetchone()[0] == mark
            assert {t: d for t, d in after.items() if t != "reserves"} == \
                {t: d for t, d in before.items() if t != "reserves"}
        else:
            assert after == before and watermarks(safe) == marks
    elif isinstance(expect, Refused):
        assert out.returncode == expect.exit_code, log
        assert _digest(safe) == before
    elif isinstance(expect, Ignored):
        assert out.returncode == 0, log
        assert _digest(safe) == before, "an upstream UPDATE/DELETE reached the safe copy"
        report = cli("verify", "-s", src, "-d", dst, "--json")
        found = {f["kind"] for f in json.loads(report.stdout)["findings"]}
        assert set(expect.kinds) <= found, report.stdout + report.stderr
        assert report.returncode == 1
    elif isinstance(expect, Copied):
        assert out.returncode == 0, log
        after = _digest(safe)
        for table, rows in expect.rows.items():
            assert after[table][0] == before[table][0] + rows, table
        assert {t: d for t, d in after.items() if t not in expect.rows} == \
            {t: d for t, d in before.items() if t not in expect.rows}
        if "verbatim" in case.extra:
            with psycopg.connect(safe) as conn:
                assert conn.execute("SELECT count(*) FROM exchange.wire_targets "
                                    "WHERE payto_uri = %s", (case.extra["verbatim"],)
                                    ).fetchone()[0] == 1
    else:  # pragma: no cover - the catalogue only holds the four kinds
        raise AssertionError(expect)

    if not case.repair:
        return
    _run_sql(ingres, case.repair)
    resumed = cli("sync", "-s", src, "-d", dst, "-t", "-b", case.batch)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    clean = cli("verify", "-s", src, "-d", dst, "--json")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert json.loads(clean.stdout)["findings"] == []
    with psycopg.connect(safe) as conn, psycopg.connect(ingres) as upstream:
        for entry in registry.REPLICATED:
            q = f"SELECT max({entry.serial}) FROM {entry.qualified}"
            assert conn.execute(q).fetchone()[0] == upstream.execute(q).fetchone()[0], entry.name


def test_catalogue_has_at_least_25_distinct_cases():
    assert len({c.name for c in CASES}) >= 25
