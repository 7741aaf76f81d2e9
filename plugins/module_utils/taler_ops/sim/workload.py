"""Exchange traffic: a bulk history (``bulk``) and live business (``live``).

No real Taler exchange runs here, so this is the exchange's stand-in: the
demo, the sync's and the audit's tests and every benchmark fill exchange
databases with it.  The business rules live in sim/exchange_model.py, planted
misbehaviour in sim/inject.py; this module drives them.

bulk: wallets' lives spread over the 120 days before ``now`` (withdrawals and
deposits dominate, every replicated table gets rows), written with binary
COPY in chunks of one transaction each.  Deterministic for (seed, now_us, the
database's existing serials), so two fresh databases get identical contents.

live: the exchange at work at R rows/s in small transactions: new reserves,
withdrawals, deposits, refreshes, refunds and aggregation, updating
current_balance, remaining and done as the exchange does, with optional GC.
"""

import sys
import time

from ..schema import gc
from .copywriter import CopyWriter, may_skip_fk_triggers
from ..crypto.keyring import Keyring
from ..db import connect
from ..schema.state import assert_exchange_current, exchange_flavour, read_setup
from ..errors import TalerOpsError, UsageError
from .exchange_model import (CENT, COLUMNS, DAY, HISTORY_SPAN, HOUR, IDLE_RESERVE_EXPIRATION,
                             LEGAL_RESERVE_EXPIRATION, MARGIN, MINUTE, SECOND, UNIT, WEEK, YEAR,
                             Denomination, Exchange, Rand)
from .inject import AT_AGGREGATION, AT_END, Injector, parse_kinds, write_record

WHAT = "exchange database"
CHUNK_ROWS = 25_000
MIN_LIFECYCLE_END = 4 * DAY        # wallets start at least this long before now

# Rare business that every history must show at least once, planted in the
# first wallets' lives (which lie before the mid-window revocation).
FORCED = ("recoup", "recoup_refresh", "close_request", "history", "open", "p2p_local",
          "p2p_remote", "purse_expired", "wad_in", "refund", "policy", "policy_blocked",
          "melt", "kyc_customer")
PROBABILITY = {
    "recoup": 0.03, "recoup_refresh": 0.02, "close_request": 0.02, "history": 0.02,
    "open": 0.01, "p2p_local": 0.03, "p2p_remote": 0.01, "purse_expired": 0.005,
    "wad_in": 0.005, "refund": 0.04, "policy": 0.01, "policy_blocked": 0.003, "melt": 0.15,
    "kyc_customer": 0.03,
}


def _open(uri, *, need_primary_for_gc=False):
    conn = connect(uri, WHAT)
    try:
        assert_exchange_current(conn)
        setup = read_setup(conn)
        if setup is None and exchange_flavour(conn) == "taler":
            # Built from Taler's own files and never touched by taler-ops: an exchange
            # primary as Taler made it; the catalog says whether it has its FKs (no -P).
            fks = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE contype = 'f' "
                "AND conrelid = 'exchange.coin_deposits'::regclass)").fetchone()[0]
            setup = ("primary", None, fks)
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
    # Taler's own triggers (reserve_history, coin_history, ...) name their tables
    # unqualified: Taler's clients run with search_path = exchange.
    conn.execute("SET search_path TO exchange, public")
    conn.commit()
    return conn, setup


def _now_us():
    return int(time.time()) * SECOND


def _seed_text(seed, writer):
    # Continuing a database gives new keys even with the same seed, and equal
    # databases with equal seeds give equal histories.
    base = ",".join(f"{t}={writer.next_serial[t]}" for t in sorted(writer.next_serial))
    return f"taler-ops-gen:{seed}:{base}"


