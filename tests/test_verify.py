"""taler-ops verify: finds rows changed, deleted or slipped in upstream after copying."""

import json

import pytest

from taler_ops import sync
from taler_ops.sync import verify

import sync_data
from conftest import FLAVOURS, flavour_param
from sync_helpers import clone, conf_pair, execute, make_template

ROWS = 30


@pytest.fixture(scope="module", params=[flavour_param(f) for f in FLAVOURS])
def templates(cluster, request):
    """A synced pair of one flavour: the built-in model, or built by Taler's SQL."""
    flavour = request.param
    names = f"verify_tpl_src_{flavour}", f"verify_tpl_dst_{flavour}"
    src = make_template(cluster, names[0], "ingres", rows=ROWS, flavour=flavour)
    dst = make_template(cluster, names[1], "safe-copy", flavour=flavour)
    sync.sync_once(src, dst)
    return names


@pytest.fixture
def pair(cluster, templates):
    return clone(cluster, templates[0], "ver_src"), clone(cluster, templates[1], "ver_dst")


def test_clean_copy_verifies_clean(pair, conf, cli):
    src, dst = pair
    report = verify.verify(src, dst, block_size=7)
    assert report["clean"] and report["findings"] == []
    assert report["tables"]["reserves"]["rows_checked"] == ROWS
    assert report["tables"]["reserves"]["blocks"] == 5
    s_conf, d_conf = conf_pair(conf, src, dst)
    proc = cli("verify", "-s", s_conf, "-d", d_conf)
    assert proc.returncode == 0, proc.stderr
    assert "no findings" in proc.stdout


def test_finds_updates_deletions_and_rows_slipped_in_below_the_watermark(pair, conf, cli):
    src, dst = pair
    before = execute(dst, "SELECT md5(string_agg(t::text, '')) FROM exchange.reserves_in t")
    execute(src,
            # An UPDATE of a copied (immutable) column ...
            "UPDATE exchange.reserves_in SET credit = ROW(999, 0) WHERE reserve_in_serial_id = 7",
            # ... and of a mutable one, which is not a finding.
            "UPDATE exchange.reserves SET current_balance = ROW(5, 0) WHERE reserve_uuid = 3",
            # A DELETE that no GC rule explains (wire_out is never collected) ...
            "DELETE FROM exchange.wire_out WHERE wireout_uuid = 12",
            # ... and one that Taler's GC explains (denomination past expire_legal).
            "DELETE FROM exchange.denominations WHERE denominations_serial = 2",
            # A row inserted "into the past": a serial the safe copy passed already.
            "DELETE FROM exchange.extensions WHERE extension_id = 5")
    execute(dst, "DELETE FROM exchange.extensions WHERE extension_id = 5")
    sync_data.populate(src, 1, start=5, tables={"extensions"})

    report = verify.verify(src, dst, block_size=8)
    kinds = {(f["table"], f["serial"]): f["kind"] for f in report["findings"]}
    assert kinds == {("reserves_in", 7): "changed",
                     ("wire_out", 12): "deleted-suspicious",
                     ("denominations", 2): "deleted-gc",
                     ("extensions", 5): "missing-on-safe-copy"}
    changed = [f for f in report["findings"] if f["kind"] == "changed"][0]
    assert changed["columns"] == ["credit"]
    assert not report["clean"]
    # Read-only: the safe copy is untouched.
    assert execute(dst, "SELECT md5(string_agg(t::text, '')) FROM exchange.reserves_in t") == before

    s_conf, d_conf = conf_pair(conf, src, dst)
    proc = cli("verify", "-s", s_conf, "-d", d_conf, "--json")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["summary"] == {
        "changed": 1, "deleted-gc": 1, "deleted-suspicious": 1, "missing-on-safe-copy": 1}


