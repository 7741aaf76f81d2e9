"""An auditor database filled as Taler's helpers or taler-ops' audit fill it, for the report
tests (tests/test_report*.py) and the sample report (docs/report_sample.py): one or more rows
in every report table (some suppressed), balances, progress points, denomination revenue, a
run history, and a safe copy's sync state."""

import datetime

import psycopg

from taler_build import build_taler_auditor

CUR = "KUDOS"
TS = 1_767_225_600_000_000      # 2026-01-01 00:00:00Z in µs


def k(n, size=32):
    return bytes([n]) * size


def amt(text):
    """'1.25' -> SQL literal of auditor.taler_amount."""
    val, _, frac = text.partition(".")
    return f"ROW({int(val)}, {int((frac + '0' * 8)[:8])})::auditor.taler_amount"


def b32(data):
    """Crockford base32 as GNUnet writes it, from the standard library's RFC 4648 base32."""
    import base64
    rfc = base64.b32encode(data).decode().rstrip("=")
    return rfc.translate(str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567",
                                       "0123456789ABCDEFGHJKMNPQRSTVWXYZ"))


def auditor_db(cluster, name, sql_root):
    return build_taler_auditor(cluster.createdb(name), sql_root=sql_root)


# Every report table: (columns, [(suppressed, values...)]).  Values are SQL literals.
FINDINGS = {
    "auditor_bad_sig_losses": (
        "problem_row_id, operation, loss, operation_specific_pub",
        [(False, "10, 'melt', {}, %s".format(amt("1.5")), k(1)),
         (False, "11, 'deposit', {}, %s".format(amt("0.25")), k(2)),
         (True, "12, 'withdraw', {}, %s".format(amt("100")), k(3))]),
    "auditor_amount_arithmetic_inconsistency": (
        "problem_row_id, operation, exchange_amount, auditor_amount, profitable",
        [(False, f"20, 'deposit fee', {amt('2')}, {amt('1.5')}, FALSE"),
         (False, f"21, 'melt fee', {amt('3')}, {amt('1')}, TRUE"),
         (True, f"22, 'refund fee', {amt('5')}, {amt('1')}, FALSE")]),
    "auditor_coin_inconsistency": (
        "operation, exchange_amount, auditor_amount, coin_pub, profitable",
        [(False, f"'spend', {amt('4')}, {amt('1')}, %s, FALSE", k(4)),
         (True, f"'spend', {amt('9')}, {amt('1')}, %s, FALSE", k(5))]),
    "auditor_emergency": (
        "denompub_h, denom_risk, denom_loss, deposit_start, deposit_end, value",
        [(False, f"%s, {amt('10')}, {amt('2')}, {TS}, {TS + 1}, {amt('1')}", k(6, 64))]),
    "auditor_emergency_by_count": (
        "denompub_h, num_issued, num_known, risk, start, deposit_end, value",
        [(False, f"%s, 5, 7, {amt('4')}, {TS}, {TS + 1}, {amt('2')}", k(7, 64))]),
    "auditor_refreshes_hanging": (
        "problem_row_id, amount", [(False, f"30, {amt('0.5')}")]),
    "auditor_denominations_without_sigs": (
        "denompub_h, value, start_time, end_time",
        [(False, f"%s, {amt('1')}, {TS}, NULL", k(8, 64))]),
    "auditor_denomination_key_validity_withdraw_inconsistency": (
        "problem_row_id, execution_date, reserve_pub, denompub_h",
        [(False, f"40, {TS}, %s, %s", k(9), k(10, 64))]),
    "auditor_reserve_balance_insufficient_inconsistency": (
        "reserve_pub, inconsistency_gain, inconsistency_amount",
        [(False, f"%s, FALSE, {amt('0.3')}", k(11)), (False, f"%s, TRUE, {amt('0.2')}", k(12))]),
    "auditor_reserve_balance_summary_wrong_inconsistency": (
        "reserve_pub, exchange_amount, auditor_amount",
        [(False, f"%s, {amt('5')}, {amt('4')}", k(13))]),
    "auditor_reserve_not_closed_inconsistency": (
        "reserve_pub, balance, expiration_time, diagnostic",
        [(False, f"%s, {amt('7')}, {TS}, 'not closed'", k(14)),
         (False, f"%s, {amt('3')}, NULL, NULL", k(15))]),
    "auditor_purse_not_closed_inconsistencies": (
        "purse_pub, amount, expiration_date", [(False, f"%s, {amt('2')}, {TS}", k(16))]),
    "auditor_wire_out_inconsistency": (
        "destination_account, diagnostic, wire_out_serial_id, expected, claimed",
        [(False, f"'payto://iban/DE1', 'wrong amount', 50, {amt('10')}, {amt('12')}")]),
    "auditor_closure_lags": (
        "problem_row_id, amount, deadline, wtid, account",
        [(False, f"60, {amt('3')}, {TS}, %s, 'payto://iban/DE2'", k(17))]),
    "auditor_reserve_in_inconsistency": (
        "bank_row_id, amount_exchange_expected, amount_wired, reserve_pub, timestamp, account, "
        "diagnostic",
        [(False, f"70, {amt('5')}, {amt('4')}, %s, {TS}, 'acct', 'short'", k(18))]),
    "auditor_misattribution_in_inconsistency": (
        "amount, bank_row, reserve_pub", [(False, f"{amt('1')}, 80, %s", k(19))]),
    "auditor_wire_format_inconsistency": (
        "amount, wire_offset, diagnostic", [(False, f"{amt('1.5')}, 90, 'bad subject'")]),
    "auditor_fee_time_inconsistency": (
        "problem_row_id, fee_type, fee_time, diagnostic",
        [(False, f"100, 'wire', {TS}, 'no fee'")]),
    # 30 open rows: more than one page (25) in the HTML.
    "auditor_row_inconsistency": (
        "row_table, diagnostic, problem_row_id",
        [(False, f"'reserves_in', 'bad row {i}', {110 + i}") for i in range(30)]
        + [(True, "'wire_out', 'looked into', 199")]),
    "auditor_row_minor_inconsistencies": (
        "row_table, problem_row, diagnostic", [(False, "'wire', 120, 'minor'")]),
    "auditor_pending_deposits": (
        "total_amount, wire_target_h_payto, batch_deposit_serial_id, deadline",
        [(False, f"{amt('8')}, %s, 130, {TS}", k(20))]),
    "auditor_deposit_confirmations": (
        "h_contract_terms, h_policy, h_wire, exchange_timestamp, refund_deadline, wire_deadline, "
        "total_without_fee, coin_pubs, coin_sigs, merchant_pub, exchange_sig, exchange_pub, "
        "master_sig",
        [(False, f"%s, %s, %s, {TS}, {TS}, {TS}, {amt('6')}, ARRAY[%s], ARRAY[%s], %s, %s, %s, %s",
          k(21, 64), k(22, 64), k(23, 64), k(24), k(25, 64), k(26), k(27, 64), k(28), k(29, 64))]),
}

