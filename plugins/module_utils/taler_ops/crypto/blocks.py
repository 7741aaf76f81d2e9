"""The signed block ("purpose") of every signature stored in the 44 replicated tables.

Arguments are column values as PostgreSQL returns them: INT8 times in µs,
amounts as (val, frac), hashes and keys as bytes, strings as str.  ``cur`` is
``[exchange] CURRENCY`` (checked by ``encoding.check_currency``), because the
database's amounts carry none.  Field order and sizes follow
taler-signatures.md §3; the purpose numbers its §2 (GANA registry).
"""

from typing import Unpack

from . import crockford
from .encoding import ZERO32, Amount, amount_nbo, block, relative_time, timestamp, u32, u64
from .hashes import hash_str, payto_hash

# Purpose numbers (GANA gnunet-signatures registry).
MASTER_DRAIN_PROFIT = 1018
MASTER_SIGNING_KEY_REVOKED = 1020
MASTER_GLOBAL_FEES = 1022
MASTER_SIGNING_KEY_VALIDITY = 1024
MASTER_DENOMINATION_KEY_VALIDITY = 1025
MASTER_WIRE_FEES = 1028
MASTER_DENOMINATION_KEY_REVOKED = 1029
AUDITOR_EXCHANGE_KEYS = 1064
MERCHANT_CONTRACT = 1101
MERCHANT_REFUND = 1102
WALLET_RESERVE_WITHDRAW = 1200
WALLET_COIN_DEPOSIT = 1201
WALLET_COIN_MELT = 1202
WALLET_COIN_RECOUP = 1203
WALLET_COIN_LINK = 1204
WALLET_COIN_RECOUP_REFRESH = 1206
WALLET_RESERVE_HISTORY = 1208
WALLET_PURSE_CREATE = 1210
WALLET_PURSE_DEPOSIT = 1211
WALLET_PURSE_MERGE = 1213
WALLET_ACCOUNT_MERGE = 1214
WALLET_RESERVE_CLOSE = 1215
WALLET_RESERVE_OPEN = 1217
WALLET_RESERVE_OPEN_DEPOSIT = 1218


def _b(value: bytes, length: int) -> bytes:
    """A fixed-size binary field; a wrong length would silently shift every
    later field, so it is an error."""
    data = bytes(value)
    if len(data) != length:
        raise ValueError(f"field of {len(data)} bytes, expected {length}")
    return data


def _opt(value: bytes | None, length: int) -> bytes:
    """An optional hash: absent (NULL) is signed as zeros."""
    return bytes(length) if value is None else _b(value, length)


# The terms a denomination signature covers, in their order: valid_from, expire_withdraw,
# expire_deposit, expire_legal, coin, fee_withdraw, fee_deposit, fee_refresh, fee_refund,
# denom_pub_hash.
DenomTerms = tuple[int, int, int, int, Amount, Amount, Amount, Amount, Amount, bytes]


def _denom_terms(cur: str, valid_from: int, expire_withdraw: int, expire_deposit: int,
                 expire_legal: int, coin: Amount, fee_withdraw: Amount, fee_deposit: Amount,
                 fee_refresh: Amount, fee_refund: Amount,
                 denom_pub_hash: bytes) -> tuple[bytes, ...]:
    # Shared by the master's and the auditor's denomination signatures.
    return (timestamp(valid_from), timestamp(expire_withdraw), timestamp(expire_deposit),
            timestamp(expire_legal), amount_nbo(coin, cur), amount_nbo(fee_withdraw, cur),
            amount_nbo(fee_deposit, cur), amount_nbo(fee_refresh, cur),
            amount_nbo(fee_refund, cur), _b(denom_pub_hash, 64))


# --- offline (master key) signatures ------------------------------------------

def denomination_validity(cur: str, master_pub: bytes, *terms: Unpack[DenomTerms]) -> bytes:
    """denominations.master_sig; ``terms`` = valid_from, expire_withdraw,
    expire_deposit, expire_legal, coin, fee_withdraw, fee_deposit, fee_refresh,
    fee_refund, denom_pub_hash."""
    return block(MASTER_DENOMINATION_KEY_VALIDITY, _b(master_pub, 32), *_denom_terms(cur, *terms))


