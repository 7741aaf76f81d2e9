"""A Taler release newer than taler-ops' registry: what the sync copies, what it refuses.

The "next release" (taler_build.next_release: v0.14 plus exchange-0008, which adds the
nullable column reserves_in.origin_note and the table wire_notes) is applied by
exchange-dbinit with the new SQL_DIR to an ingres copy and a safe copy built from v0.14.
The registry is the trusted definition of what is copied: the new column is not
copied (it stays at its default on the safe copy), the new table neither; dbinit,
the sync and verify say so.  A new column the safe copy cannot default (NOT NULL
without a default) makes the sync refuse rather than invent a value.
"""

import json

import psycopg
import pytest

from taler_build import build_taler_exchange, next_release, require_taler_sql
from taler_ops.schema import dbinit
from taler_ops.sim import generator


@pytest.fixture
def taler_pair(cluster, tmp_path, request):
    """(ingres, safe copy, next release's root), both copies built from v0.14."""
    root = require_taler_sql()
    tag = request.node.name[5:20]
    ingres = build_taler_exchange(cluster.createdb(f"rel_ingres_{tag}"), sql_root=root)
    safe = build_taler_exchange(cluster.createdb(f"rel_safe_{tag}"), sql_root=root)
    dbinit.exchange_dbinit(ingres, role="ingres")
    dbinit.exchange_dbinit(safe, role="safe-copy")
    return ingres, safe, next_release(root, tmp_path / "next")


def _sync_and_verify(conf, cli, ingres, safe):
    src = conf("i.conf", {"exchangedb-postgres": {"CONFIG": ingres}})
    dst = conf("s.conf", {"exchangedb-postgres": {"CONFIG": safe}})
    synced = cli("sync", "-s", src, "-d", dst, "-t", "--json")
    verified = cli("verify", "-s", src, "-d", dst, "--json")
    return synced, verified


def _scalar(uri, query):
    with psycopg.connect(uri) as conn:
        return conn.execute(query).fetchone()[0]


def test_next_release_copies_known_columns_and_names_the_rest(taler_pair, conf, cli):
    ingres, safe, nxt = taler_pair
    generator.bulk(ingres, 600, seed=3)
    synced, verified = _sync_and_verify(conf, cli, ingres, safe)
    assert synced.returncode == 0, synced.stderr
    assert json.loads(verified.stdout)["not_copied"] == []

    for uri, role in ((ingres, "ingres"), (safe, "safe-copy")):
        result = dbinit.exchange_dbinit(uri, role=role, sql_dir=str(nxt / "exchange"))
        assert result["applied"] == ["exchange-0008"]
        # The release's additions this taler-ops does not copy, named by dbinit itself.
        assert result["not_copied"] == {"tables": ["wire_notes"],
                                        "columns": ["reserves_in.origin_note"]}
        assert dbinit.exchange_dbinit(uri, role=role, sql_dir=str(nxt / "exchange"),
                                      check=True)["pending"] == []
    before = _scalar(safe, "SELECT count(*) FROM exchange.reserves_in")

    # The exchange of the next release writes the new column; the ingres copy has it.
    generator.bulk(ingres, 600, seed=4)
    with psycopg.connect(ingres) as conn:
        conn.execute("UPDATE exchange.reserves_in SET origin_note = 'from the next release'")
    synced, verified = _sync_and_verify(conf, cli, ingres, safe)
    assert synced.returncode == 0, synced.stderr
    sync_result = json.loads(synced.stdout)
    assert sync_result["copied"] > 0
    assert any("origin_note" in w and "not copied" in w for w in sync_result["warnings"])
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)
    assert report["clean"] and report["not_copied"] == ["reserves_in.origin_note"]
    assert _scalar(safe, "SELECT count(*) FROM exchange.reserves_in") > before
    assert _scalar(safe, "SELECT count(*) FROM exchange.reserves_in WHERE origin_note IS NOT NULL") == 0
    assert _scalar(ingres, "SELECT count(*) FROM exchange.reserves_in") == \
        _scalar(safe, "SELECT count(*) FROM exchange.reserves_in")
    # The new table exists on both copies; nothing copies into it.
    assert _scalar(safe, "SELECT count(*) FROM exchange.wire_notes") == 0

    text = cli("verify", "-s", conf("i.conf", {"exchangedb-postgres": {"CONFIG": ingres}}),
               "-d", conf("s.conf", {"exchangedb-postgres": {"CONFIG": safe}}))
    assert "not copied (columns unknown to this taler-ops" in text.stdout
    assert "reserves_in.origin_note" in text.stdout


def test_a_new_column_the_safe_copy_cannot_default_stops_the_sync(taler_pair, conf, cli):
    ingres, safe, _ = taler_pair
    generator.bulk(ingres, 300, seed=5)
    synced, _ = _sync_and_verify(conf, cli, ingres, safe)
    assert synced.returncode == 0, synced.stderr
    for uri in (ingres, safe):
        with psycopg.connect(uri) as conn:
            conn.execute("ALTER TABLE exchange.reserves_in ADD COLUMN required_note TEXT "
                         "NOT NULL DEFAULT 'old'")
    # The exchange side fills it (here by its default); the safe copy has none to use.
    with psycopg.connect(safe) as conn:
        conn.execute("ALTER TABLE exchange.reserves_in ALTER COLUMN required_note DROP DEFAULT")
    generator.bulk(ingres, 300, seed=6)
    rows = _scalar(safe, "SELECT count(*) FROM exchange.reserves_in")
    synced, _ = _sync_and_verify(conf, cli, ingres, safe)
    assert synced.returncode != 0
    assert "required_note is NOT NULL without a default" in synced.stderr
    assert _scalar(safe, "SELECT count(*) FROM exchange.reserves_in") == rows
