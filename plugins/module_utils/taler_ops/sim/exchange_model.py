"""A model of a Taler exchange's business, producing its database rows.

Everything the exchange records is produced here as rows for CopyWriter:
the key material (denominations, signing keys, auditors, fees), wallets'
reserves with their withdrawals, coins and how they are spent (deposits,
refreshes, recoups, purses), merchants' refunds, the aggregator's wire
transfers, p2p payments across partner exchanges (wads) and KYC.

The history obeys docs/economics.md: every reserve's debits are covered by
credits dated earlier, a coin is never spent beyond its value, every wire
transfer equals its deposits minus fees, and the mutable columns hold what
the exchange would hold (current_balance, remaining, done).  Amounts are ints
of 1e-8 units.  Only ``sim/inject.py`` breaks these rules, on request.
"""

import hashlib
import json
import random

from ..schema import hashing
from ..crypto import catalog, eddsa, hashes, mint
from ..crypto import denom as codec
from ..crypto.hashes import coin_ev_hash
from ..crypto import keyring as _keyring
from ..schema.registry import BY_NAME

UNIT = 100_000_000
CENT = UNIT // 100
SECOND = 1_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
WEEK = 7 * DAY
YEAR = 365 * DAY

IDLE_RESERVE_EXPIRATION = 4 * WEEK    # [exchangedb] IDLE_RESERVE_EXPIRATION_TIME
LEGAL_RESERVE_EXPIRATION = 7 * YEAR   # [exchangedb] LEGAL_RESERVE_EXPIRATION_TIME
HISTORY_SPAN = 120 * DAY              # bulk history covers now - 120 days .. now
# An audit run within this long after `now` must not see a deadline or an
# expiration fall due that the generated exchange had no chance to act on.
MARGIN = DAY
FEE_PERIOD = YEAR                     # wire and global fees are set per year
AGE_MASK = (1 << 8) | (1 << 10) | (1 << 12) | (1 << 14) | (1 << 16) | (1 << 18) | (1 << 21)
ACCOUNT_SECTION = "exchange-account-1"
WIRE_METHODS = ("x-taler-bank", "iban")
EXTENSIONS = {
    "age_restriction": {"critical": False, "version": "1",
                        "config": {"age_groups": "8:10:12:14:16:18:21"}},
    "policy_merchant_refund": {"critical": False, "version": "1", "config": {}},
    "policy_brandt_vickrey_auction": {"critical": False, "version": "0", "config": {}},
}

# The columns the model writes, per table, in this order (checked against the
# table specs when the writer starts; see CopyWriter).
COLUMNS = {
    "denominations": "denominations_serial denom_pub_hash denom_type age_mask denom_pub "
                     "master_sig valid_from expire_withdraw expire_deposit expire_legal coin "
                     "fee_withdraw fee_deposit fee_refresh fee_refund",
    "denomination_revocations": "denom_revocations_serial_id denominations_serial master_sig",
    "wire_targets": "wire_target_serial_id wire_target_h_payto payto_uri access_token "
                    "target_pub h_normalized_payto aml_program_lock_timeout",
    "legitimization_measures": "legitimization_measure_serial_id access_token start_time "
                               "jmeasures display_priority is_finished",
    "legitimization_outcomes": "outcome_serial_id h_payto decision_time expiration_time "
                               "jproperties to_investigate jnew_rules is_active new_measure_name",
    "legitimization_processes": "legitimization_process_serial_id h_payto start_time "
                                "expiration_time legitimization_measure_serial_id measure_index "
                                "provider_name provider_user_id provider_legitimization_id "
                                "redirect_url error_code error_message",
    "reserves": "reserve_uuid reserve_pub expiration_date gc_date current_balance "
                "purses_active purses_allowed birthday",
    "reserves_in": "reserve_in_serial_id reserve_pub wire_reference credit wire_source_h_payto "
                   "exchange_account_section execution_date",
    "reserves_close": "close_uuid reserve_pub execution_date wtid wire_target_h_payto amount "
                      "closing_fee close_request_row",
    "reserves_open_requests": "open_request_uuid reserve_pub request_timestamp expiration_date "
                              "reserve_sig reserve_payment requested_purse_limit",
    "reserves_open_deposits": "reserve_open_deposit_uuid reserve_sig reserve_pub coin_pub "
                              "coin_sig contribution",
    "reserves_out": "reserve_out_serial_id h_blind_ev denominations_serial denom_sig "
                    "reserve_uuid reserve_sig execution_date amount_with_fee",
    "auditors": "auditor_uuid auditor_pub auditor_name auditor_url is_active last_change",
    "auditor_denom_sigs": "auditor_denom_serial auditor_uuid denominations_serial auditor_sig",
    "exchange_sign_keys": "esk_serial exchange_pub master_sig valid_from expire_sign "
                          "expire_legal",
    "signkey_revocations": "signkey_revocations_serial_id esk_serial master_sig",
    "known_coins": "known_coin_id denominations_serial coin_pub denom_sig age_commitment_hash "
                   "remaining",
    "refresh_commitments": "melt_serial_id rc old_coin_pub old_coin_sig amount_with_fee "
                           "noreveal_index",
    "refresh_revealed_coins": "rrc_serial melt_serial_id freshcoin_index link_sig "
                              "denominations_serial coin_ev h_coin_ev ev_sig ewv",
    "refresh_transfer_keys": "rtc_serial melt_serial_id transfer_pub transfer_privs",
    "policy_fulfillments": "fulfillment_id fulfillment_timestamp fulfillment_proof "
                           "h_fulfillment_proof policy_hash_codes",
    "policy_details": "policy_details_serial_id policy_hash_code policy_json deadline "
                      "commitment accumulated_total fee transferable fulfillment_state "
                      "h_fulfillment_proof",
    "batch_deposits": "batch_deposit_serial_id shard merchant_pub wallet_timestamp "
                      "exchange_timestamp refund_deadline wire_deadline h_contract_terms "
                      "wallet_data_hash wire_salt wire_target_h_payto policy_blocked "
                      "policy_details_serial_id merchant_sig done",
    "coin_deposits": "coin_deposit_serial_id batch_deposit_serial_id coin_pub coin_sig "
                     "amount_with_fee",
    "refunds": "refund_serial_id coin_pub batch_deposit_serial_id merchant_sig "
               "rtransaction_id amount_with_fee",
    "wire_out": "wireout_uuid execution_date wtid_raw wire_target_h_payto "
                "exchange_account_section amount",
    "aggregation_tracking": "aggregation_serial_id batch_deposit_serial_id wtid_raw",
    "wire_fee": "wire_fee_serial wire_method start_date end_date wire_fee closing_fee master_sig",
    "global_fee": "global_fee_serial start_date end_date history_fee account_fee purse_fee "
                  "purse_timeout history_expiration purse_account_limit master_sig",
    "recoup": "recoup_uuid coin_pub coin_sig coin_blind amount recoup_timestamp "
              "reserve_out_serial_id",
    "recoup_refresh": "recoup_refresh_uuid coin_pub known_coin_id coin_sig coin_blind amount "
                      "recoup_timestamp rrc_serial",
    "extensions": "extension_id name manifest",
    "purse_requests": "purse_requests_serial_id purse_pub merge_pub purse_creation "
                      "purse_expiration h_contract_terms age_limit flags amount_with_fee "
                      "purse_fee purse_sig in_reserve_quota was_decided balance",
    "purse_decision": "purse_decision_serial_id purse_pub action_timestamp refunded",
    "partners": "partner_serial_id partner_master_pub start_date end_date next_wad "
                "wad_frequency wad_fee master_sig partner_base_url",
    "purse_merges": "purse_merge_request_serial_id partner_serial_id reserve_pub purse_pub "
                    "merge_sig merge_timestamp",
    "purse_deposits": "purse_deposit_serial_id partner_serial_id purse_pub coin_pub "
                      "amount_with_fee coin_sig",
    "account_merges": "account_merge_request_serial_id reserve_pub reserve_sig purse_pub "
                      "wallet_h_payto",
    "history_requests": "history_request_serial_id reserve_pub request_timestamp reserve_sig "
                        "history_fee",
    "close_requests": "close_request_serial_id reserve_pub close_timestamp reserve_sig close "
                      "close_fee payto_uri done",
    "wads_out": "wad_out_serial_id wad_id partner_serial_id amount execution_time",
    "wad_out_entries": "wad_out_entry_serial_id wad_out_serial_id reserve_pub purse_pub "
                       "h_contract purse_expiration merge_timestamp amount_with_fee wad_fee "
                       "deposit_fees reserve_sig purse_sig",
    "wads_in": "wad_in_serial_id wad_id origin_exchange_url amount arrival_time",
    "wad_in_entries": "wad_in_entry_serial_id wad_in_serial_id reserve_pub purse_pub h_contract "
                      "purse_expiration merge_timestamp amount_with_fee wad_fee deposit_fees "
                      "reserve_sig purse_sig",
    "kycauths_in": "kycauth_in_serial_id account_pub wire_reference credit wire_source_h_payto "
                   "exchange_account_section execution_date",
    "profit_drains": "profit_drain_serial_id wtid account_section payto_uri trigger_date amount "
                     "master_sig executed",
    "prewire": "prewire_uuid wire_method finished failed buf",
}
COLUMNS = {table: tuple(cols.split()) for table, cols in COLUMNS.items()}