class _Lifecycles:
    """Wallets' lives: a reserve filled by wire, its coins withdrawn and spent."""

    def __init__(self, ex, injector):
        self.ex = ex
        self.rng = ex.rng
        self.injector = injector
        self.index = 0
        self.t_revoke = ex.now - HISTORY_SPAN // 2
        self.carry = set()          # forced business a wallet could not do yet

    def features(self, t0):
        rng = self.rng
        feats = {name for name, p in PROBABILITY.items() if rng.random() < p}
        if self.index < len(FORCED):
            feats.add(FORCED[self.index])
        feats |= self.carry
        if t0 >= self.t_revoke - 3 * DAY:
            feats -= {"recoup", "recoup_refresh"}
        self.index += 1
        return feats

    def plan(self, amount):
        """Coins a wallet asks for to withdraw ``amount`` (greedy, at most 12)."""
        coins, rest = [], amount
        for d in self.ex.denoms:
            while rest >= d.cost and len(coins) < 12:
                coins.append(d)
                rest -= d.cost
        return coins or [self.ex.denoms[-1]]

    def wallet_amount(self):
        rng = self.rng
        r = rng.random()
        if r < 0.6:
            return rng.between(2, 20) * UNIT + rng.between(0, 100) * CENT
        if r < 0.95:
            return rng.between(20, 100) * UNIT
        return rng.between(100, 500) * UNIT

    def run(self, t0):
        ex, rng = self.ex, self.rng
        feats = self.features(t0)
        customer = ex.customer(t0, kyc="kyc_customer" in feats)
        feats.discard("kyc_customer")
        res = ex.open_reserve(origin=customer)
        plan = self.plan(self.wallet_amount())
        if "recoup_refresh" in feats and not any(d.value >= 2 * UNIT for d in plan):
            plan.append(next(d for d in ex.denoms if d.value == 2 * UNIT))
        if "recoup" in feats:
            plan.append(ex.revoked[0])
            feats.discard("recoup")
        if rng.random() < 0.15 and ex.age_denoms:
            plan.append(ex.age_denoms[int(rng.random() * len(ex.age_denoms))])
        leftover = 0
        if rng.random() < 0.3 or "close_request" in feats:
            leftover = rng.between(1, 200) * CENT
        history_fee = ex.fees.history_fee(t0) if "history" in feats else 0
        open_fee = ex.fees.account_fee(t0) if "open" in feats else 0
        ex.credit_wire(res, sum(d.cost for d in plan) + leftover + history_fee + open_fee, t0)

        t = t0 + rng.between(MINUTE, 10 * MINUTE)
        coins = [ex.withdraw(res, d, t + i * SECOND) for i, d in enumerate(plan)]
        made = list(coins)
        if history_fee:
            ex.history_request(res, t + 20 * MINUTE)
            feats.discard("history")
        revoked = [c for c in coins if c.denom.revoked]
        wallet = [c for c in coins if not c.denom.revoked]
        rng.shuffle(wallet)
        if open_fee:
            ex.open_request(res, t + 30 * MINUTE, open_fee)
            contributor = wallet.pop()
            ex.open_deposit(res, contributor, t + 31 * MINUTE, open_fee)
            feats.discard("open")
        if "close_request" in feats:
            ex.close_request(res, t + HOUR, customer[1])
            feats.discard("close_request")

        t_p = t + HOUR
        if "p2p_local" in feats and len(wallet) > 1:
            t_p += rng.between(MINUTE, HOUR)
            pub, amount, _ = ex.purse(wallet[:2], t_p)
            del wallet[:2]
            other = ex.merge_local(pub, amount, t_p + rng.between(MINUTE, DAY))
            feats.discard("p2p_local")
            self.spend_reserve(other, other.last_activity + 10 * MINUTE)
        if "p2p_remote" in feats and wallet:
            t_p += rng.between(MINUTE, HOUR)
            coin = wallet.pop()
            pub, amount, h_contract = ex.purse([coin], t_p)
            ex.merge_remote(pub, amount, h_contract, t_p + rng.between(MINUTE, HOUR),
                            coin.denom.fee_deposit)
            feats.discard("p2p_remote")
        if "purse_expired" in feats:
            ex.expired_purse(t_p)
            feats.discard("purse_expired")
        if "wad_in" in feats:
            feats.discard("wad_in")
            for other in ex.wad_in(t_p, rng.between(1, 4)):
                self.spend_reserve(other, t_p + rng.between(MINUTE, DAY))

        # Most coins stay in the wallet for a while; some are never spent here.
        keep = [c for c in wallet if rng.random() < 0.08]
        wallet = [c for c in wallet if c not in keep]
        # Paced so that a wallet's shopping ends within two days (before `now`).
        pace = max(20 * MINUTE, min(8 * HOUR, 2 * DAY // (len(wallet) + 1)))
        while wallet:
            t_p += rng.between(10 * MINUTE, pace)
            take = min(len(wallet), 1 + int(rng.random() * 3))
            paying, wallet = wallet[:take], wallet[take:]
            amounts = [(c, c.denom.value) for c in paying]
            melt = None
            last = paying[-1]
            want_rr = "recoup_refresh" in feats and last.denom.value >= 2 * UNIT
            if ("melt" in feats or rng.random() < 0.05 or want_rr) and last.denom.value >= UNIT:
                feats.discard("melt")
                share = rng.between(10, 60) if not want_rr else 10
                part = max(last.denom.value * share // 100 // CENT * CENT,
                           last.denom.fee_deposit + CENT)
                amounts[-1] = (last, part)
                melt = last
            merchant = ex.pick_merchant()
            policy = None
            if "policy" in feats:
                policy = "fulfilled"
                feats.discard("policy")
            elif "policy_blocked" in feats:
                policy = "blocked"
                feats.discard("policy_blocked")
            refunds = ex.w.added["refunds"]
            ex.batch_deposit(merchant, t_p, amounts,
                             refund="refund" in feats or rng.random() < 0.02, policy=policy)
            if ex.w.added["refunds"] > refunds:
                feats.discard("refund")
            if melt is not None:
                t_p += MINUTE
                fresh_first = (ex.revoked[0],) if want_rr else ()
                fresh = ex.melt(melt, t_p, fresh_first)
                spend_now = []
                for d, rrc, coin in fresh:
                    made.append(coin)
                    if d.revoked:
                        ex.recoup_refresh(coin, melt, rrc,
                                          self.t_revoke + rng.between(HOUR, 5 * DAY))
                        feats.discard("recoup_refresh")
                    elif rng.random() < 0.5:
                        spend_now.append(coin)
                if spend_now:
                    t_p += rng.between(MINUTE, HOUR)
                    ex.batch_deposit(ex.pick_merchant(), t_p,
                                     [(c, c.denom.value) for c in spend_now])
        for coin in revoked:
            ex.recoup(coin, res, self.t_revoke + rng.between(HOUR, 5 * DAY))
        del keep
        self.carry = feats & set(FORCED)
        if self.injector is not None:
            self.injector.after_lifecycle(ex, res, made, t_p)
        ex.finish_reserve(res)
        for coin in made:
            ex.write_coin(coin)

    def spend_reserve(self, res, t):
        """A reserve credited by a merge or a wad: the wallet withdraws most of it."""
        ex = self.ex
        if self.rng.random() < 0.5:
            for i, d in enumerate(self.plan(res.balance)):
                if d.cost <= res.balance:
                    ex.withdraw(res, d, t + i * SECOND)
        ex.finish_reserve(res)


def _setup(ex, conn, t_start, merchants):
    """Key material, fees, auditors, partners and the merchants of this run."""
    ex.load_fees(conn)
    ex.ensure_fees(t_start - YEAR, ex.now + YEAR)
    ex.ensure_extensions(conn)
    denoms = ex.create_denominations(t_start - 7 * DAY, ex.now + YEAR)
    ex.create_auditors(t_start, denoms)
    ex.create_sign_keys(t_start - 30 * DAY, ex.now + 60 * DAY)
    ex.create_partners(t_start)
    t = t_start + 10 * DAY
    while t < ex.now - DAY:
        ex.profit_drain(t)
        t += 30 * DAY
    for i in range(merchants):
        ex.new_merchant(t_start - DAY - i * HOUR)


def validate_bulk_args(rows, seed):
    if not isinstance(rows, int) or isinstance(rows, bool) or rows <= 0:
        raise UsageError(f"--rows must be a positive integer, not {rows!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise UsageError(f"--seed must be an integer, not {seed!r}")


def bulk(uri, rows, seed=0, inject=(), record_path=None, now_us=None, progress=None,
         fk_check="auto", keys=None, auditor_uri=None, signed=True):
    """Fill the exchange database with about ``rows`` rows of consistent history.

    Returns {table: rows inserted}; planted misbehaviour goes to ``record_path``.
    ``fk_check`` (schemas with foreign keys): "triggers" has the server check each
    row; "set" checks each chunk with one anti-join per foreign key (see
    CopyWriter; needs superuser); "auto" takes "set" where allowed.
    ``keys``: the crypto.keyring.Keyring that signs (default: the one of ``seed``,
    currency KUDOS); its master public key is what the audit must be configured with.
    ``auditor_uri``: an auditor database to receive the merchants' deposit
    confirmations of every eighth batch deposit (and deposit_confirmation_unknown).
    ``signed=False`` (benchmarks at scale, bench/bench_scale.py): random bytes instead of
    signatures and public keys, about ten times faster; audit such a history without
    the signatures check (no master key), which would report every signature forged.
    """
    validate_bulk_args(rows, seed)
    if fk_check not in ("auto", "triggers", "set"):
        raise UsageError(f"fk_check must be auto, triggers or set, not {fk_check!r}")
    kinds = parse_kinds(inject)         # a usage error before touching the database
    if auditor_uri is None and AT_END & set(kinds):
        raise UsageError("--inject " + ", ".join(sorted(AT_END & set(kinds)))
                         + " writes into the auditor database: give one (gen --auditor)")
    conn, setup = _open(uri)
    try:
        return bulk_into(conn, bool(setup[2]), rows, seed, inject, record_path, now_us,
                         progress, fk_check, keys, auditor_uri, signed)
    finally:
        conn.close()


def write_confirmations(auditor_uri, confirmations):
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
        for dc in confirmations:
            params = []
            for c in cols:
                params.extend(divmod(dc[c], UNIT) if c == "total_without_fee" else (dc[c],))
            out.append(aud.execute(query, params).fetchone()[0])
        aud.commit()
    return out


def bulk_into(conn, has_fks, rows, seed=0, inject=(), record_path=None, now_us=None,
              progress=None, fk_check="auto", keys=None, auditor_uri=None, signed=True):
    """bulk() on an open connection to any exchange schema with the model's tables.

    Only the tables and columns the model writes are touched (explicit column
    lists), so this works on a database built from Taler's own SQL files too;
    ``has_fks``: whether that schema enforces its foreign keys.  Commits per
    chunk; rolls back the unfinished chunk on error; leaves ``conn`` open.
    """
    validate_bulk_args(rows, seed)
    kinds = parse_kinds(inject)
    now = _now_us() if now_us is None else int(now_us)
    # Taler's own triggers (reserve_history, coin_history, ...) name their tables
    # unqualified: Taler's clients run with search_path = exchange.
    conn.execute("SET search_path TO exchange, public")
    conn.commit()
    started = time.monotonic()
    writer = None
    try:
        if fk_check == "auto":
            # "set" switches off every trigger, and a schema built from Taler's files
            # has triggers of its own (reserve_history, coin_history, ...) that must run.
            own_triggers = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
                " WHERE c.relnamespace = 'exchange'::regnamespace AND NOT t.tgisinternal)"
            ).fetchone()[0]
            fk_check = ("set" if has_fks and not own_triggers and may_skip_fk_triggers(conn)
                        else "triggers")
        elif fk_check == "set" and not has_fks:
            fk_check = "triggers"       # nothing to switch off
        writer = CopyWriter(conn, COLUMNS, fk_check=fk_check)
        ex = Exchange(writer, Rand(_seed_text(seed, writer)), now,
                      keys if keys is not None else Keyring(seed), signed=signed)
        injector = Injector(kinds) if kinds else None
        ex.forger = injector        # forged signatures: at the first chance, key material included
        if auditor_uri is not None:
            ex.confirmations = []
        t_start = now - HISTORY_SPAN
        _setup(ex, conn, t_start, merchants=8 + rows // 4000)
        lives = _Lifecycles(ex, injector)
        t_last = now - MIN_LIFECYCLE_END
        total = 0

        def report():
            if progress is not None:
                progress(dict(writer.written), time.monotonic() - started)

        def flush():
            ex.aggregate()
            writer.flush_behind(report)

        lives.injector = None
        while (total < rows or lives.index < len(FORCED) or lives.carry
               or (injector and set(injector.pending) - AT_AGGREGATION - AT_END
                                 - {"emergency_by_count"})):
            if lives.index > len(FORCED) + rows:
                break               # nothing left to plant into
            frac = min(total / rows, 1.0)
            if injector is not None and frac >= 0.5 and lives.injector is None:
                # Plant in the second half, among ordinary traffic.
                lives.injector = ex.hooks = injector
            lives.run(t_start + int((t_last - t_start) * frac))
            total = sum(writer.added.values()) + len(ex.due) * 6 // 5
            if writer.pending >= CHUNK_ROWS:
                flush()
        flush()
        writer.wait()
        if injector is not None and "emergency_by_count" in injector.pending:
            # Needs the whole history's coins: planted last.
            for coin in injector.at_end(ex, conn, t_last):
                ex.write_coin(coin)
            flush()
            writer.wait()
        if auditor_uri is not None:
            conn.commit()
            planted = injector.unknown_confirmation(ex) if injector is not None else None
            ids = write_confirmations(auditor_uri, ex.confirmations
                                      + ([planted] if planted else []))
            if planted:
                injector.confirmation_written(ids[-1], planted)
        if injector is not None and injector.pending:
            raise TalerOpsError("could not plant " + ", ".join(injector.pending)
                                + " in a history this small; ask for more --rows")
        inserted = {t: n for t, n in writer.written.items() if n}
        if record_path is not None:
            write_record(record_path, injector.record if injector else [])
        return inserted
    except BaseException:
        try:
            if writer is not None:
                writer.wait()
        except BaseException:
            pass                    # the first error is the one to report
        conn.rollback()
        raise


# -- live ---------------------------------------------------------------------

class _Live:
    """The exchange's state in memory while it serves traffic."""

    def __init__(self, conn, ex, gc_every, end_wall):
        self.conn = conn
        self.ex = ex
        self.rng = ex.rng
        self.reserves = []          # reserves whose wallet still withdraws
        self.plans = {}             # reserve_pub -> denominations still to withdraw
        self.coins = []             # coins with value left (known or not yet)
        self.spent = []             # coins a deposit used up (for coin_overspend)
        self.pending = []           # [merchant, wire deadline, batch serial, net, shard]
        self.updates = {"reserves": {}, "known_coins": {}, "batch_deposits": {}}
        self.gc_every = gc_every
        self.end_wall = end_wall

    # Mutable columns, coalesced per row until the transaction ends.
    def touch_reserve(self, res):
        self.updates["reserves"][res.pub] = max(res.balance, 0) + res.balance_offset

    def touch_coin(self, coin):
        if coin.known_id is not None:
            self.updates["known_coins"][coin.pub] = max(coin.remaining, 0)

    def new_reserve(self, t, legal_gc=False):
        ex, rng = self.ex, self.rng
        res = ex.open_reserve(origin=ex.customer(t))
        usable = [d for d in ex.denoms if d.valid_from <= t < d.expire_withdraw]
        plan = [usable[min(len(usable) - 1, int(rng.random() ** 0.5 * len(usable)))]
                for _ in range(1 + int(rng.random() * 6))]
        # Some wallets leave change behind; the rest empty their reserve (GC fodder).
        leftover = rng.between(1, 100) * CENT if rng.random() < 0.3 else 0
        ex.credit_wire(res, sum(d.cost for d in plan) + leftover, t)
        res.expiration = t + IDLE_RESERVE_EXPIRATION
        res.gc_date = t + (int(self.gc_every * SECOND) if self.gc_every and not legal_gc
                           else LEGAL_RESERVE_EXPIRATION)
        ex.put("reserves", res.uuid, res.pub, res.expiration, res.gc_date, res.balance, 0, 0, 0)
        self.reserves.append(res)
        self.plans[res.pub] = plan
        return res

    def withdraw(self, t):
        if not self.reserves:
            return self.new_reserve(t)
        rng = self.rng
        res = self.reserves[int(rng.random() * len(self.reserves))]
        plan = self.plans[res.pub]
        for _ in range(min(len(plan), 1 + int(rng.random() * 4))):
            self.coins.append(self.ex.withdraw(res, plan.pop(), t))
        self.touch_reserve(res)
        if not plan:
            self.reserves.remove(res)
            del self.plans[res.pub]
        return res

    def take_coins(self, n):
        rng = self.rng
        return [self.coins.pop(int(rng.random() * len(self.coins)))
                for _ in range(min(n, len(self.coins)))]

    def deposit(self, t):
        ex, rng = self.ex, self.rng
        paying = self.take_coins(1 + int(rng.random() * 3))
        if not paying:
            return self.withdraw(t)
        for coin in paying:
            if coin.known_id is None:     # first seen by the exchange now
                ex.know(coin)
                ex.write_coin(coin)
        # Short wire deadlines so the aggregator acts within the run; deposits
        # made too close to the end get deadlines a day past it.
        room = self.end_wall - t - SECOND // 2
        aggregate = room > SECOND // 2
        delay = (rng.between(SECOND // 5, min(8 * SECOND, room)) if aggregate
                 else self.end_wall - t + MARGIN + rng.between(0, DAY))
        amounts = [(c, c.remaining) for c in paying]
        melt = None
        last = paying[-1]
        if rng.random() < 0.1 and last.remaining >= UNIT:
            amounts[-1] = (last, max(last.remaining * 4 // 10 // CENT * CENT,
                                     last.denom.fee_deposit + CENT))
            melt = last
        merchant = ex.pick_merchant()
        batch, _, net, deadline = ex.batch_deposit(merchant, t, amounts,
                                                   refund=rng.random() < 0.03,
                                                   wire_delay=delay, pending=True)
        if aggregate:
            self.pending.append([merchant, deadline, batch, net, merchant.shard])
        if melt is not None:
            for _, _, coin in ex.melt(melt, t + SECOND):
                self.coins.append(coin)
        for coin in paying:
            self.touch_coin(coin)
            if coin.remaining == 0 and coin.fully_spent_by_deposit:
                self.spent = self.spent[-20:] + [coin]
        return None

    def aggregate(self, t):
        due = [p for p in self.pending if p[1] < t]
        if not due:
            return
        self.pending = [p for p in self.pending if p[1] >= t]
        shards = {p[2]: p[4] for p in due}
        wired = self.ex.aggregate([tuple(p[:4]) for p in due], execution_at=t)
        for _, items in wired:
            for _, _, batch, _ in items:
                self.updates["batch_deposits"][batch] = shards[batch]
            # The transfer the exchange prepared (exchange-internal; GC removes it).
            self.ex.put("prewire", self.ex.w.serial("prewire"), "x-taler-bank", True, False,
                        self.rng.randbytes(64))

    def history(self, t):
        if not self.reserves:
            return self.new_reserve(t)
        res = self.reserves[int(self.rng.random() * len(self.reserves))]
        fee = self.ex.fees.history_fee(t)
        if res.balance - sum(d.cost for d in self.plans[res.pub]) >= fee:
            self.ex.history_request(res, t)
            self.touch_reserve(res)
        return None

    def step(self, t):
        r = self.rng.random()
        if r < 0.15:
            self.new_reserve(t)
        elif r < 0.5:
            self.withdraw(t)
        elif r < 0.98:
            self.deposit(t)
        else:
            self.history(t)

    def inject(self, injector, t):
        """Plant what is still pending into this transaction's traffic."""
        ex = self.ex
        ex.hooks = injector          # the next aggregation takes wire_out_mismatch
        for kind in list(injector.pending):
            if kind == "reserve_balance_mismatch" and self.reserves:
                res = self.reserves.pop(0)     # no more activity: the record stays exact
                del self.plans[res.pub]
                injector.pending.remove(kind)
                res.balance_offset = UNIT
                self.touch_reserve(res)
                injector.reserve_written(res, max(res.balance, 0) + UNIT)
            elif kind == "coin_overspend" and self.spent:
                coin = self.spent.pop()
                injector.pending.remove(kind)
                _, serials, _, _ = ex.batch_deposit(
                    ex.pick_merchant(), t, [(coin, coin.denom.value)],
                    wire_delay=self.end_wall - t + MARGIN + DAY, pending=True)
                self.touch_coin(coin)
                injector.record_overspend(coin, serials[0])
            elif kind == "reserve_overdraft":
                # A reserve of its own, kept from GC, so the evidence stays.
                res = self.new_reserve(t, legal_gc=True)
                self.reserves.remove(res)
                del self.plans[res.pub]
                denom = ex.denoms[0]
                injector.pending.remove(kind)
                while True:         # withdraw until one withdrawal overdraws it
                    balance = res.balance
                    serial = ex.w.peek_serial("reserves_out")
                    coin = ex.withdraw(res, denom, t + SECOND)
                    if res.balance < 0:
                        break
                    self.coins.append(coin)
                self.touch_reserve(res)
                injector.record_overdraft(res, serial, balance, denom.cost)

    def write_updates(self):
        """The exchange's UPDATEs of this transaction, one statement per table."""
        counts = {}
        with self.conn.cursor() as cur:
            for table, (stmt, params) in _UPDATES.items():
                changed = self.updates[table]
                if changed:
                    cur.executemany(stmt, [params(key, value) for key, value in changed.items()])
                    counts[table] = len(changed)
        self.updates = {table: {} for table in _UPDATES}
        return counts


# table -> (statement, parameters from (key, new value)); amounts are split into
# (val, frac) here because executemany binds plain ints.
_UPDATES = {
    "reserves": ("UPDATE exchange.reserves SET current_balance = "
                 "ROW(%s, %s)::exchange.taler_amount WHERE reserve_pub = %s",
                 lambda pub, v: (v // UNIT, v % UNIT, pub)),
    "known_coins": ("UPDATE exchange.known_coins SET remaining = "
                    "ROW(%s, %s)::exchange.taler_amount WHERE coin_pub = %s",
                    lambda pub, v: (v // UNIT, v % UNIT, pub)),
    "batch_deposits": ("UPDATE exchange.batch_deposits SET done = TRUE"
                       " WHERE batch_deposit_serial_id = %s AND shard = %s",
                       lambda serial, shard: (serial, shard)),
}


def _live_denominations(ex, conn, t_from, t_to):
    """Withdrawable denominations for the run: the database's, or a new generation."""
    rows = conn.execute(
        """SELECT d.denominations_serial, (d.coin).val * 100000000 + (d.coin).frac,
                  (d.fee_withdraw).val * 100000000 + (d.fee_withdraw).frac,
                  (d.fee_deposit).val * 100000000 + (d.fee_deposit).frac,
                  (d.fee_refresh).val * 100000000 + (d.fee_refresh).frac,
                  (d.fee_refund).val * 100000000 + (d.fee_refund).frac,
                  d.age_mask, get_byte(d.denom_pub, 3), d.valid_from, d.expire_withdraw,
                  d.denom_pub
             FROM exchange.denominations d
            WHERE d.valid_from <= %s AND d.expire_withdraw > %s AND d.expire_deposit > %s
              AND NOT EXISTS (SELECT 1 FROM exchange.denomination_revocations r
                               WHERE r.denominations_serial = d.denominations_serial)
            ORDER BY d.denominations_serial""", (t_from, t_to, t_to + DAY)).fetchall()
    # Only denominations whose fees leave every deposit something to wire.  The
    # cipher is denom_pub's first field (Taler never writes denom_type: it stays 1).
    # Only denominations whose private key this run's keyring derives (an
    # earlier run with the same seed made them): their coins must verify.
    denoms = []
    for r in rows:
        if not (r[1] >= 10 * CENT and r[3] <= 2 * CENT and r[4] <= 2 * CENT):
            continue
        key = ex.keys.denomination(r[0], r[7] == 2, r[6])
        if key.denom_pub == bytes(r[10]):
            denoms.append(Denomination(r[0], r[1], r[2:6], False, r[6], r[7] == 2, r[8], r[9],
                                       key))
    if len({d.value for d in denoms if not d.age_mask}) >= 4:
        ex.add_denominations(denoms)
        return []
    made = ex.create_denominations(t_from - HOUR, t_to + YEAR, with_revoked=False)
    ex.create_auditors(t_from, made)
    return made


def validate_live_args(rate, duration, gc_every):
    for name, value in (("--rate", rate), ("--duration", duration)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise UsageError(f"{name} must be a positive number, not {value!r}")
    if gc_every is not None and (isinstance(gc_every, bool)
                                 or not isinstance(gc_every, (int, float)) or not gc_every > 0):
        raise UsageError(f"--gc-every must be a positive number of seconds, not {gc_every!r}")


def live(uri, rate, duration, seed=0, gc_every=None, inject=(), record_path=None, progress=None,
         tick=0.2, keys=None):
    """Serve exchange traffic at about ``rate`` rows/s for ``duration`` seconds.

    One transaction per ``tick`` seconds.  Returns {"inserted": {table: n},
    "updated": {table: n}, "deleted": {table: n} (GC), "transactions", "gc_runs",
    "seconds", "rows_per_second", "injected": [...]}.
    """
    validate_live_args(rate, duration, gc_every)
    kinds = parse_kinds(inject)
    conn, _ = _open(uri, need_primary_for_gc=gc_every is not None)
    try:
        writer = CopyWriter(conn, COLUMNS)
        start_wall = _now_us()
        end_wall = start_wall + int(duration * SECOND)
        ex = Exchange(writer, Rand(_seed_text(seed, writer)), start_wall,
                      keys if keys is not None else Keyring(seed))
        ex.load_fees(conn)
        ex.ensure_fees(start_wall - DAY, end_wall + YEAR)
        _live_denominations(ex, conn, start_wall, end_wall + WEEK)
        for _ in range(4):
            ex.new_merchant(start_wall - HOUR)
        state = _Live(conn, ex, gc_every, end_wall)
        writer.flush()
        conn.commit()
        setup_rows = sum(writer.written.values())
        injector = Injector(kinds) if kinds else None
        ex.forger = injector
        stats = {"transactions": 1, "gc_runs": 0, "deleted": {}}
        updated = {}
        started = time.monotonic()
        next_gc = started + gc_every if gc_every else None
        inserted = 0
        t = 0
        while True:
            elapsed = time.monotonic() - started
            if elapsed >= duration:
                break
            # Never behind the last tick's timestamps: a busy tick hands out more
            # microseconds than the wall clock moves (history_requests' key holds one).
            t = max(_now_us(), t)
            target = rate * min(elapsed + tick, duration)
            while inserted + writer.pending < target:
                state.step(t)
                t += 1          # distinct timestamps: several keys include one
            if injector is not None and injector.pending and elapsed >= duration / 2:
                state.inject(injector, t)
            state.aggregate(t)
            inserted += writer.pending
            writer.flush()
            for table, n in state.write_updates().items():
                updated[table] = updated.get(table, 0) + n
            conn.commit()
            stats["transactions"] += 1
            if next_gc is not None and time.monotonic() >= next_gc:
                result = gc.collect(conn, now_us=_now_us())
                conn.commit()
                stats["gc_runs"] += 1
                for table, n in result["deleted"].items():
                    stats["deleted"][table] = stats["deleted"].get(table, 0) + n
                next_gc = time.monotonic() + gc_every
            if progress is not None:
                progress(writer.counts(), time.monotonic() - started)
            pause = started + (stats["transactions"] - 1) * tick - time.monotonic()
            if pause > 0:
                time.sleep(min(pause, max(duration - (time.monotonic() - started), 0)))
        # The aggregator's last round, executed now (never in the future: an audit
        # started right after the run must not see transfers dated after its clock).
        if injector is not None and injector.pending:
            state.inject(injector, _now_us())
        state.aggregate(_now_us())
        writer.flush()
        for table, n in state.write_updates().items():
            updated[table] = updated.get(table, 0) + n
        conn.commit()
        seconds = time.monotonic() - started
        stats["inserted"] = {t: n for t, n in writer.written.items() if n}
        stats["updated"] = updated
        stats["setup_rows"] = setup_rows
        stats["seconds"] = round(seconds, 3)
        total = sum(stats["inserted"].values()) - setup_rows
        stats["rows_per_second"] = round(total / seconds, 1) if seconds else None
        stats["injected"] = injector.record if injector else []
        if injector is not None and injector.pending:
            raise TalerOpsError("could not plant " + ", ".join(injector.pending)
                                + " during so short a run; use a longer --duration")
        if record_path is not None:
            write_record(record_path, stats["injected"])
        return stats
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()


def tty_progress(stream=None):
    """A progress callback that redraws one status line on a terminal, else None."""
    stream = stream or sys.stderr
    if not stream.isatty():
        return None
    state = {"last": 0.0}

    def show(counts, elapsed):
        now = time.monotonic()
        if now - state["last"] < 0.2:
            return
        state["last"] = now
        total = sum(counts.values())
        top = sorted(((n, t) for t, n in counts.items() if n), reverse=True)[:4]
        line = (f"rows {total:,}  {total / elapsed if elapsed else 0:,.0f} rows/s  "
                + "  ".join(f"{t} {n:,}" for n, t in top))
        stream.write("\r\x1b[K" + line[:200])
        stream.flush()

    show.done = lambda: (stream.write("\n"), stream.flush())
    return show
