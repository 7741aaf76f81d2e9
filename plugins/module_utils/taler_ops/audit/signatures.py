"""The signatures check: every signature column of the replicated tables,
verified incrementally (docs/signatures.md, docs/audit.md).

For each column of ``crypto.catalog`` that the replicated data can check, the
rows above the column's progress point are read in the audit's snapshot in
batches, verified over every core (``crypto.batch``), and each invalid
signature (verdict False) becomes one row of Taler's ``auditor_bad_sig_losses``:
``problem_row_id`` the row's serial, ``operation`` what was signed (Taler's
operation names where a Taler helper checks the same signature),
``loss`` the amount at risk, ``operation_specific_pub`` the key that should
have signed.  Verdict None (the replicated data cannot decide, e.g. a deposit
with a policy) is no finding.

The check needs ``[exchange] MASTER_PUBLIC_KEY`` and ``CURRENCY`` (both are
signed into blocks) and, for purse merges and deposits, ``BASE_URL``: the audit
passes a ``crypto.context.SignatureContext`` (``check.signatures``); without
one the check is skipped (its progress does not move) and the CLI says why.
"""

from typing import TYPE_CHECKING

from .common import Check, Units
from ..crypto import batch, catalog
from ..crypto.signature_column import NONE, MissingConfiguration, SignatureColumn, row_from_db
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..crypto.context import SignatureContext

NAME = "signatures"
KIND = "bad_sig_loss"
FETCH = 5000                # rows read and verified per batch
# Verifying processes: None = every core (crypto.batch; batches below
# batch.MIN_PARALLEL rows stay in process), 1 = never start a pool.
WORKERS = None
ZERO_PUB = bytes(32)        # operation_specific_pub when the row names no usable key


def _amt(expr: str) -> str:
    return f"({expr}).val, ({expr}).frac"


_NO_LOSS = "NULL::int8, NULL::int4"