# What the report must compute from FINDINGS (open rows only).
MEASURES = {
    "auditor_bad_sig_losses.loss": "KUDOS:1.75",
    "auditor_amount_arithmetic_inconsistency.loss": "KUDOS:0.5",
    "auditor_amount_arithmetic_inconsistency.gain": "KUDOS:2",
    "auditor_coin_inconsistency.loss": "KUDOS:3",
    "auditor_coin_inconsistency.gain": "KUDOS:0",
    "auditor_emergency.loss": "KUDOS:2",
    "auditor_emergency.risk": "KUDOS:10",
    "auditor_emergency_by_count.risk": "KUDOS:4",
    "auditor_refreshes_hanging.risk": "KUDOS:0.5",
    "auditor_reserve_balance_insufficient_inconsistency.loss": "KUDOS:0.3",
    "auditor_reserve_balance_insufficient_inconsistency.gain": "KUDOS:0.2",
    "auditor_reserve_balance_summary_wrong_inconsistency.delta": "KUDOS:1",
    "auditor_reserve_not_closed_inconsistency.balance": "KUDOS:10",
    "auditor_purse_not_closed_inconsistencies.amount": "KUDOS:2",
    "auditor_wire_out_inconsistency.delta": "KUDOS:2",
    "auditor_closure_lags.amount": "KUDOS:3",
    "auditor_reserve_in_inconsistency.delta": "KUDOS:1",
    "auditor_misattribution_in_inconsistency.amount": "KUDOS:1",
    "auditor_wire_format_inconsistency.amount": "KUDOS:1.5",
    "auditor_pending_deposits.amount": "KUDOS:8",
    "auditor_deposit_confirmations.amount": "KUDOS:6",
}
# losses 1.75 + 0.5 + 3 + 2 + 0.3; risk 10 + 4 + 0.5 + outstanding denominations 20 + 5;
# at issue 2 + 0.2 + 1 + 10 + 2 + 2 + 3 + 1 + 1 + 1.5 + 8 + 6.
SUMMARY = {"open findings": 55, "suppressed findings": 4,
           "report tables with open findings": 22, "losses found": "KUDOS:7.55",
           "at risk": "KUDOS:39.5", "amounts at issue": "KUDOS:37.7",
           "losses in the auditor's balances": "KUDOS:0.1",
           "risk in the auditor's balances": "KUDOS:50",
           "fee revenue": "KUDOS:2.5"}