def auditor_denomination(cur: str, auditor_url: str, master_pub: bytes,
                         *terms: Unpack[DenomTerms]) -> bytes:
    """auditor_denom_sigs.auditor_sig (terms as for denomination_validity)."""
    return block(AUDITOR_EXCHANGE_KEYS, hash_str(auditor_url), _b(master_pub, 32),
                 *_denom_terms(cur, *terms))


def denomination_revoked(denom_pub_hash: bytes) -> bytes:
    return block(MASTER_DENOMINATION_KEY_REVOKED, _b(denom_pub_hash, 64))


def signkey_validity(valid_from: int, expire_sign: int, expire_legal: int,
                     exchange_pub: bytes) -> bytes:
    return block(MASTER_SIGNING_KEY_VALIDITY, timestamp(valid_from), timestamp(expire_sign),
                 timestamp(expire_legal), _b(exchange_pub, 32))


def signkey_revoked(exchange_pub: bytes) -> bytes:
    return block(MASTER_SIGNING_KEY_REVOKED, _b(exchange_pub, 32))


def wire_fee(cur: str, wire_method: str, start_date: int, end_date: int, fee: Amount,
             closing_fee: Amount) -> bytes:
    return block(MASTER_WIRE_FEES, hash_str(wire_method), timestamp(start_date),
                 timestamp(end_date), amount_nbo(fee, cur), amount_nbo(closing_fee, cur))


def global_fee(cur: str, start_date: int, end_date: int, purse_timeout: int,
               history_expiration: int, history_fee: Amount, account_fee: Amount, purse_fee: Amount,
               purse_account_limit: int) -> bytes:
    return block(MASTER_GLOBAL_FEES, timestamp(start_date), timestamp(end_date),
                 relative_time(purse_timeout), relative_time(history_expiration),
                 amount_nbo(history_fee, cur), amount_nbo(account_fee, cur),
                 amount_nbo(purse_fee, cur), u32(purse_account_limit))


def profit_drain(cur: str, wtid: bytes, trigger_date: int, amount: Amount, account_section: str,
                 payto_uri: str) -> bytes:
    return block(MASTER_DRAIN_PROFIT, _b(wtid, 32), timestamp(trigger_date),
                 amount_nbo(amount, cur), hash_str(account_section), payto_hash(payto_uri))


# --- reserves and coins --------------------------------------------------------

def withdraw(cur: str, amount_with_fee: Amount, denom_pub_hash: bytes, h_blind_ev: bytes) -> bytes:
    return block(WALLET_RESERVE_WITHDRAW, amount_nbo(amount_with_fee, cur),
                 _b(denom_pub_hash, 64), _b(h_blind_ev, 64))


def deposit(cur: str, h_contract_terms: bytes, age_commitment_hash: bytes | None,
            h_policy: bytes | None, h_wire: bytes, denom_pub_hash: bytes, wallet_timestamp: int,
            refund_deadline: int, amount_with_fee: Amount, deposit_fee: Amount, merchant_pub: bytes,
            wallet_data_hash: bytes | None) -> bytes:
    return block(WALLET_COIN_DEPOSIT, _b(h_contract_terms, 64), _opt(age_commitment_hash, 32),
                 _opt(h_policy, 64), _b(h_wire, 64), _b(denom_pub_hash, 64),
                 timestamp(wallet_timestamp), timestamp(refund_deadline),
                 amount_nbo(amount_with_fee, cur), amount_nbo(deposit_fee, cur),
                 _b(merchant_pub, 32), _opt(wallet_data_hash, 64))


def melt(cur: str, rc: bytes, old_denom_pub_hash: bytes, age_commitment_hash: bytes | None,
         amount_with_fee: Amount, melt_fee: Amount) -> bytes:
    return block(WALLET_COIN_MELT, _b(rc, 64), _b(old_denom_pub_hash, 64),
                 _opt(age_commitment_hash, 32), amount_nbo(amount_with_fee, cur),
                 amount_nbo(melt_fee, cur))


def link(new_denom_pub_hash: bytes, transfer_pub: bytes, h_coin_ev: bytes) -> bytes:
    # The 32 zero bytes are an age-commitment field the exchange never fills.
    return block(WALLET_COIN_LINK, _b(new_denom_pub_hash, 64), _b(transfer_pub, 32), ZERO32,
                 _b(h_coin_ev, 64))