# column -> (operation, SQL giving (serial, loss val, loss frac, pub) for the rows
# whose serial is in %(serials)s; pub NULL means the master public key).
_LOSS = {
    "denominations.master_sig": (
        "denomination-key",
        f"SELECT d.denominations_serial, {_NO_LOSS}, NULL::bytea FROM {{s}}.denominations d"
        " WHERE d.denominations_serial = ANY(%(serials)s)"),
    "denomination_revocations.master_sig": (
        "denomination-revocation",
        f"SELECT dr.denom_revocations_serial_id, {_NO_LOSS}, NULL::bytea"
        " FROM {s}.denomination_revocations dr"
        " WHERE dr.denom_revocations_serial_id = ANY(%(serials)s)"),
    "exchange_sign_keys.master_sig": (
        "signkey",
        f"SELECT esk.esk_serial, {_NO_LOSS}, NULL::bytea FROM {{s}}.exchange_sign_keys esk"
        " WHERE esk.esk_serial = ANY(%(serials)s)"),
    "signkey_revocations.master_sig": (
        "signkey-revocation",
        f"SELECT sr.signkey_revocations_serial_id, {_NO_LOSS}, NULL::bytea"
        " FROM {s}.signkey_revocations sr WHERE sr.signkey_revocations_serial_id = ANY(%(serials)s)"),
    "auditor_denom_sigs.auditor_sig": (
        "auditor-denomination",
        f"SELECT ads.auditor_denom_serial, {_NO_LOSS}, a.auditor_pub FROM {{s}}.auditor_denom_sigs ads"
        " LEFT JOIN {s}.auditors a ON a.auditor_uuid = ads.auditor_uuid"
        " WHERE ads.auditor_denom_serial = ANY(%(serials)s)"),
    "wire_fee.master_sig": (
        "wire-fee",
        f"SELECT wf.wire_fee_serial, {_NO_LOSS}, NULL::bytea FROM {{s}}.wire_fee wf"
        " WHERE wf.wire_fee_serial = ANY(%(serials)s)"),
    "global_fee.master_sig": (
        "global-fee",
        f"SELECT gf.global_fee_serial, {_NO_LOSS}, NULL::bytea FROM {{s}}.global_fee gf"
        " WHERE gf.global_fee_serial = ANY(%(serials)s)"),
    "profit_drains.master_sig": (
        "profit-drain",
        f"SELECT pd.profit_drain_serial_id, {_amt('pd.amount')}, NULL::bytea"
        " FROM {s}.profit_drains pd WHERE pd.profit_drain_serial_id = ANY(%(serials)s)"),
    "known_coins.denom_sig": (
        "coin",
        f"SELECT kc.known_coin_id, {_amt('d.coin')}, kc.coin_pub FROM {{s}}.known_coins kc"
        " LEFT JOIN {s}.denominations d ON d.denominations_serial = kc.denominations_serial"
        " WHERE kc.known_coin_id = ANY(%(serials)s)"),
    "reserves_out.reserve_sig": (
        "withdraw",
        f"SELECT ro.reserve_out_serial_id, {_amt('ro.amount_with_fee')}, r.reserve_pub"
        " FROM {s}.reserves_out ro LEFT JOIN {s}.reserves r ON r.reserve_uuid = ro.reserve_uuid"
        " WHERE ro.reserve_out_serial_id = ANY(%(serials)s)"),
    "reserves_out.denom_sig": (
        "withdraw-denom-sig",
        f"SELECT ro.reserve_out_serial_id, {_amt('ro.amount_with_fee')}, r.reserve_pub"
        " FROM {s}.reserves_out ro LEFT JOIN {s}.reserves r ON r.reserve_uuid = ro.reserve_uuid"
        " WHERE ro.reserve_out_serial_id = ANY(%(serials)s)"),
    "batch_deposits.merchant_sig": (
        "batch-deposit",
        "SELECT bd.batch_deposit_serial_id, (SELECT sum((cd.amount_with_fee).val)"
        " + sum((cd.amount_with_fee).frac) / 100000000 FROM {s}.coin_deposits cd"
        " WHERE cd.batch_deposit_serial_id = bd.batch_deposit_serial_id)::int8,"
        " (SELECT mod(sum((cd.amount_with_fee).frac), 100000000) FROM {s}.coin_deposits cd"
        " WHERE cd.batch_deposit_serial_id = bd.batch_deposit_serial_id)::int4,"
        " bd.merchant_pub FROM {s}.batch_deposits bd"
        " WHERE bd.batch_deposit_serial_id = ANY(%(serials)s)"),
    "coin_deposits.coin_sig": (
        "deposit",
        f"SELECT cd.coin_deposit_serial_id, {_amt('cd.amount_with_fee')}, cd.coin_pub"
        " FROM {s}.coin_deposits cd WHERE cd.coin_deposit_serial_id = ANY(%(serials)s)"),
    "refunds.merchant_sig": (
        "refund",
        f"SELECT rf.refund_serial_id, {_amt('rf.amount_with_fee')}, rf.coin_pub"
        " FROM {s}.refunds rf WHERE rf.refund_serial_id = ANY(%(serials)s)"),
    "refresh_commitments.old_coin_sig": (
        "melt",
        f"SELECT rfc.melt_serial_id, {_amt('rfc.amount_with_fee')}, rfc.old_coin_pub"
        " FROM {s}.refresh_commitments rfc WHERE rfc.melt_serial_id = ANY(%(serials)s)"),
    "refresh_revealed_coins.link_sig": (
        "refresh-link",
        f"SELECT rrc.rrc_serial, {_amt('d.coin')}, rfc.old_coin_pub"
        " FROM {s}.refresh_revealed_coins rrc"
        " LEFT JOIN {s}.refresh_commitments rfc ON rfc.melt_serial_id = rrc.melt_serial_id"
        " LEFT JOIN {s}.denominations d ON d.denominations_serial = rrc.denominations_serial"
        " WHERE rrc.rrc_serial = ANY(%(serials)s)"),
    "refresh_revealed_coins.ev_sig": (
        "refresh-reveal",
        f"SELECT rrc.rrc_serial, {_amt('d.coin')}, rfc.old_coin_pub"
        " FROM {s}.refresh_revealed_coins rrc"
        " LEFT JOIN {s}.refresh_commitments rfc ON rfc.melt_serial_id = rrc.melt_serial_id"
        " LEFT JOIN {s}.denominations d ON d.denominations_serial = rrc.denominations_serial"
        " WHERE rrc.rrc_serial = ANY(%(serials)s)"),
    "recoup.coin_sig": (
        "recoup",
        f"SELECT rc.recoup_uuid, {_amt('rc.amount')}, rc.coin_pub FROM {{s}}.recoup rc"
        " WHERE rc.recoup_uuid = ANY(%(serials)s)"),
    "recoup_refresh.coin_sig": (
        "recoup-refresh",
        f"SELECT rr.recoup_refresh_uuid, {_amt('rr.amount')}, rr.coin_pub"
        " FROM {s}.recoup_refresh rr WHERE rr.recoup_refresh_uuid = ANY(%(serials)s)"),
    "reserves_open_requests.reserve_sig": (
        "reserve-open",
        f"SELECT orq.open_request_uuid, {_amt('orq.reserve_payment')}, orq.reserve_pub"
        " FROM {s}.reserves_open_requests orq WHERE orq.open_request_uuid = ANY(%(serials)s)"),
    "reserves_open_deposits.coin_sig": (
        "reserve-open-deposit",
        f"SELECT rod.reserve_open_deposit_uuid, {_amt('rod.contribution')}, rod.coin_pub"
        " FROM {s}.reserves_open_deposits rod"
        " WHERE rod.reserve_open_deposit_uuid = ANY(%(serials)s)"),
    "reserves_open_deposits.reserve_sig": (
        "reserve-open-deposit-request",
        f"SELECT rod.reserve_open_deposit_uuid, {_amt('rod.contribution')}, rod.reserve_pub"
        " FROM {s}.reserves_open_deposits rod"
        " WHERE rod.reserve_open_deposit_uuid = ANY(%(serials)s)"),
    "close_requests.reserve_sig": (
        "close-request",
        f"SELECT cr.close_request_serial_id, {_amt('cr.close')}, cr.reserve_pub"
        " FROM {s}.close_requests cr WHERE cr.close_request_serial_id = ANY(%(serials)s)"),
    "purse_requests.purse_sig": (
        "purse-request",
        f"SELECT pr.purse_requests_serial_id, {_amt('pr.amount_with_fee')}, pr.purse_pub"
        " FROM {s}.purse_requests pr WHERE pr.purse_requests_serial_id = ANY(%(serials)s)"),
    "purse_merges.merge_sig": (
        "merge-purse",
        f"SELECT pm.purse_merge_request_serial_id, {_amt('pr.amount_with_fee')}, pr.merge_pub"
        " FROM {s}.purse_merges pm LEFT JOIN {s}.purse_requests pr ON pr.purse_pub = pm.purse_pub"
        " WHERE pm.purse_merge_request_serial_id = ANY(%(serials)s)"),
    "purse_deposits.coin_sig": (
        "purse-deposit",
        f"SELECT pdp.purse_deposit_serial_id, {_amt('pdp.amount_with_fee')}, pdp.coin_pub"
        " FROM {s}.purse_deposits pdp WHERE pdp.purse_deposit_serial_id = ANY(%(serials)s)"),
    "account_merges.reserve_sig": (
        "account-merge",
        f"SELECT am.account_merge_request_serial_id, {_amt('pr.purse_fee')}, am.reserve_pub"
        " FROM {s}.account_merges am LEFT JOIN {s}.purse_requests pr ON pr.purse_pub = am.purse_pub"
        " WHERE am.account_merge_request_serial_id = ANY(%(serials)s)"),
}

