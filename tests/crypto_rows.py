"""Valid sample rows for every entry of taler_ops.crypto.catalog (tests and bench).

``sample(name)`` returns (row without "sig", signing key, context).  The row has
exactly the columns the entry's query selects, with plausible values.
"""

import random

from taler_ops.crypto import eddsa
from taler_ops.crypto.context import SignatureContext
from taler_ops.crypto.hashes import coin_hash, payto_hash
from taler_ops.crypto.mint import DenominationKey

_rng = random.Random(17)


def rb(n):
    return bytes(_rng.getrandbits(8) for _ in range(n))


MASTER = rb(32)
CTX = SignatureContext("KUDOS", eddsa.public_key(MASTER), "https://exchange.example.com/")
T0 = 1700000000 * 10**6
_DENOMS = {}


def denomination(cipher="rsa", bits=1024):
    """A cached denomination key (RSA generation is slow)."""
    key = (cipher, bits)
    if key not in _DENOMS:
        # (bits only tells CS keys apart)
        _DENOMS[key] = (DenominationKey.new_rsa(bits) if cipher == "rsa"
                        else DenominationKey.new_cs(rb(32)))
    return _DENOMS[key]


def denom_terms(dk):
    return dict(valid_from=T0, expire_withdraw=T0 + 10**12, expire_deposit=T0 + 2 * 10**12,
                expire_legal=T0 + 3 * 10**12, coin=(5, 0), fee_withdraw=(0, 1000000),
                fee_deposit=(0, 2000000), fee_refresh=(0, 3000000), fee_refund=(0, 4000000),
                denom_pub=dk.denom_pub)


