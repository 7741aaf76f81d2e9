"""The databases a generator run writes into.

The exchange database is the model's (set up by taler-ops' dbinit) or one
built from Taler's own SQL files and never touched by taler-ops; either takes
the same rows.  The auditor database receives merchants' deposit
confirmations.  Also here: what a run's random stream and clock start from.
"""

import time
from collections.abc import Iterable, Mapping
from typing import Any

import psycopg

from ..db import connect
from ..errors import DatabaseNotReady, TalerOpsError, UsageError
from ..schema.bookkeeping import Setup
from ..schema.state import assert_exchange_current, exchange_flavour, read_setup
from .copywriter import CopyWriter, may_skip_fk_triggers
from .entities import DepositConfirmation
from .units import SECOND, UNIT

WHAT = "exchange database"


def use_exchange_search_path(conn: psycopg.Connection[Any]) -> None:
    # Taler's own triggers (reserve_history, coin_history, ...) name their tables
    # unqualified: Taler's clients run with search_path = exchange.
    conn.execute("SET search_path TO exchange, public")
    conn.commit()


def open_exchange(uri: str, *,
                  need_primary_for_gc: bool = False) -> tuple[psycopg.Connection[Any], bool]:
    """A connection to the exchange database that may take generated traffic, and
    whether its schema enforces foreign keys."""
    conn = connect(uri, WHAT)
    try:
        assert_exchange_current(conn)
        setup = read_setup(conn)
        if setup is None and exchange_flavour(conn) == "taler":
            # Built from Taler's own files and never touched by taler-ops: an exchange
            # primary as Taler made it; the catalog says whether it has its FKs (no -P).
            row = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE contype = 'f' "
                "AND conrelid = 'exchange.coin_deposits'::regclass)").fetchone()
            assert row is not None, "EXISTS returns one row"
            setup = Setup("primary", None, bool(row[0]))
        if setup is None:
            raise DatabaseNotReady(f"the {WHAT} has no taler-ops setup row: run exchange-dbinit")
    except BaseException:
        conn.close()
        raise
    role = setup[0]
    if role == "safe-copy":
        conn.close()
        raise TalerOpsError(
            "refusing to generate traffic into an auditor safe copy (taler_ops.database_setup "
            "role 'safe-copy'): only the exchange primary (or, for tests, an ingres copy) "
            "takes generated traffic")
    if need_primary_for_gc and role != "primary":
        conn.close()
        raise UsageError(f"--gc-every needs the exchange primary; this database is {role!r}")
    use_exchange_search_path(conn)
    return conn, bool(setup[2])


def resolve_fk_check(conn: psycopg.Connection[Any], has_fks: bool, fk_check: str) -> str:
    """The CopyWriter's fk_check ("triggers" or "set") for bulk()'s ``fk_check``."""
    if fk_check == "auto":
        # "set" switches off every trigger, and a schema built from Taler's files
        # has triggers of its own (reserve_history, coin_history, ...) that must run.
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
            " WHERE c.relnamespace = 'exchange'::regnamespace AND NOT t.tgisinternal)"
        ).fetchone()
        assert row is not None, "EXISTS returns one row"
        own_triggers = row[0]
        return ("set" if has_fks and not own_triggers and may_skip_fk_triggers(conn)
                else "triggers")
    if fk_check == "set" and not has_fks:
        return "triggers"       # nothing to switch off
    return fk_check


def write_confirmations(auditor_uri: str,
                        confirmations: Iterable[DepositConfirmation]) -> list[int]:
    """Merchants' deposit confirmations into Taler's auditor_deposit_confirmations
    (as auditor-httpd stores them); returns their row_ids."""
    cols = ("h_contract_terms", "h_policy", "h_wire", "exchange_timestamp", "refund_deadline",
            "wire_deadline", "total_without_fee", "coin_pubs", "coin_sigs", "merchant_pub",
            "exchange_sig", "exchange_pub", "master_sig")
    holders = ", ".join("ROW(%s, %s)::auditor.taler_amount" if c == "total_without_fee"
                        else "%s" for c in cols)
    query = (f"INSERT INTO auditor.auditor_deposit_confirmations ({', '.join(cols)}) "
             f"VALUES ({holders}) RETURNING row_id")
    out = []
    with connect(auditor_uri, "auditor database", autocommit=False) as aud:
        for confirmation in confirmations:
            dc: Mapping[str, Any] = confirmation      # looked up by column name
            params: list[Any] = []
            for c in cols:
                params.extend(divmod(dc[c], UNIT) if c == "total_without_fee" else (dc[c],))
            row = aud.execute(query, params).fetchone()
            assert row is not None, "INSERT ... RETURNING returns the row"
            out.append(row[0])
        aud.commit()
    return out


def wall_clock_us() -> int:
    """The wall clock, in whole seconds, as Taler's microseconds."""
    return int(time.time()) * SECOND


def seed_text(seed: int, writer: CopyWriter) -> str:
    """What a run's random stream is seeded with."""
    # Continuing a database gives new keys even with the same seed, and equal
    # databases with equal seeds give equal histories.
    base = ",".join(f"{t}={writer.next_serial[t]}" for t in sorted(writer.next_serial))
    # "gen" (the CLI's old name) stays: another label would change every generated history.
    return f"taler-ops-gen:{seed}:{base}"