BALANCES = {"coins_deposit_fee_revenue": "1.2", "reserves_withdraw_fee_revenue": "0.8",
            "aggregation_total_wire_fee_revenue": "0.5", "coins_irregular_loss": "0.1",
            "coin_balance_risk": "50", "total_escrowed": "100"}
PROGRESS = {"coins_withdraw_serial_id": 101, "reserves_reserve_in_serial_id": 51,
            "aggregation_last_wire_out_serial_id": 0, "purse_open_counter": 3}


def fill(uri, after_table=None):
    """Rows in every report table (some suppressed), balances, progress, revenue."""
    ids = {}
    with psycopg.connect(uri, autocommit=True) as conn:
        for table, (columns, rows) in FINDINGS.items():
            ids[table] = {False: [], True: []}
            for suppressed, values, *params in rows:
                row_id = conn.execute(
                    f"INSERT INTO auditor.{table} ({columns}, suppressed) VALUES "
                    f"({values}, %s) RETURNING row_id", (*params, suppressed)).fetchone()[0]
                ids[table][suppressed].append(row_id)
            if after_table:
                after_table()
        for key, value in BALANCES.items():
            conn.execute(f"INSERT INTO auditor.auditor_balances (balance_key, balance_value) "
                         f"VALUES (%s, {amt(value)})", (key,))
        conn.execute("INSERT INTO auditor.auditor_balances (balance_key) VALUES "
                     "('purse_global_balance')")
        for key, value in PROGRESS.items():
            conn.execute("INSERT INTO auditor.auditor_progress VALUES (%s, %s)", (key, value))
        for n, rev, loss in ((40, "3", "0"), (41, "1.5", "0.1")):
            conn.execute("INSERT INTO auditor.auditor_historic_denomination_revenue "
                         "(denom_pub_hash, revenue_timestamp, revenue_balance, loss_balance) "
                         f"VALUES (%s, {TS}, {amt(rev)}, {amt(loss)})", (k(n, 64),))
        for n, bal, issued in ((42, "20", 12), (43, "5", 3)):
            conn.execute("INSERT INTO auditor.auditor_denomination_pending (denom_pub_hash, "
                         "denom_balance, denom_loss, num_issued, denom_risk, recoup_loss) VALUES "
                         f"(%s, {amt(bal)}, {amt('0')}, %s, {amt(bal)}, {amt('0')})",
                         (k(n, 64), issued))
        for n in (50, 51):
            conn.execute("INSERT INTO auditor.auditor_reserves (reserve_pub, reserve_balance, "
                         "reserve_loss, withdraw_fee_balance, close_fee_balance, "
                         "purse_fee_balance, open_fee_balance, history_fee_balance, "
                         f"expiration_date) VALUES (%s, {amt('4.5')}, {amt('0')}, {amt('0.1')}, "
                         f"{amt('0')}, {amt('0')}, {amt('0')}, {amt('0')}, {TS})", (k(n),))
    return ids