def sample(name, cipher="rsa"):
    """(row, key, ctx) for catalog entry ``name``; key signs the row via spec.sign."""
    dk = denomination(cipher)
    seed = rb(32)
    pub = eddsa.public_key(seed)
    h = dk.denom_pub_hash
    if name == "denominations.master_sig":
        return denom_terms(dk), MASTER, CTX
    if name == "denomination_revocations.master_sig":
        return dict(denom_pub_hash=h), MASTER, CTX
    if name == "exchange_sign_keys.master_sig":
        return dict(valid_from=T0, expire_sign=T0 + 10**12, expire_legal=T0 + 10**13,
                    exchange_pub=rb(32)), MASTER, CTX
    if name == "signkey_revocations.master_sig":
        return dict(exchange_pub=rb(32)), MASTER, CTX
    if name == "auditor_denom_sigs.auditor_sig":
        return dict(denom_terms(dk), auditor_pub=pub, auditor_url="https://auditor.example.com/"), seed, CTX
    if name == "wire_fee.master_sig":
        return dict(wire_method="x-taler-bank", start_date=T0, end_date=T0 + 10**13,
                    wire_fee=(0, 10), closing_fee=(0, 20)), MASTER, CTX
    if name == "global_fee.master_sig":
        return dict(start_date=T0, end_date=T0 + 10**13, purse_timeout=3600 * 10**6,
                    history_expiration=2**63 - 1, history_fee=(0, 1), account_fee=(0, 2),
                    purse_fee=(0, 3), purse_account_limit=5), MASTER, CTX
    if name == "profit_drains.master_sig":
        return dict(wtid=rb(32), trigger_date=T0, amount=(100, 0), account_section="exchange-account-1",
                    payto_uri="payto://x-taler-bank/bank/profit?receiver-name=Profit"), MASTER, CTX
    if name in ("known_coins.denom_sig",):
        return dict(coin_pub=rb(32), age_commitment_hash=None, denom_pub=dk.denom_pub), dk, CTX
    if name == "refresh_revealed_coins.ev_sig":
        planchet = dk.make_coin(rb(32), rb(32), melt=True)
        return dict(denom_pub=dk.denom_pub, coin_ev=planchet.coin_ev, ewv=planchet.ewv), dk, CTX
    if name == "reserves_out.denom_sig":
        planchet = dk.make_coin(rb(32), rb(32))
        return dict(denom_pub=dk.denom_pub, _sig=planchet.blind_sig), dk, CTX
    if name == "reserves_out.reserve_sig":
        return dict(reserve_pub=pub, amount_with_fee=(5, 1000000), denom_pub_hash=h,
                    h_blind_ev=rb(64)), seed, CTX
    if name == "batch_deposits.merchant_sig":
        return dict(merchant_pub=pub, h_contract_terms=rb(64)), seed, CTX
    if name == "coin_deposits.coin_sig":
        return dict(coin_pub=pub, amount_with_fee=(4, 0), h_contract_terms=rb(64),
                    wallet_timestamp=T0, refund_deadline=T0 + 10**9, merchant_pub=rb(32),
                    wallet_data_hash=None, wire_salt=rb(16), policy_details_serial_id=None,
                    payto_uri="payto://x-taler-bank/bank/m?receiver-name=M",
                    age_commitment_hash=rb(32), denom_pub_hash=h, fee_deposit=(0, 2000000)), seed, CTX
    if name == "refunds.merchant_sig":
        return dict(merchant_pub=pub, h_contract_terms=rb(64), coin_pub=rb(32), rtransaction_id=7,
                    amount_with_fee=(1, 0)), seed, CTX
    if name == "refresh_commitments.old_coin_sig":
        return dict(old_coin_pub=pub, rc=rb(64), amount_with_fee=(5, 0), age_commitment_hash=None,
                    denom_pub_hash=h, fee_refresh=(0, 3000000)), seed, CTX
    if name == "refresh_revealed_coins.link_sig":
        planchet = dk.make_coin(rb(32), rb(32), melt=True)
        return dict(old_coin_pub=pub, denom_pub_hash=h, transfer_pub=rb(32),
                    coin_ev=planchet.coin_ev), seed, CTX
    if name in ("recoup.coin_sig", "recoup_refresh.coin_sig"):
        return dict(coin_pub=pub, coin_blind=rb(32), denom_pub_hash=h), seed, CTX
    if name in ("reserves_open_requests.reserve_sig", "reserves_open_deposits.reserve_sig"):
        return dict(reserve_pub=pub, reserve_payment=(1, 0), request_timestamp=T0,
                    expiration_date=T0 + 10**13, requested_purse_limit=3), seed, CTX
    if name == "reserves_open_deposits.coin_sig":
        return dict(coin_pub=pub, reserve_sig=rb(64), contribution=(0, 50000000)), seed, CTX
    if name == "close_requests.reserve_sig":
        origin = "payto://iban/DE89370400440532013000?receiver-name=Max"
        return dict(reserve_pub=pub, close_timestamp=T0, payto_uri=origin,
                    close_h_payto=payto_hash(origin)), seed, CTX
    if name == "purse_requests.purse_sig":
        return dict(purse_pub=pub, purse_expiration=T0 + 10**12, amount_with_fee=(3, 0),
                    h_contract_terms=rb(64), merge_pub=rb(32), age_limit=0), seed, CTX
    if name == "purse_merges.merge_sig":
        return dict(merge_pub=pub, merge_timestamp=T0, purse_pub=rb(32), reserve_pub=rb(32),
                    partner_serial_id=None), seed, CTX
    if name == "purse_deposits.coin_sig":
        return dict(coin_pub=pub, amount_with_fee=(3, 0), purse_pub=rb(32), partner_serial_id=None,
                    age_commitment_hash=None, denom_pub_hash=h), seed, CTX
    if name == "account_merges.reserve_sig":
        return dict(reserve_pub=pub, purse_pub=rb(32), purse_expiration=T0 + 10**12,
                    amount_with_fee=(3, 0), purse_fee=(0, 3), h_contract_terms=rb(64), age_limit=0,
                    flags=3, merge_timestamp=T0 + 10**6), seed, CTX
    if name in ("history_requests.reserve_sig", "partners.master_sig") or "wad_" in name:
        return dict(reserve_pub=pub), seed, CTX
    raise KeyError(name)


def signed(name, cipher="rsa"):
    """A sample row with a valid signature in "sig", its key and context."""
    from taler_ops.crypto import catalog, signature_column
    spec = catalog.get(name)
    row, key, ctx = sample(name, cipher)
    if "_sig" in row:
        row["sig"] = row.pop("_sig")
    elif spec.kind != signature_column.NONE:
        row["sig"] = spec.sign(row, ctx, key)
    else:
        row["sig"] = rb(64)
    return row, key, ctx


def catalog_get(name):
    from taler_ops.crypto import catalog
    return catalog.get(name)


def coin_hash_of(coin_pub):
    return coin_hash(coin_pub)


def coin_message(row):
    return coin_hash(row["coin_pub"], row.get("age_commitment_hash"))


__all__ = ["sample", "signed", "denomination", "payto_hash", "CTX", "MASTER", "rb", "coin_message"]