def _rule(table, column):
    for d in BY_NAME[table].derived:
        if d.column == column:
            return d.rule
    raise KeyError(f"{table}.{column} is not a derived column")


_H_PAYTO_RULE = _rule("wire_targets", "wire_target_h_payto")


def h_payto(payto):
    """wire_target_h_payto of a payto URI, by the registry's rule (the full payto hash)."""
    return hashing.compute(_H_PAYTO_RULE, payto)


def h_normalized_payto(payto):
    """The normalized payto hash: what KYC tables and account_merges hold (§2.5)."""
    return hashing.normalized_payto_hash(payto)


# Taler's BYTEA layouts (taler-real-schema §2.1) come from taler_ops.crypto
# (denom, mint): real keys, real signatures.


def hashcode(data):
    """A gnunet_hashcode value (Taler's domain is 32 bytes)."""
    return hashlib.sha512(data if isinstance(data, bytes) else data.encode()).digest()[:32]


def deposit_confirmation(tag, h_contract, h_wire, t, refund_deadline, wire_deadline, total,
                         coin_pubs, coin_sigs, merchant_pub):
    """A merchant's deposit confirmation as Taler's auditor-httpd stores it (a row of
    auditor_deposit_confirmations).  The exchange's signature and signing key are
    stand-ins derived from ``tag``: the audit does not verify them (auditor-httpd does)."""
    stand_in = hashlib.sha512(b"deposit-confirmation" + tag.to_bytes(8, "big")).digest()
    return {"h_contract_terms": h_contract, "h_policy": bytes(64), "h_wire": h_wire,
            "exchange_timestamp": t, "refund_deadline": refund_deadline,
            "wire_deadline": wire_deadline, "total_without_fee": total,
            "coin_pubs": list(coin_pubs), "coin_sigs": list(coin_sigs),
            "merchant_pub": merchant_pub, "exchange_sig": stand_in,
            "exchange_pub": stand_in[:32], "master_sig": stand_in[::-1]}


def payto_method(payto):
    """The payment method of a payto URI ("iban" of payto://iban/...), whose wire fee applies."""
    return payto.split("://", 1)[1].split("/", 1)[0]


def iban_payto(rng, name, bic=False):
    """A payto://iban URI with a valid German IBAN (real check digits) and receiver-name."""
    bban = f"{rng.getrandbits(27) % 10**8:08d}{rng.getrandbits(34) % 10**10:010d}"
    iban = "DE" + hashing.iban_check_digits("DE", bban) + bban
    return f"payto://iban/{'COBADEFFXXX/' if bic else ''}{iban}?receiver-name={name}"


class Denomination:
    __slots__ = ("serial", "value", "fee_withdraw", "fee_deposit", "fee_refresh",
                 "fee_refund", "revoked", "age_mask", "cs", "valid_from", "expire_withdraw",
                 "key", "h")

    def __init__(self, serial, value, fees, revoked=False, age_mask=0, cs=False,
                 valid_from=0, expire_withdraw=0, key=None):
        self.serial = serial
        self.value = value
        self.fee_withdraw, self.fee_deposit, self.fee_refresh, self.fee_refund = fees
        self.revoked = revoked
        self.age_mask = age_mask
        self.cs = cs
        self.valid_from = valid_from
        self.expire_withdraw = expire_withdraw
        self.key = key              # crypto.mint.DenominationKey: signs its coins
        self.h = key.denom_pub_hash if key is not None else None

    @property
    def cost(self):
        return self.value + self.fee_withdraw


class Coin:
    __slots__ = ("pub", "denom", "spent", "known_id", "withdraw_serial", "age_hash",
                 "fully_spent_by_deposit", "priv", "bks", "sig")

    def __init__(self, pub, denom, withdraw_serial=None, priv=None):
        self.pub = pub
        self.priv = priv            # EdDSA seed of coin_pub
        self.bks = None             # blinding secret (recoup.coin_blind)
        self.sig = None             # known_coins.denom_sig
        self.denom = denom
        self.spent = 0
        self.known_id = None
        self.withdraw_serial = withdraw_serial
        self.age_hash = None
        self.fully_spent_by_deposit = False

    @property
    def remaining(self):
        return self.denom.value - self.spent