def test_gc_deletions_alone_are_clean(pair):
    src, dst = pair
    # Reserve 4's gc_date lies in the past: GC removes it and, by cascade, its history.
    execute(src, "DELETE FROM exchange.reserves_in WHERE reserve_pub = "
                 "(SELECT reserve_pub FROM exchange.reserves WHERE reserve_uuid = 4)",
            "DELETE FROM exchange.reserves WHERE reserve_uuid = 4")
    report = verify.verify(src, dst)
    assert report["summary"] == {"deleted-gc": 2}
    assert report["clean"]


def test_the_findings_cap_hides_no_suspicious_row(pair, conf, cli):
    """Past ``max_findings`` the list is cut, the summary and the verdict are not: GC
    deletions early in the walk (an exchange primary as source, after its GC) must not
    hide a suspicious deletion later on (found by the soak, issue 20)."""
    src, dst = pair
    execute(src, "DELETE FROM exchange.denominations WHERE denominations_serial = 2",
            "DELETE FROM exchange.wire_out WHERE wireout_uuid = 12")
    report = verify.verify(src, dst, max_findings=1)
    assert report["truncated"] and len(report["findings"]) == 1
    assert report["summary"] == {"deleted-gc": 1, "deleted-suspicious": 1}
    assert not report["clean"]


def test_gc_on_the_safe_copy_is_told_apart_from_rows_never_copied(pair):
    src, dst = pair
    # The safe copy's own GC removed reserve 5 (gc_date in the past) and, by cascade,
    # its history; the sync's rows_copied shows that rows were deleted there.
    execute(dst, "DELETE FROM exchange.reserves WHERE reserve_uuid = 5")
    report = verify.verify(src, dst)
    kinds = {f["kind"] for f in report["findings"]}
    assert kinds == {"gc-on-safe-copy"}
    assert ("reserves", 5) in {(f["table"], f["serial"]) for f in report["findings"]}
    assert len(report["findings"]) > 1  # the cascade
    assert report["clean"]


def test_taler_updates_of_first_seen_columns_are_not_findings(pair):
    """The exchange's own UPDATEs (taler-real-schema §2.4) are normal activity, not tampering:
    mutable columns are not copied, first-seen ones are copied but never compared."""
    src, dst = pair
    execute(src,
            # GREATEST(...) of later activity on a reserve (first seen on the copy).
            "UPDATE exchange.reserves SET expiration_date = expiration_date + 1000, "
            "gc_date = gc_date + 1000 WHERE reserve_uuid = 3",
            # pg_update_auditor.
            "UPDATE exchange.auditors SET is_active = NOT is_active, last_change = 1, "
            "auditor_url = 'https://moved.example/' WHERE auditor_uuid = 2",
            # The legitimization upsert and failure paths.
            "UPDATE exchange.legitimization_processes SET provider_user_id = 'u', "
            "error_code = 42, error_message = 'failed', finished = TRUE "
            "WHERE legitimization_process_serial_id = 4",
            "UPDATE exchange.legitimization_measures SET display_priority = 99, "
            "is_finished = TRUE WHERE legitimization_measure_serial_id = 5",
            "UPDATE exchange.wire_targets SET target_pub = NULL, "
            "aml_program_lock_timeout = 1 WHERE wire_target_serial_id = 6",
            "UPDATE exchange.policy_details SET fulfillment_state = 5, "
            "accumulated_total = ROW(1, 0) WHERE policy_details_serial_id = 7",
            # Written once and needed by the audit: a change IS a finding.
            "UPDATE exchange.known_coins SET age_commitment_hash = NULL WHERE known_coin_id = 8",
            "UPDATE exchange.reserves_close SET close_request_row = 4242 WHERE close_uuid = 9")
    report = verify.verify(src, dst, block_size=8)
    found = {(f["table"], f["serial"]): f.get("columns") for f in report["findings"]}
    assert found == {("known_coins", 8): ["age_commitment_hash"],
                     ("reserves_close", 9): ["close_request_row"]}