def fill_with_history(uri):
    """fill(), with a run history as taler-ops' audit keeps it: taler_ops.audit_runs
    (created as auditor-dbinit adds it beside Taler's schema) gets a point before any
    finding, one after each report table's rows and one after the balances, each
    recorded by the audit's own code (run_history.record).  The points are then dated
    six hours apart from 2026-01-01 and given a sync staleness, since no audit or sync
    ran: the counts and totals are the recorded ones."""
    from taler_ops.audit import history as run_history
    from taler_ops.schema import auditor_schema
    with psycopg.connect(uri) as conn:
        for stmt in auditor_schema.TALER_OPS_DDL:
            conn.execute(stmt)
        conn.commit()

        def record():
            run_history.record(conn, datetime.datetime.now(datetime.timezone.utc), 0)
            conn.commit()
        record()
        ids = fill(uri, after_table=record)
        record()
        conn.execute(
            "UPDATE taler_ops.audit_runs r SET started_tsz = t.started, "
            "ended_tsz = t.started + interval '90 seconds', "
            "sync_last_copy_tsz = t.started + interval '90 seconds' "
            "- make_interval(secs => 20 + (t.n * 37) % 240) "
            "FROM (SELECT run_id, row_number() OVER (ORDER BY run_id) AS n, "
            "'2026-01-01 00:00:00Z'::timestamptz + (row_number() OVER (ORDER BY run_id) - 1) "
            "* interval '6 hours' AS started FROM taler_ops.audit_runs) t "
            "WHERE r.run_id = t.run_id")
        conn.commit()
    return ids


def safe_copy_with_sync_state(cluster, name):
    """A database with taler_ops' sync bookkeeping: watermarks, an open hole, a halt."""
    from taler_ops.schema import bookkeeping
    uri = cluster.createdb(name)
    with psycopg.connect(uri, autocommit=True) as conn:
        with conn.transaction():
            bookkeeping.create(conn, "safe-copy", None, True)
        conn.execute("INSERT INTO taler_ops.sync_watermarks (table_name, last_serial, rows_copied, "
                     "complete_serial, updated_tsz) VALUES ('reserves_out', 140, 140, 120, "
                     "'2026-01-02 03:04:05+00'), ('reserves_in', 50, 50, 50, "
                     "'2026-01-02 03:00:00+00')")
        conn.execute("INSERT INTO taler_ops.sync_holes (table_name, lo, hi, seen_tsz) VALUES "
                     "('reserves_out', 120, 124, '2026-01-02 03:04:00+00')")
        conn.execute("INSERT INTO taler_ops.sync_holes (table_name, lo, hi, expired_tsz) VALUES "
                     "('reserves_in', 10, 12, now())")
        conn.execute("INSERT INTO taler_ops.sync_halts (table_name, serial, rule, message, "
                     "halted_tsz) VALUES ('coin_deposits', 77, 'late-row', 'row 77 arrived "
                     "below the watermark', '2026-01-02 03:05:00+00')")
        conn.execute("INSERT INTO taler_ops.sync_halts (table_name, serial, rule, message, "
                     "cleared_tsz) VALUES ('wire_out', 5, 'immutable', 'old', now())")
    return uri