class Reserve:
    __slots__ = ("pub", "uuid", "credit", "debit", "last_activity", "origin", "expiration",
                 "gc_date", "closed", "last_debit", "balance_offset", "priv", "open_sig")

    def __init__(self, pub, uuid, origin=None, priv=None):
        self.pub = pub
        self.priv = priv            # EdDSA seed of reserve_pub
        self.open_sig = None        # the last open request's reserve_sig
        self.uuid = uuid
        self.credit = 0
        self.debit = 0
        self.last_activity = 0
        self.last_debit = 0
        self.origin = origin        # (h_payto, payto) of the account it came from
        self.expiration = None
        self.gc_date = None
        self.closed = False
        self.balance_offset = 0     # only sim/inject.py sets it

    @property
    def balance(self):
        return self.credit - self.debit


class Merchant:
    __slots__ = ("pub", "payto", "h_payto", "shard", "priv")

    def __init__(self, pub, payto, priv=None):
        self.pub = pub
        self.priv = priv
        self.payto = payto
        self.h_payto = h_payto(payto)
        self.shard = int.from_bytes(pub[:4], "big") & 0x7FFFFFFF


class FeeSchedule:
    """Wire and global fees by period; rows present in the database win."""

    def __init__(self):
        self.wire = {m: [] for m in WIRE_METHODS}   # sorted (start, end, wire_fee, closing_fee)
        self.glob = []                              # sorted (start, end, history_fee, ...)

    @staticmethod
    def _find(rows, t, what):
        for row in rows:
            if row[0] <= t < row[1]:
                return row
        raise LookupError(f"no {what} covers time {t}")

    def wire_fee(self, t, method="x-taler-bank"):
        return self._find(self.wire[method], t, f"wire fee for {method}")[2]

    def closing_fee(self, t, method="x-taler-bank"):
        return self._find(self.wire[method], t, f"wire fee for {method}")[3]

    def history_fee(self, t):
        return self._find(self.glob, t, "global fee")[2]

    def account_fee(self, t):
        return self._find(self.glob, t, "global fee")[3]


def wire_fee_of_period(k):
    """The fee the model's exchange sets for fee year k (deterministic, seed-independent)."""
    return 1 * CENT + (k % 3) * CENT, 1 * CENT + (k % 2) * CENT


def global_fee_of_period(k):
    # history_fee, account_fee, purse_fee
    return 1 * CENT, 2 * CENT + (k % 2) * CENT, 0


class Rand(random.Random):
    def key32(self):
        return self.randbytes(32)

    def key64(self):
        return self.randbytes(64)

    def between(self, lo, hi):
        return lo + int(self.random() * (hi - lo))


def _json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def A(units):
    """An amount of 1e-8 units as the (val, frac) pair the signature blocks take."""
    return divmod(int(units), UNIT)


def denom_terms(key, valid_from, expire_withdraw, expire_deposit, expire_legal, value, fees):
    """A denomination's signed terms, as catalog rows name them."""
    return {"valid_from": valid_from, "expire_withdraw": expire_withdraw,
            "expire_deposit": expire_deposit, "expire_legal": expire_legal, "coin": A(value),
            "fee_withdraw": A(fees[0]), "fee_deposit": A(fees[1]), "fee_refresh": A(fees[2]),
            "fee_refund": A(fees[3]), "denom_pub": key.denom_pub}