# The columns checked, in catalog order; the unverifiable ones (verdict always
# None: history_requests, wad entries, partners) are not read at all.
COLUMNS = tuple(c for c in catalog.COLUMNS if c.kind != NONE)
OPERATIONS = {name: op for name, (op, _) in _LOSS.items()}


def progress_key(spec: SignatureColumn) -> str:
    """The column's progress point: the next serial to verify."""
    return f"signatures_{spec.table}_{spec.column}_serial_id"


PROGRESS_KEYS = tuple(progress_key(c) for c in COLUMNS)


def run(check: Check) -> None:
    ctx = check.signatures
    if ctx is None:
        # Without the master public key nothing can be verified: skipped, and
        # the progress points stay where they are (a later run with the key
        # verifies everything from there).  The CLI says so once at start
        # (cli.audit.signature_context), not on every run of the daemon.
        check.skipped = "[exchange] MASTER_PUBLIC_KEY not configured: signatures not verified"
        return
    check.load_progress(PROGRESS_KEYS)
    for spec in COLUMNS:
        try:
            _check_column(check, spec, ctx)
        except MissingConfiguration as exc:
            raise ConfigError(f"signatures check: {exc}") from None


def _check_column(check: Check, spec: SignatureColumn, ctx: "SignatureContext") -> None:
    key = progress_key(spec)
    upto = check.hi(spec.table)
    after = check.next_serial(key) - 1
    query = spec.query("exchange")
    while after < upto:
        cur = check.ex.execute(query, {"after": after, "limit": FETCH})
        assert cur.description is not None, "a SELECT describes its columns"
        names = [d.name for d in cur.description]
        rows = [row_from_db(names, values) for values in cur.fetchall()]
        rows = [r for r in rows if r["serial"] <= upto]
        if not rows:
            break
        verdicts = batch.verify_rows(spec.name, rows, ctx, workers=WORKERS)
        bad = [row["serial"] for row, verdict in zip(rows, verdicts) if verdict is False]
        if bad:
            _report(check, spec, ctx, bad)
        check.count(spec.table, len(rows))
        after = rows[-1]["serial"]
        check.processed(key, after)
        if len(rows) < FETCH:
            break


def _report(check: Check, spec: SignatureColumn, ctx: "SignatureContext",
            serials: list[int]) -> None:
    operation, sql = _LOSS[spec.name]
    found = {serial: (val, frac, pub) for serial, val, frac, pub in check.ex.execute(
        sql.format(s="exchange"), {"serials": serials})}
    for serial in serials:
        val, frac, pub = found.get(serial, (None, None, None))
        loss = 0 if val is None else int(val) * 100_000_000 + int(frac or 0)
        if pub is None and operation in _MASTER_SIGNED:
            pub = ctx.master_pub
        pub = bytes(pub) if pub is not None and len(bytes(pub)) == 32 else ZERO_PUB
        check.finding(KIND, problem_row_id=serial, operation=operation, loss=Units(loss),
                      operation_specific_pub=pub)


_MASTER_SIGNED = {"denomination-key", "denomination-revocation", "signkey",
                  "signkey-revocation", "wire-fee", "global-fee", "profit-drain"}
