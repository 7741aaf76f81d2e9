"""Set-based checks of docs/economics.md over an exchange database (test helper).

Independent of the generator's Python model: each rule is one SQL query that
returns the offending rows, so the tests can say which rule broke where.
"""

from taler_ops.schema import hashing, registry
from taler_ops.schema.exchange_schema import amount_units as _num


# Set-based (grouped) forms of the formulas in docs/economics.md, so they stay
# fast on partitioned schemas too.
BALANCES = f"""
WITH b AS (
    SELECT reserve_pub, sum(x) AS balance FROM (
        SELECT reserve_pub, {_num('credit')} AS x FROM exchange.reserves_in
        UNION ALL
        SELECT r.reserve_pub, {_num('rc.amount')} FROM exchange.recoup rc
          JOIN exchange.reserves_out ro USING (reserve_out_serial_id)
          JOIN exchange.reserves r ON r.reserve_uuid = ro.reserve_uuid
        UNION ALL
        SELECT am.reserve_pub, {_num('pr.amount_with_fee')} FROM exchange.account_merges am
          JOIN exchange.purse_requests pr USING (purse_pub)
        UNION ALL
        SELECT reserve_pub, {_num('amount_with_fee')} FROM exchange.wad_in_entries
        UNION ALL
        SELECT reserve_pub, {_num('contribution')} FROM exchange.reserves_open_deposits
        UNION ALL
        SELECT r.reserve_pub, -{_num('ro.amount_with_fee')} FROM exchange.reserves_out ro
          JOIN exchange.reserves r USING (reserve_uuid)
        UNION ALL
        SELECT reserve_pub, -({_num('amount')} + {_num('closing_fee')}) FROM exchange.reserves_close
        UNION ALL
        SELECT reserve_pub, -{_num('history_fee')} FROM exchange.history_requests
        UNION ALL
        SELECT reserve_pub, -{_num('reserve_payment')} FROM exchange.reserves_open_requests
    ) AS moves GROUP BY reserve_pub)
SELECT r.reserve_uuid, r.reserve_pub, r.expiration_date, {_num('r.current_balance')} AS stored,
       COALESCE(b.balance, 0) AS derived,
       EXISTS (SELECT 1 FROM exchange.reserves_close c WHERE c.reserve_pub = r.reserve_pub)
  FROM exchange.reserves r LEFT JOIN b USING (reserve_pub)
"""

COINS = f"""
WITH s AS (
    SELECT coin_pub, sum(x) AS spent FROM (
        SELECT coin_pub, {_num('amount_with_fee')} AS x FROM exchange.coin_deposits
        UNION ALL
        SELECT old_coin_pub, {_num('amount_with_fee')} FROM exchange.refresh_commitments
        UNION ALL
        SELECT coin_pub, {_num('amount')} FROM exchange.recoup
        UNION ALL
        SELECT coin_pub, {_num('amount')} FROM exchange.recoup_refresh
        UNION ALL
        SELECT coin_pub, {_num('amount_with_fee')} FROM exchange.purse_deposits
        UNION ALL
        SELECT coin_pub, -{_num('amount_with_fee')} FROM exchange.refunds
        UNION ALL
        SELECT kc.coin_pub, -{_num('rr.amount')} FROM exchange.recoup_refresh rr
          JOIN exchange.known_coins kc ON kc.known_coin_id = rr.known_coin_id
    ) AS spends GROUP BY coin_pub)
SELECT kc.known_coin_id, {_num('d.coin')} AS value, COALESCE(s.spent, 0) AS spent,
       {_num('kc.remaining')} AS remaining
  FROM exchange.known_coins kc
  JOIN exchange.denominations d USING (denominations_serial)
  LEFT JOIN s USING (coin_pub)
"""

WIRE_OUTS = f"""
WITH net AS (
    SELECT batch_deposit_serial_id, sum(x) AS net FROM (
        SELECT cd.batch_deposit_serial_id,
               {_num('cd.amount_with_fee')} - {_num('d.fee_deposit')} AS x
          FROM exchange.coin_deposits cd
          JOIN exchange.known_coins k USING (coin_pub)
          JOIN exchange.denominations d ON d.denominations_serial = k.denominations_serial
        UNION ALL
        SELECT batch_deposit_serial_id, -{_num('amount_with_fee')} FROM exchange.refunds
    ) AS parts GROUP BY batch_deposit_serial_id),
per_wtid AS (
    SELECT at.wtid_raw, sum(COALESCE(net.net, 0)) AS total
      FROM exchange.aggregation_tracking at LEFT JOIN net USING (batch_deposit_serial_id)
     GROUP BY at.wtid_raw)
SELECT wo.wireout_uuid FROM exchange.wire_out wo
  LEFT JOIN per_wtid USING (wtid_raw)
 WHERE {_num('wo.amount')} IS DISTINCT FROM COALESCE(per_wtid.total, 0) - (
       SELECT {_num('wf.wire_fee')} FROM exchange.wire_fee wf
        WHERE wf.wire_method = 'x-taler-bank' AND wf.start_date <= wo.execution_date
          AND wo.execution_date < wf.end_date)
"""