def recoup(denom_pub_hash: bytes, coin_blind: bytes, refresh: bool = False) -> bytes:
    return block(WALLET_COIN_RECOUP_REFRESH if refresh else WALLET_COIN_RECOUP,
                 _b(denom_pub_hash, 64), _b(coin_blind, 32))


def reserve_open(cur: str, reserve_payment: Amount, request_timestamp: int, expiration_date: int,
                 requested_purse_limit: int) -> bytes:
    return block(WALLET_RESERVE_OPEN, amount_nbo(reserve_payment, cur),
                 timestamp(request_timestamp), timestamp(expiration_date),
                 u32(requested_purse_limit))


def reserve_open_deposit(cur: str, reserve_sig: bytes, contribution: Amount) -> bytes:
    return block(WALLET_RESERVE_OPEN_DEPOSIT, _b(reserve_sig, 64), amount_nbo(contribution, cur))


def reserve_close(close_timestamp: int, h_target_payto: bytes | None = None) -> bytes:
    """close_requests.reserve_sig; no target account is signed as zeros."""
    return block(WALLET_RESERVE_CLOSE, timestamp(close_timestamp), _opt(h_target_payto, 32))


def reserve_history(start_off: int) -> bytes:
    return block(WALLET_RESERVE_HISTORY, u64(start_off))


# --- merchants, purses, merges --------------------------------------------------

def contract(h_contract_terms: bytes) -> bytes:
    return block(MERCHANT_CONTRACT, _b(h_contract_terms, 64))


def refund(cur: str, h_contract_terms: bytes, coin_pub: bytes, rtransaction_id: int,
           amount_with_fee: Amount) -> bytes:
    return block(MERCHANT_REFUND, _b(h_contract_terms, 64), _b(coin_pub, 32),
                 u64(rtransaction_id), amount_nbo(amount_with_fee, cur))


def purse_create(cur: str, purse_expiration: int, amount_with_fee: Amount, h_contract_terms: bytes,
                 merge_pub: bytes, age_limit: int) -> bytes:
    return block(WALLET_PURSE_CREATE, timestamp(purse_expiration),
                 amount_nbo(amount_with_fee, cur), _b(h_contract_terms, 64), _b(merge_pub, 32),
                 u32(age_limit))


def reserve_payto(exchange_base_url: str, reserve_pub: bytes) -> str:
    """``TALER_reserve_make_payto``: payto://taler-reserve/HOST/PATH/KEY, or
    taler-reserve-http for an http:// exchange; the base URL's trailing / kept."""
    scheme, sep, rest = exchange_base_url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise ValueError(f"exchange base URL without http(s) scheme: {exchange_base_url!r}")
    method = "taler-reserve" if scheme.lower() == "https" else "taler-reserve-http"
    return f"payto://{method}/{rest}{crockford.encode(_b(reserve_pub, 32))}"


def purse_merge(merge_timestamp: int, purse_pub: bytes, exchange_base_url: str,
                reserve_pub: bytes) -> bytes:
    return block(WALLET_PURSE_MERGE, timestamp(merge_timestamp), _b(purse_pub, 32),
                 payto_hash(reserve_payto(exchange_base_url, reserve_pub)))


def purse_deposit(cur: str, amount_with_fee: Amount, denom_pub_hash: bytes,
                  age_commitment_hash: bytes | None, purse_pub: bytes,
                  exchange_base_url: str) -> bytes:
    return block(WALLET_PURSE_DEPOSIT, amount_nbo(amount_with_fee, cur), _b(denom_pub_hash, 64),
                 _opt(age_commitment_hash, 32), _b(purse_pub, 32), hash_str(exchange_base_url))


def account_merge(cur: str, purse_expiration: int, amount_with_fee: Amount, purse_fee: Amount,
                  h_contract_terms: bytes, purse_pub: bytes, merge_timestamp: int, min_age: int,
                  flags: int) -> bytes:
    return block(WALLET_ACCOUNT_MERGE, timestamp(purse_expiration),
                 amount_nbo(amount_with_fee, cur), amount_nbo(purse_fee, cur),
                 _b(h_contract_terms, 64), _b(purse_pub, 32), timestamp(merge_timestamp),
                 u32(min_age), u32(flags))