class Exchange:
    """The exchange's state and business rules; every action writes its rows."""

    def __init__(self, writer, rng, now, keys=None, signed=True):
        self.w = writer
        self.rng = rng
        self.now = now
        # signed=False (benchmarks at scale only): every signature and public key is
        # random bytes of the right layout, ten times faster; the audit must then run
        # without the signatures check (no master key), which would find them all forged.
        self.signed = signed
        # Every signature is real (docs/generator.md): the master key and the
        # denomination keys come from the keyring, the other keys from rng.
        self.keys = keys if keys is not None else _keyring.Keyring(0)
        self.ctx = self.keys.ctx
        self.purses = {}            # purse_pub -> what its merge and account merge sign
        self.denom_terms = {}       # serial -> signed terms (auditor signatures)
        self.esk_pubs = {}          # esk_serial -> exchange_pub
        self.fees = FeeSchedule()
        self.denoms = []            # withdrawable, not revoked, by value descending
        self.revoked = []
        self.age_denoms = []
        self.all_denoms = []
        self.merchants = []
        self.customers = []         # (h_payto, payto)
        self.partners = []          # (serial, base_url, wad_fee)
        self.wire_reference = 0
        self.due = []               # (merchant, wire_deadline, batch_serial, net) to aggregate
        self.hooks = None           # inject.Injector, when misbehaviour is to be planted
        self.forger = None          # inject.Injector, when signatures are to be forged
        self.forged = {}            # column -> forged value not yet written
        # Merchants' deposit confirmations (for the auditor database), kept only when
        # asked for: every eighth batch deposit's (workload.bulk's auditor_uri).
        self.confirmations = None

    # -- helpers -------------------------------------------------------------
    def put(self, table, *row):
        self.w.add(table, row)
        if self.forged:
            self._note_forged(table, row)

    def _note_forged(self, table, row):
        for column, value in list(self.forged.items()):
            t, col = column.split(".")
            if t == table and row[COLUMNS[table].index(col)] == value:
                del self.forged[column]
                self.forger.forged_written(column, row[0])

    def forge(self, column):
        """True if sim/inject.py wants this signature of ``column`` forged."""
        return self.forger is not None and self.forger.forge(column)

    def sign(self, column, seed, **row):
        """The value of signature column ``column`` ("table.column") for a row
        whose signed values are ``row`` (the catalog's names), signed with ``seed``."""
        if not self.signed:
            return self.rng.key64()
        if self.forge(column):
            # The right block under a wrong key: well-formed, and invalid.
            sig = catalog.get(column).sign(row, self.ctx, hashcode(b"forged" + bytes(seed)))
            self.forged[column] = sig
            return sig
        return catalog.get(column).sign(row, self.ctx, seed)

    def master_sign(self, column, **row):
        return self.sign(column, self.keys.master, **row)

    def keypair(self):
        """(EdDSA seed, public key), from the run's random stream."""
        seed = self.rng.key32()
        return seed, (eddsa.public_key(seed) if self.signed else self.rng.key32())

    def make_coin(self, key, coin_pub, bks, age_hash, melt=False):
        """``key.make_coin`` (a valid planchet), or with signed=False one of random
        values in the same layouts, whose h_coin_ev is still the hash of its coin_ev."""
        if self.signed:
            return key.make_coin(coin_pub, bks, age_hash, melt=melt)
        rb = self.rng.randbytes
        if key.cipher == codec.RSA:
            size = (key.rsa_priv.public.n.bit_length() + 7) // 8
            blinded = int.from_bytes(rb(size), "big") >> 1
            coin_ev = codec.encode_rsa_planchet(blinded)
            return mint.Planchet(coin_ev, codec.encode_ewv(codec.RSA),
                                 coin_ev_hash(key.denom_pub_hash, codec.RSA, coin_ev[8:]),
                                 codec.encode_rsa_sig(int.from_bytes(rb(size), "big") >> 1,
                                                      blinded=True),
                                 codec.encode_rsa_sig(int.from_bytes(rb(size), "big") >> 1))
        coin_ev = codec.encode_cs_planchet((rb(32), rb(32)), rb(32))
        return mint.Planchet(coin_ev, codec.encode_ewv(codec.CS, (rb(32), rb(32))),
                             coin_ev_hash(key.denom_pub_hash, codec.CS, coin_ev[8:]),
                             codec.encode_cs_blind_sig(self.rng.getrandbits(1), rb(32)),
                             codec.encode_cs_sig(rb(32), rb(32)))

    def next_wire_reference(self):
        self.wire_reference += 1
        return self.wire_reference

    # -- key material and fees -----------------------------------------------
    def load_fees(self, conn):
        for method, start, end, wire_fee, closing_fee in conn.execute(
                "SELECT wire_method, start_date, end_date, "
                "(wire_fee).val * 100000000 + (wire_fee).frac, "
                "(closing_fee).val * 100000000 + (closing_fee).frac "
                "FROM exchange.wire_fee ORDER BY start_date"):
            self.fees.wire.setdefault(method, []).append((start, end, wire_fee, closing_fee))
        for row in conn.execute(
                "SELECT start_date, end_date, "
                "(history_fee).val * 100000000 + (history_fee).frac, "
                "(account_fee).val * 100000000 + (account_fee).frac "
                "FROM exchange.global_fee ORDER BY start_date"):
            self.fees.glob.append(tuple(row))
        # Both kinds of incoming transfer draw from one counter of bank transfer ids.
        self.wire_reference = conn.execute(
            "SELECT GREATEST((SELECT COALESCE(max(wire_reference), 0) FROM exchange.reserves_in),"
            " (SELECT COALESCE(max(wire_reference), 0) FROM exchange.kycauths_in))").fetchone()[0]

    def ensure_fees(self, t_from, t_to):
        """Fee rows for every fee year touching [t_from, t_to] that no row covers yet."""
        for k in range(t_from // FEE_PERIOD, t_to // FEE_PERIOD + 1):
            start, end = k * FEE_PERIOD, (k + 1) * FEE_PERIOD
            for method in WIRE_METHODS:
                rows = self.fees.wire[method]
                if any(r[0] < end and start < r[1] for r in rows):
                    continue
                wire_fee, closing_fee = wire_fee_of_period(k)
                self.put("wire_fee", self.w.serial("wire_fee"), method, start, end, wire_fee,
                         closing_fee, self.master_sign(
                             "wire_fee.master_sig", wire_method=method, start_date=start,
                             end_date=end, wire_fee=A(wire_fee), closing_fee=A(closing_fee)))
                rows.append((start, end, wire_fee, closing_fee))
                rows.sort()
            if not any(r[0] < end and start < r[1] for r in self.fees.glob):
                history_fee, account_fee, purse_fee = global_fee_of_period(k)
                self.put("global_fee", self.w.serial("global_fee"), start, end, history_fee,
                         account_fee, purse_fee, 30 * DAY, YEAR, 5, self.master_sign(
                             "global_fee.master_sig", start_date=start, end_date=end,
                             purse_timeout=30 * DAY, history_expiration=YEAR,
                             history_fee=A(history_fee), account_fee=A(account_fee),
                             purse_fee=A(purse_fee), purse_account_limit=5))
                self.fees.glob.append((start, end, history_fee, account_fee))
                self.fees.glob.sort()

    def ensure_extensions(self, conn):
        have = {r[0] for r in conn.execute("SELECT name FROM exchange.extensions")}
        for name in sorted(EXTENSIONS):
            if name not in have:
                self.put("extensions", self.w.serial("extensions"), name,
                         _json(EXTENSIONS[name]).encode())

    def create_denominations(self, valid_from, expire_withdraw, with_revoked=True):
        """One key generation: eight coin values, two age-restricted, one to be revoked."""
        values = [10 * CENT, 50 * CENT, 1 * UNIT, 2 * UNIT, 5 * UNIT, 10 * UNIT, 20 * UNIT,
                  50 * UNIT]
        specs = [(v, 0, v in (50 * CENT, 2 * UNIT), False) for v in values]
        specs += [(1 * UNIT, AGE_MASK, False, False), (5 * UNIT, AGE_MASK, False, False)]
        if with_revoked:
            specs.append((1 * UNIT, 0, False, True))
        expire_deposit = expire_withdraw + 2 * YEAR
        expire_legal = expire_deposit + 6 * YEAR
        made = []
        for value, age_mask, cs, revoked in specs:
            fees = (CENT if value < 5 * UNIT else 2 * CENT,
                    CENT if value < 10 * UNIT else 2 * CENT, CENT, CENT)
            serial = self.w.serial("denominations")
            key = self.keys.denomination(serial, cs, age_mask)
            terms = denom_terms(key, valid_from, expire_withdraw, expire_deposit, expire_legal,
                                value, fees)
            # denom_type keeps Taler's default 1 even for CS: the exchange never
            # writes it; the cipher is in denom_pub.
            self.put("denominations", serial, None, 1, age_mask, key.denom_pub,
                     self.master_sign("denominations.master_sig", **terms),
                     valid_from, expire_withdraw, expire_deposit, expire_legal, value, *fees)
            d = Denomination(serial, value, fees, revoked, age_mask, cs, valid_from,
                             expire_withdraw, key)
            self.denom_terms[serial] = terms
            made.append(d)
            if revoked:
                self.put("denomination_revocations",
                         self.w.serial("denomination_revocations"), serial,
                         self.master_sign("denomination_revocations.master_sig",
                                          denom_pub_hash=key.denom_pub_hash))
        self.add_denominations(made)
        return made

    def add_denominations(self, denoms):
        self.all_denoms += denoms
        self.revoked += [d for d in denoms if d.revoked]
        self.age_denoms += [d for d in denoms if d.age_mask and not d.revoked]
        self.denoms += [d for d in denoms if not d.age_mask and not d.revoked]
        self.denoms.sort(key=lambda d: -d.value)

    def create_auditors(self, t, denoms):
        for i, active in enumerate((True, False)):
            uuid = self.w.serial("auditors")
            seed, pub = self.keypair()
            url = f"https://auditor{uuid}.example.com/"
            self.put("auditors", uuid, pub, f"Auditor {uuid}", url, active,
                     t - (i + 1) * 30 * DAY)
            for d in denoms if active else denoms[::2]:
                if active and self.forger is not None and self.forger.skip_auditor_sig(d):
                    continue
                self.put("auditor_denom_sigs", self.w.serial("auditor_denom_sigs"), uuid,
                         d.serial, self.sign("auditor_denom_sigs.auditor_sig", seed,
                                             auditor_url=url, **self.denom_terms[d.serial]))

    def create_sign_keys(self, t_from, t_to):
        first = None
        t = t_from
        while t < t_to:
            esk = self.w.serial("exchange_sign_keys")
            first = first or esk
            _, pub = self.keypair()
            self.esk_pubs[esk] = pub
            self.put("exchange_sign_keys", esk, pub, self.master_sign(
                "exchange_sign_keys.master_sig", valid_from=t, expire_sign=t + 45 * DAY,
                expire_legal=t + 2 * YEAR, exchange_pub=pub), t, t + 45 * DAY, t + 2 * YEAR)
            t += 30 * DAY
        self.put("signkey_revocations", self.w.serial("signkey_revocations"), first,
                 self.master_sign("signkey_revocations.master_sig",
                                  exchange_pub=self.esk_pubs[first]))

    def create_partners(self, t):
        rng = self.rng
        for i in range(2):
            serial = self.w.serial("partners")
            url = f"https://exchange{serial}.partner{i}.example.org/"
            wad_fee = CENT
            self.put("partners", serial, rng.key32(), t - YEAR, t + YEAR, 0, HOUR, wad_fee,
                     rng.key64(), url)
            self.partners.append((serial, url, wad_fee))

    def profit_drain(self, t):
        rng = self.rng
        wtid = rng.key32()
        payto = "payto://iban/CH9300762011623852957?receiver-name=Exchange+Operator"
        amount = rng.between(10, 500) * UNIT + rng.between(0, 100) * CENT
        self.put("profit_drains", self.w.serial("profit_drains"), wtid, ACCOUNT_SECTION, payto, t,
                 amount, self.master_sign("profit_drains.master_sig", wtid=wtid, trigger_date=t,
                                          amount=A(amount), account_section=ACCOUNT_SECTION,
                                          payto_uri=payto),
                 t < self.now - HOUR)

    # -- accounts and KYC ----------------------------------------------------
    def wire_target(self, payto, t, kyc_pub=False):
        """A bank account; with ``kyc_pub`` its owner proved control by a KYC auth transfer."""
        rng = self.rng
        serial = self.w.serial("wire_targets")
        token = rng.key32()
        account_pub = rng.key32() if kyc_pub else None
        self.put("wire_targets", serial, None, payto, token, account_pub, None, None)
        h = h_payto(payto)
        if kyc_pub:
            self.put("kycauths_in", self.w.serial("kycauths_in"), account_pub,
                     self.next_wire_reference(), CENT, h, ACCOUNT_SECTION, t)
        return h, token

    def kyc(self, payto, token, t):
        """A KYC measure, its provider process and the AML outcome for an account."""
        rng = self.rng
        h = h_normalized_payto(payto)     # KYC tables key accounts by the normalized hash
        measure = self.w.serial("legitimization_measures")
        self.put("legitimization_measures", measure, token, t,
                 _json({"measures": [{"check_name": "form-identity", "context": {}}],
                        "is_and_combinator": False, "verboten": False}), 1, True)
        process = self.w.serial("legitimization_processes")
        self.put("legitimization_processes", process, h, t + MINUTE, t + YEAR, measure, 0,
                 "kycaid", f"user-{rng.getrandbits(48):012x}",
                 f"legi-{rng.getrandbits(64):016x}",
                 f"https://kyc.example.com/redirect/{process}", 0, None)
        self.put("legitimization_outcomes", self.w.serial("legitimization_outcomes"), h,
                 t + HOUR, t + YEAR, _json({"FILE_NOTE": "identity verified", "PEP": False}),
                 False, _json({"rules": [], "new_measures": None, "custom_measures": {}}),
                 True, None)

    def new_merchant(self, t):
        rng = self.rng
        n = len(self.merchants) + 1
        tag = rng.getrandbits(40)
        payto = iban_payto(rng, f"Shop+{n}", bic=(tag % 5 == 0))
        seed, pub = self.keypair()
        m = Merchant(pub, payto, seed)
        _, token = self.wire_target(payto, t, kyc_pub=True)
        self.kyc(payto, token, t)
        self.merchants.append(m)
        return m

    def pick_merchant(self):
        # A few big shops take most payments (Zipf-like).
        n = len(self.merchants)
        return self.merchants[min(n - 1, int(n * self.rng.random() ** 2.5))]

    def customer(self, t, kyc=False):
        rng = self.rng
        if self.customers and rng.random() < 0.6 and not kyc:
            return self.customers[int(rng.random() * len(self.customers))]
        n = len(self.customers) + 1
        tag = rng.getrandbits(40)
        payto = (f"payto://x-taler-bank/bank.demo.taler.net/customer{tag:010x}"
                 f"?receiver-name=Customer+{n}")
        h, token = self.wire_target(payto, t, kyc_pub=kyc)
        if kyc:
            self.kyc(payto, token, t)
        entry = (h, payto)
        self.customers.append(entry)
        return entry

    # -- reserves --------------------------------------------------------------
    def open_reserve(self, origin=None):
        seed, pub = self.keypair()
        return Reserve(pub, self.w.serial("reserves"), origin, seed)

    def credit_wire(self, res, amount, t):
        """reserves_in: the customer's bank transfer into the reserve."""
        self.put("reserves_in", self.w.serial("reserves_in"), res.pub,
                 self.next_wire_reference(), amount, res.origin[0], ACCOUNT_SECTION, t)
        self._credit(res, amount, t)

    def _credit(self, res, amount, t):
        res.credit += amount
        res.last_activity = max(res.last_activity, t)

    def _debit(self, res, amount, t):
        res.debit += amount
        res.last_activity = max(res.last_activity, t)
        res.last_debit = max(res.last_debit, t)

    def withdraw(self, res, denom, t):
        serial = self.w.serial("reserves_out")
        coin = self.new_coin(denom, serial)
        planchet = self.make_coin(denom.key, coin.pub, coin.bks, coin.age_hash)
        coin.sig = planchet.coin_sig
        self.put("reserves_out", serial, planchet.h_coin_ev, denom.serial, planchet.blind_sig,
                 res.uuid, self.sign("reserves_out.reserve_sig", res.priv,
                                     amount_with_fee=A(denom.cost), denom_pub_hash=denom.h,
                                     h_blind_ev=planchet.h_coin_ev), t, denom.cost)
        self._debit(res, denom.cost, t)
        return coin

    def new_coin(self, denom, withdraw_serial=None):
        """A coin's keys and blinding secret (not yet signed)."""
        seed, pub = self.keypair()
        coin = Coin(pub, denom, withdraw_serial, seed)
        coin.bks = self.rng.key32()
        if denom.age_mask:
            coin.age_hash = self.rng.key32()
        return coin

    def history_request(self, res, t):
        fee = self.fees.history_fee(t)
        self.put("history_requests", self.w.serial("history_requests"), res.pub, t,
                 self.rng.key64(), fee)
        self._debit(res, fee, t)

    def open_request(self, res, t, payment):
        res.open_sig = self.sign("reserves_open_requests.reserve_sig", res.priv,
                                 reserve_payment=A(payment), request_timestamp=t,
                                 expiration_date=t + YEAR, requested_purse_limit=3)
        self.put("reserves_open_requests", self.w.serial("reserves_open_requests"), res.pub, t,
                 t + YEAR, res.open_sig, payment, 3)
        self._debit(res, payment, t)
        res.expiration = max(res.expiration or 0, t + YEAR)

    def open_deposit(self, res, coin, t, contribution):
        """A coin paying towards opening a reserve (credit to the reserve; see economics.md)."""
        self.put("reserves_open_deposits", self.w.serial("reserves_open_deposits"),
                 res.open_sig, res.pub, coin.pub,
                 self.sign("reserves_open_deposits.coin_sig", coin.priv, reserve_sig=res.open_sig,
                           contribution=A(contribution)), contribution)
        self._credit(res, contribution, t)
        self.know(coin)

    def close_request(self, res, t, payto):
        """The owner asks to close the reserve and have the balance wired to ``payto``."""
        fee = min(self.fees.closing_fee(t), res.balance)
        serial = self.w.serial("close_requests")
        self.put("close_requests", serial, res.pub, t,
                 self.sign("close_requests.reserve_sig", res.priv, close_timestamp=t,
                           close_h_payto=h_payto(payto), payto_uri=payto),
                 res.balance - fee, fee, payto, True)
        self.close(res, t + self.rng.between(MINUTE, HOUR), h_payto(payto), serial)

    def close(self, res, t, target_h_payto, request_row=0):
        fee = min(self.fees.closing_fee(t), res.balance)
        self.put("reserves_close", self.w.serial("reserves_close"), res.pub, t,
                 self.rng.key32(), target_h_payto, res.balance - fee, fee, request_row)
        self._debit(res, res.balance, t)
        res.closed = True

    def finish_reserve(self, res):
        """Close what expired with money left, then write the reserve with its balance."""
        now = self.now
        expiration = max(res.expiration or 0, res.last_activity + IDLE_RESERVE_EXPIRATION)
        if res.balance > 0 and not res.closed:
            close_at = expiration + self.rng.between(MINUTE, HOUR)
            if close_at < now - MINUTE:
                if res.origin is not None:
                    self.close(res, close_at, res.origin[0])
                else:
                    # No incoming transfer to send it back to: the owner had to ask.
                    owner = self.customer(res.last_activity)
                    self.close_request(res, res.last_activity + DAY, owner[1])
            elif expiration < now + MARGIN:
                # Kept open (an "open" request or activity the model does not show).
                expiration = now + MARGIN + self.rng.between(0, WEEK)
        res.expiration = expiration
        gc_date = res.gc_date or res.last_activity + LEGAL_RESERVE_EXPIRATION
        stored = max(res.balance, 0) + res.balance_offset
        self.put("reserves", res.uuid, res.pub, expiration, gc_date, stored, 0, 0, 0)
        if self.hooks is not None:
            self.hooks.reserve_written(res, stored)

    # -- coins -----------------------------------------------------------------
    def know(self, coin):
        if coin.known_id is None:
            coin.known_id = self.w.serial("known_coins")

    def write_coin(self, coin):
        if coin.known_id is not None:
            if coin.sig is None and not self.signed:
                coin.sig = self.make_coin(coin.denom.key, coin.pub, b"", None).coin_sig
            if coin.sig is None:
                coin.sig = catalog.get("known_coins.denom_sig").sign(
                    {"coin_pub": coin.pub, "age_commitment_hash": coin.age_hash}, self.ctx,
                    coin.denom.key)
            if self.forge("known_coins.denom_sig"):
                # The denomination's real signature, on another coin.
                coin.sig = catalog.get("known_coins.denom_sig").sign(
                    {"coin_pub": self.rng.key32(), "age_commitment_hash": coin.age_hash},
                    self.ctx, coin.denom.key)
                self.forged["known_coins.denom_sig"] = coin.sig
            self.put("known_coins", coin.known_id, coin.denom.serial, coin.pub, coin.sig,
                     coin.age_hash, max(coin.remaining, 0))

    def batch_deposit(self, merchant, t, coins_amounts, refund=False, policy=None,
                      wire_delay=None, pending=None):
        """A merchant's deposit of several coins for one contract.

        ``pending`` None: aggregated (done) iff its wire deadline passed before
        ``now``, as the bulk history wants; True: left for the caller's
        aggregator.  Returns (serial, coin deposit serials, net to wire, wire deadline).
        """
        rng = self.rng
        now = self.now
        serial = self.w.serial("batch_deposits")
        if wire_delay is None:
            wire_delay = rng.choice((DAY, 2 * DAY, 3 * DAY, WEEK, 2 * WEEK))
        wire_deadline = t + wire_delay
        refund_deadline = t + min(wire_delay, rng.choice((HOUR, DAY) if refund else (0, HOUR, DAY)))
        # What the wallet signs for each coin (the contract, the merchant's account).
        wallet_timestamp = t - rng.between(0, MINUTE)
        h_contract = rng.key64()
        wallet_data_hash = rng.key64() if rng.random() < 0.3 else None
        wire_salt = rng.randbytes(16)
        net = 0
        rows = []
        for coin, amount in coins_amounts:
            self.know(coin)
            coin.spent += amount
            if coin.spent >= coin.denom.value:
                coin.fully_spent_by_deposit = True
            net += amount - coin.denom.fee_deposit
            coin_sig = self.sign(
                "coin_deposits.coin_sig", coin.priv, h_contract_terms=h_contract,
                age_commitment_hash=coin.age_hash, payto_uri=merchant.payto, wire_salt=wire_salt,
                denom_pub_hash=coin.denom.h, wallet_timestamp=wallet_timestamp,
                refund_deadline=refund_deadline, amount_with_fee=A(amount),
                fee_deposit=A(coin.denom.fee_deposit), merchant_pub=merchant.pub,
                wallet_data_hash=wallet_data_hash)
            rows.append((self.w.serial("coin_deposits"), serial, coin.pub, coin_sig, amount))
        for row in rows:
            self.put("coin_deposits", *row)
        if self.confirmations is not None and serial % 8 == 0:
            self.confirmations.append(deposit_confirmation(
                serial, h_contract, hashes.merchant_wire_hash(merchant.payto, wire_salt), t,
                refund_deadline, wire_deadline, net, [r[2] for r in rows], [r[3] for r in rows],
                merchant.pub))
        policy_serial, blocked = None, False
        if policy is not None:
            policy_serial, blocked = self.policy(t, net, fulfilled=(policy == "fulfilled"))
        if refund and refund_deadline > t:
            coin, amount = coins_amounts[0]
            refund_at = t + rng.between(0, refund_deadline - t)
            give_back = (amount - coin.denom.fee_deposit) // 2 // CENT * CENT
            if amount >= UNIT and give_back >= CENT and (pending or refund_at < now - MINUTE):
                self.put("refunds", self.w.serial("refunds"), coin.pub, serial,
                         self.sign("refunds.merchant_sig", merchant.priv,
                                   h_contract_terms=h_contract, coin_pub=coin.pub,
                                   rtransaction_id=1, amount_with_fee=A(give_back)),
                         1, give_back)
                coin.spent -= give_back
                net -= give_back
        aggregate = False
        if pending is None:
            aggregate = wire_deadline < now - HOUR and not blocked
            if not aggregate and wire_deadline < now + MARGIN:
                wire_deadline = now + MARGIN + rng.between(0, WEEK)
            if aggregate:
                self.due.append((merchant, wire_deadline, serial, net))
        self.put("batch_deposits", serial, merchant.shard, merchant.pub,
                 wallet_timestamp, t, refund_deadline, wire_deadline, h_contract,
                 wallet_data_hash, wire_salt, merchant.h_payto, blocked, policy_serial,
                 self.sign("batch_deposits.merchant_sig", merchant.priv,
                           h_contract_terms=h_contract), aggregate)
        return serial, [row[0] for row in rows], net, wire_deadline

    def policy(self, t, amount, fulfilled=True):
        rng = self.rng
        serial = self.w.serial("policy_details")
        code = rng.key32()
        proof_hash = None
        if fulfilled:
            proof = _json({"escrow": "released", "ref": rng.getrandbits(32)})
            proof_hash = hashcode(proof)
            self.put("policy_fulfillments", self.w.serial("policy_fulfillments"), t + HOUR,
                     proof, proof_hash, [code])
        self.put("policy_details", serial, code,
                 _json({"type": "escrowed_payment", "deadline_us": t + WEEK}), t + WEEK,
                 amount, amount, 0, amount if fulfilled else 0, 3 if fulfilled else 2,
                 proof_hash)
        return serial, not fulfilled

    def melt(self, coin, t, fresh_denoms_first=()):
        """Refresh the coin's remaining value into fresh coins; returns
        [(denom, rrc serial, fresh coin)]."""
        rng = self.rng
        self.know(coin)
        amount = coin.remaining
        melt = self.w.serial("refresh_commitments")
        rc = rng.key64()
        self.put("refresh_commitments", melt, rc, coin.pub,
                 self.sign("refresh_commitments.old_coin_sig", coin.priv, rc=rc,
                           denom_pub_hash=coin.denom.h, age_commitment_hash=coin.age_hash,
                           amount_with_fee=A(amount), fee_refresh=A(coin.denom.fee_refresh)),
                 amount, rng.randrange(3))
        coin.spent += amount
        if self.hooks is not None and self.hooks.hang_refresh(melt, amount):
            return []           # the reveal never comes
        budget = amount - coin.denom.fee_refresh
        fresh = []
        for d in list(fresh_denoms_first) + self.denoms:
            while budget >= d.cost and len(fresh) < 5:
                fresh.append(d)
                budget -= d.cost
                if d.revoked:
                    break
            if len(fresh) >= 5:
                break
        out = []
        _, transfer_pub = self.keypair()
        for i, d in enumerate(fresh):
            rrc = self.w.serial("refresh_revealed_coins")
            new = self.new_coin(d)
            planchet = self.make_coin(d.key, new.pub, new.bks, new.age_hash, melt=True)
            new.sig = planchet.coin_sig
            ev_sig = planchet.blind_sig
            if self.forge("refresh_revealed_coins.ev_sig"):
                # The denomination's blind signature of another planchet.
                ev_sig = d.key.make_coin(self.rng.key32(), self.rng.key32(), melt=True).blind_sig
                self.forged["refresh_revealed_coins.ev_sig"] = ev_sig
            self.put("refresh_revealed_coins", rrc, melt, i,
                     self.sign("refresh_revealed_coins.link_sig", coin.priv, denom_pub_hash=d.h,
                               transfer_pub=transfer_pub, coin_ev=planchet.coin_ev),
                     d.serial, planchet.coin_ev, None, ev_sig, planchet.ewv)
            out.append((d, rrc, new))
        self.put("refresh_transfer_keys", self.w.serial("refresh_transfer_keys"), melt,
                 transfer_pub, rng.randbytes(64))
        return out

    def recoup(self, coin, res, t):
        self.know(coin)
        amount = coin.remaining
        self.put("recoup", self.w.serial("recoup"), coin.pub,
                 self.sign("recoup.coin_sig", coin.priv, denom_pub_hash=coin.denom.h,
                           coin_blind=coin.bks), coin.bks, amount, t, coin.withdraw_serial)
        coin.spent += amount
        self._credit(res, amount, t)

    def recoup_refresh(self, fresh, old, rrc, t):
        self.know(fresh)
        self.know(old)
        amount = fresh.remaining
        self.put("recoup_refresh", self.w.serial("recoup_refresh"), fresh.pub, old.known_id,
                 self.sign("recoup_refresh.coin_sig", fresh.priv, denom_pub_hash=fresh.denom.h,
                           coin_blind=fresh.bks), fresh.bks, amount, t, rrc)
        fresh.spent += amount
        old.spent -= amount

    # -- purses and wads -------------------------------------------------------
    def purse(self, coins, t, partner=None, unpaid=0):
        """A p2p push payment: coins into a purse; returns (purse_pub, amount, h_contract).

        ``unpaid`` (sim/inject.py only): the purse asks for that much more than the coins pay.
        """
        rng = self.rng
        seed, pub = self.keypair()
        merge_seed, merge_pub = self.keypair()
        h_contract = rng.key64()
        amount = sum(c.denom.value - c.denom.fee_deposit for c in coins) + unpaid
        partner_url = None
        if partner is not None:
            partner_url = next(p[1] for p in self.partners if p[0] == partner)
        rows = []
        for coin in coins:
            self.know(coin)
            coin.spent += coin.denom.value
            rows.append((self.w.serial("purse_deposits"), partner, pub, coin.pub,
                         coin.denom.value,
                         self.sign("purse_deposits.coin_sig", coin.priv,
                                   amount_with_fee=A(coin.denom.value),
                                   denom_pub_hash=coin.denom.h,
                                   age_commitment_hash=coin.age_hash, purse_pub=pub,
                                   partner_serial_id=partner, partner_base_url=partner_url)))
        self.put("purse_requests", self.w.serial("purse_requests"), pub, merge_pub, t,
                 t + WEEK, h_contract, 0, 0, amount, 0,
                 self.purse_sig(seed, pub, merge_seed, merge_pub, t + WEEK, amount, h_contract),
                 False, True, amount)
        for row in rows:
            self.put("purse_deposits", *row)
        return pub, amount, h_contract

    def purse_sig(self, seed, pub, merge_seed, merge_pub, expiration, amount, h_contract,
                  age_limit=0, flags=0, purse_fee=0):
        """purse_requests.purse_sig; remembers what the purse's merges sign."""
        self.purses[pub] = {"merge_seed": merge_seed, "merge_pub": merge_pub,
                            "purse_expiration": expiration, "amount_with_fee": A(amount),
                            "purse_fee": A(purse_fee), "h_contract_terms": h_contract,
                            "age_limit": age_limit, "flags": flags}
        return self.sign("purse_requests.purse_sig", seed, purse_expiration=expiration,
                         amount_with_fee=A(amount), h_contract_terms=h_contract,
                         merge_pub=merge_pub, age_limit=age_limit)

    def merge_sig(self, purse_pub, reserve_pub, t, partner=None):
        """purse_merges.merge_sig of a merge into ``reserve_pub`` at time ``t``."""
        url = next(p[1] for p in self.partners if p[0] == partner) if partner else None
        return self.sign("purse_merges.merge_sig", self.purses[purse_pub]["merge_seed"],
                         merge_timestamp=t, purse_pub=purse_pub, reserve_pub=reserve_pub,
                         partner_serial_id=partner, partner_base_url=url)

    def expired_purse(self, t, decided=None):
        """A purse nobody paid into; decided (refunded, nothing to refund) once expired
        (``decided`` False: never, sim/inject.py only).  Returns its purse_requests serial."""
        rng = self.rng
        seed, pub = self.keypair()
        merge_seed, merge_pub = self.keypair()
        expiration = t + DAY
        if decided is None:
            decided = expiration + HOUR < self.now
        serial = self.w.peek_serial("purse_requests")
        h_contract = rng.key64()
        amount = rng.between(1, 20) * UNIT
        self.put("purse_requests", self.w.serial("purse_requests"), pub, merge_pub, t,
                 expiration, h_contract, 0, 0, amount, 0,
                 self.purse_sig(seed, pub, merge_seed, merge_pub, expiration, amount, h_contract),
                 False, decided, 0)
        if decided:
            self.put("purse_decision", self.w.serial("purse_decision"), pub,
                     expiration + rng.between(SECOND, HOUR), True)
        return serial

    def merge_local(self, purse_pub, amount, t):
        """The purse merged into a new reserve of this exchange."""
        res = self.open_reserve()
        self.put("purse_merges", self.w.serial("purse_merges"), None, res.pub, purse_pub,
                 self.merge_sig(purse_pub, res.pub, t), t)
        wallet_payto = f"payto://taler-reserve/exchange.demo.taler.net/{res.pub.hex()}"
        p = self.purses[purse_pub]
        self.put("account_merges", self.w.serial("account_merges"), res.pub,
                 self.sign("account_merges.reserve_sig", res.priv,
                           purse_expiration=p["purse_expiration"],
                           amount_with_fee=p["amount_with_fee"], purse_fee=p["purse_fee"],
                           h_contract_terms=p["h_contract_terms"], purse_pub=purse_pub,
                           merge_timestamp=t, age_limit=p["age_limit"], flags=p["flags"]),
                 purse_pub, h_normalized_payto(wallet_payto))
        self.put("purse_decision", self.w.serial("purse_decision"), purse_pub, t, False)
        self._credit(res, amount, t)
        return res

    def merge_remote(self, purse_pub, amount, h_contract, t, deposit_fees):
        """The purse merged into a reserve at a partner exchange: a wad goes out."""
        rng = self.rng
        serial, _, wad_fee = self.partners[int(rng.random() * len(self.partners))]
        remote_reserve = rng.key32()
        self.put("purse_merges", self.w.serial("purse_merges"), serial, remote_reserve,
                 purse_pub, self.merge_sig(purse_pub, remote_reserve, t, serial), t)
        self.put("purse_decision", self.w.serial("purse_decision"), purse_pub, t, False)
        wad = self.w.serial("wads_out")
        wad_time = t + rng.between(MINUTE, HOUR)
        self.put("wads_out", wad, rng.randbytes(24), serial, max(amount - wad_fee, 0), wad_time)
        self.put("wad_out_entries", self.w.serial("wad_out_entries"), wad, remote_reserve,
                 purse_pub, h_contract, t + WEEK, t, amount, wad_fee, deposit_fees,
                 rng.key64(), rng.key64())

    def wad_in(self, t, n_entries):
        """A partner exchange's wad crediting new reserves here; returns the reserves."""
        rng = self.rng
        _, url, wad_fee = self.partners[int(rng.random() * len(self.partners))]
        wad = self.w.serial("wads_in")
        reserves, entries, total = [], [], 0
        for _ in range(n_entries):
            res = self.open_reserve()
            amount = rng.between(1, 30) * UNIT + rng.between(0, 100) * CENT
            entries.append((self.w.serial("wad_in_entries"), wad, res.pub, rng.key32(),
                            rng.key64(), t + WEEK, t - HOUR, amount, wad_fee, 2 * CENT,
                            rng.key64(), rng.key64()))
            self._credit(res, amount, t)
            reserves.append(res)
            total += amount
        self.put("wads_in", wad, rng.randbytes(24), url, total, t)
        for row in entries:
            self.put("wad_in_entries", *row)
        return reserves

    # -- aggregation -----------------------------------------------------------
    def aggregate(self, due=None, execution_at=None):
        """Wire each merchant's due deposits, one transfer per merchant and day."""
        rng = self.rng
        due = self.due if due is None else due
        groups = {}
        for merchant, deadline, serial, net in due:
            groups.setdefault((merchant.h_payto, deadline // DAY), []).append(
                (merchant, deadline, serial, net))
        plans = []
        for key in sorted(groups):
            items = groups[key]
            last = max(i[1] for i in items)
            if execution_at is not None:
                t = execution_at
            else:
                t = last + rng.between(SECOND, min(50 * MINUTE, self.now - last - SECOND))
            plans.append((t, key, items))
        plans.sort(key=lambda p: (p[0], p[1]))
        wired = []
        plant_at = len(plans) // 2      # a planted mismatch hides mid-batch
        for i, (t, _, items) in enumerate(plans):
            target = items[0][0]
            planted = None
            if self.hooks is not None and len(items) == 1:
                # sim/inject.py may send it elsewhere or too early (one aggregation row).
                planted, t, target = self.hooks.wire_out_plan(self, items[0], t)
            expected = sum(i[3] for i in items) - self.fees.wire_fee(t, payto_method(target.payto))
            if expected <= 0:
                raise AssertionError("aggregation below the wire fee; the model is inconsistent")
            wtid = rng.key32()
            serial = self.w.serial("wire_out")
            claimed = expected
            if self.hooks is not None and i == plant_at and planted is None:
                claimed = self.hooks.wire_out_amount(serial, expected)
            self.put("wire_out", serial, t, wtid, target.h_payto, ACCOUNT_SECTION, claimed)
            for _, _, batch, _ in sorted(items, key=lambda i: i[2]):
                row = self.w.serial("aggregation_tracking")
                self.put("aggregation_tracking", row, batch, wtid)
            if planted is not None:
                self.hooks.wire_out_planted(planted, row, serial, items[0], t, target)
            wired.append((serial, items))
        if due is self.due:
            self.due = []
        return wired