RULES = {
    "R1 derived balance negative": f"SELECT reserve_uuid FROM ({BALANCES}) x WHERE derived < 0",
    "R2 withdraw amount": f"""
        SELECT ro.reserve_out_serial_id FROM exchange.reserves_out ro
          JOIN exchange.denominations d USING (denominations_serial)
         WHERE {_num('ro.amount_with_fee')} <> {_num('d.coin')} + {_num('d.fee_withdraw')}""",
    "R3 expired, not closed": f"""
        SELECT reserve_uuid FROM ({BALANCES}) x
         WHERE expiration_date < %(now)s + %(margin)s AND derived > 0 AND NOT "exists" """,
    "R4 current_balance": f"SELECT reserve_uuid FROM ({BALANCES}) x WHERE stored <> derived",
    "C1 overspent": f"SELECT known_coin_id FROM ({COINS}) x WHERE spent > value",
    "C2 revoked spend": """
        SELECT kc.known_coin_id FROM exchange.known_coins kc
          JOIN exchange.denomination_revocations dr USING (denominations_serial)
         WHERE EXISTS (SELECT 1 FROM exchange.coin_deposits x WHERE x.coin_pub = kc.coin_pub)
            OR EXISTS (SELECT 1 FROM exchange.refresh_commitments x
                        WHERE x.old_coin_pub = kc.coin_pub)
            OR EXISTS (SELECT 1 FROM exchange.purse_deposits x WHERE x.coin_pub = kc.coin_pub)""",
    "C3 withdraw validity": """
        SELECT ro.reserve_out_serial_id FROM exchange.reserves_out ro
          JOIN exchange.denominations d USING (denominations_serial)
         WHERE NOT (d.valid_from <= ro.execution_date AND ro.execution_date < d.expire_withdraw)""",
    "C4 remaining": f"SELECT known_coin_id FROM ({COINS}) x WHERE remaining <> value - spent",
    "A1 wire_out amount": WIRE_OUTS,
    "A2 aggregation lag": """
        SELECT bd.batch_deposit_serial_id FROM exchange.batch_deposits bd
         WHERE bd.wire_deadline < %(now)s + %(margin)s
           AND NOT EXISTS (SELECT 1 FROM exchange.aggregation_tracking at
                            WHERE at.batch_deposit_serial_id = bd.batch_deposit_serial_id)""",
    "A3 done": """
        SELECT bd.batch_deposit_serial_id FROM exchange.batch_deposits bd
         WHERE bd.done <> EXISTS (
               SELECT 1 FROM exchange.aggregation_tracking at
                WHERE at.batch_deposit_serial_id = bd.batch_deposit_serial_id)""",
    "wire_out transfers": """
        SELECT at.aggregation_serial_id FROM exchange.aggregation_tracking at
         WHERE NOT EXISTS (SELECT 1 FROM exchange.wire_out wo WHERE wo.wtid_raw = at.wtid_raw)""",
}


def _hash_rules():
    out = {}
    for e in registry.REPLICATED:
        for d in e.derived:
            expr = hashing.derived_expression(d, "t")
            out[f"hash {e.name}.{d.column}"] = (
                f"SELECT t.{e.serial} FROM exchange.{e.name} t "
                f"WHERE t.{d.column} IS DISTINCT FROM {expr}")
    return out


def _fk_rules():
    """Every foreign key of the specs, checked whether or not the schema enforces it."""
    out = {}
    for e in registry.REPLICATED:
        for fk in e.parents:
            match = " AND ".join(f"p.{r} = c.{col}" for col, r in zip(fk.columns, fk.ref_columns))
            present = " AND ".join(f"c.{col} IS NOT NULL" for col in fk.columns)
            out[f"fk {e.name}({','.join(fk.columns)})"] = (
                f"SELECT c.{e.serial} FROM exchange.{e.name} c WHERE {present} AND NOT EXISTS "
                f"(SELECT 1 FROM exchange.{fk.table} p WHERE {match})")
    return out


# Everything the bulk history records happened before `now`.
_EVENT_TIMES = (("reserves_in", "execution_date"), ("reserves_out", "execution_date"),
                ("reserves_close", "execution_date"), ("batch_deposits", "exchange_timestamp"),
                ("wire_out", "execution_date"), ("recoup", "recoup_timestamp"),
                ("recoup_refresh", "recoup_timestamp"), ("history_requests", "request_timestamp"),
                ("close_requests", "close_timestamp"), ("purse_requests", "purse_creation"),
                ("purse_merges", "merge_timestamp"), ("wads_in", "arrival_time"),
                ("wads_out", "execution_time"), ("reserves_open_requests", "request_timestamp"))


def _time_rules():
    return {f"future {table}.{col}":
            f"SELECT t.{registry.entry(table).serial} FROM exchange.{table} t "
            f"WHERE t.{col} >= %(now)s" for table, col in _EVENT_TIMES}


RULES.update(_hash_rules())
RULES.update(_fk_rules())


def violations(conn, now_us, margin_us=0, bulk=True):
    """{rule: [offending serials]} for every rule that is broken.

    ``bulk``: also require every event to lie before ``now_us`` (a live run's
    far wire deadlines and GC make no such claim about its own clock).
    """
    out = {}
    rules = dict(RULES, **_time_rules()) if bulk else RULES
    for name, query in rules.items():
        rows = conn.execute(query, {"now": now_us, "margin": margin_us}).fetchall()
        if rows:
            out[name] = sorted(r[0] for r in rows)
    return out
