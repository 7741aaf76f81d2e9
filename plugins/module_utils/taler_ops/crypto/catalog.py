"""Every signature column of the 44 replicated tables, as data.

One ``SignatureColumn`` (signature_column.py: the query, verdicts and signing)
per (table, column), with the SQL that reads what the check needs and the
builder of the signed block.  Field names, keys and caveats follow
taler-signatures.md §3.
"""

from . import blocks, denom
from .context import SignatureContext
from .hashes import merchant_wire_hash, payto_hash
from .signature_column import (BLIND, BLIND_FORM, COIN, EDDSA, NONE, KeyOf, MissingConfiguration,
                               Row, SignatureColumn, amt)


# --- helpers for the entries ------------------------------------------------------

def _master(_row: Row, ctx: SignatureContext) -> bytes:
    return ctx.master_pub


def _col(name: str) -> KeyOf:
    return lambda row, _ctx: row[name]


DENOM_TERMS_SQL = ("d.valid_from, d.expire_withdraw, d.expire_deposit, d.expire_legal, "
                   + ", ".join(amt(f"d.{a}", a) for a in
                               ("coin", "fee_withdraw", "fee_deposit", "fee_refresh", "fee_refund"))
                   + ", d.denom_pub")


def _denom_terms(row: Row) -> blocks.DenomTerms:
    # The hash is recomputed from denom_pub: the signature then binds the key
    # actually stored, not only the stored hash column.
    return (row["valid_from"], row["expire_withdraw"], row["expire_deposit"], row["expire_legal"],
            row["coin"], row["fee_withdraw"], row["fee_deposit"], row["fee_refresh"],
            row["fee_refund"], denom.DenomPub.parse(row["denom_pub"]).hash())


def _close_candidates(row: Row, ctx: SignatureContext) -> list[bytes]:
    # What the wallet signed as target is not stored in close_requests; the
    # candidates are the account the close actually paid (reserves_close, when
    # linked), the reserve's origin account (payto_uri) and "no target".
    paid, origin = row.get("close_h_payto"), row.get("payto_uri")
    targets = [h for h in (paid, payto_hash(origin) if origin else None) if h is not None]
    return [blocks.reserve_close(row["close_timestamp"], h) for h in targets + [None]]


def _link_block(row: Row, _ctx: SignatureContext) -> list[bytes]:
    return [blocks.link(row["denom_pub_hash"], row["transfer_pub"],
                        denom.planchet_hash(row["denom_pub_hash"], row["coin_ev"]))]


def _deposit_block(row: Row, ctx: SignatureContext) -> list[bytes]:
    # The policy hash is signed as zeros: a deposit with a policy signed a
    # hash of its policy JSON that the replicated tables do not give back.
    return [blocks.deposit(
        ctx.currency, row["h_contract_terms"], row.get("age_commitment_hash"), None,
        merchant_wire_hash(row["payto_uri"], row["wire_salt"]), row["denom_pub_hash"],
        row["wallet_timestamp"], row["refund_deadline"], row["amount_with_fee"],
        row["fee_deposit"], row["merchant_pub"], row.get("wallet_data_hash"))]


def _account_merge_block(row: Row, ctx: SignatureContext) -> list[bytes]:
    return [blocks.account_merge(
        ctx.currency, row["purse_expiration"], row["amount_with_fee"], row["purse_fee"],
        row["h_contract_terms"], row["purse_pub"], row["merge_timestamp"], row["age_limit"],
        row["flags"])]


def _base_url(row: Row, ctx: SignatureContext) -> str:
    """The exchange whose URL a purse merge or deposit signed: ours, or for a
    partner purse the partner's (``partners`` is replicated by taler-ops)."""
    if row.get("partner_serial_id") is not None:
        if not row.get("partner_base_url"):
            raise ValueError("partner row not replicated")
        return str(row["partner_base_url"])
    if not ctx.exchange_base_url:
        raise MissingConfiguration("[exchange] BASE_URL is needed to check purse signatures")
    return ctx.exchange_base_url


def _partner_unknown(row: Row) -> bool:
    return row.get("partner_serial_id") is not None and not row.get("partner_base_url")


S = SignatureColumn

COLUMNS: tuple[SignatureColumn, ...] = (
    # --- offline signatures of the master key -------------------------------------
    S("denominations", "master_sig", EDDSA, blocks.MASTER_DENOMINATION_KEY_VALIDITY,
      "[exchange] MASTER_PUBLIC_KEY", "yes", "denom_pub_hash recomputed from denom_pub",
      "denominations_serial",
      "SELECT d.denominations_serial AS serial, d.master_sig AS sig, " + DENOM_TERMS_SQL
      + " FROM {s}.denominations d", "d.denominations_serial",
      _blocks=lambda r, c: [blocks.denomination_validity(c.currency, c.master_pub, *_denom_terms(r))],
      _pub=_master),
    S("denomination_revocations", "master_sig", EDDSA, blocks.MASTER_DENOMINATION_KEY_REVOKED,
      "[exchange] MASTER_PUBLIC_KEY", "yes", "", "denom_revocations_serial_id",
      "SELECT dr.denom_revocations_serial_id AS serial, dr.master_sig AS sig, d.denom_pub_hash"
      " FROM {s}.denomination_revocations dr"
      " LEFT JOIN {s}.denominations d ON d.denominations_serial = dr.denominations_serial",
      "dr.denom_revocations_serial_id",
      _blocks=lambda r, c: [blocks.denomination_revoked(r["denom_pub_hash"])], _pub=_master),
    S("exchange_sign_keys", "master_sig", EDDSA, blocks.MASTER_SIGNING_KEY_VALIDITY,
      "[exchange] MASTER_PUBLIC_KEY", "yes", "", "esk_serial",
      "SELECT esk.esk_serial AS serial, esk.master_sig AS sig, esk.valid_from, esk.expire_sign,"
      " esk.expire_legal, esk.exchange_pub FROM {s}.exchange_sign_keys esk", "esk.esk_serial",
      _blocks=lambda r, c: [blocks.signkey_validity(r["valid_from"], r["expire_sign"],
                                                    r["expire_legal"], r["exchange_pub"])],
      _pub=_master),
    S("signkey_revocations", "master_sig", EDDSA, blocks.MASTER_SIGNING_KEY_REVOKED,
      "[exchange] MASTER_PUBLIC_KEY", "yes", "", "signkey_revocations_serial_id",
      "SELECT sr.signkey_revocations_serial_id AS serial, sr.master_sig AS sig, esk.exchange_pub"
      " FROM {s}.signkey_revocations sr"
      " LEFT JOIN {s}.exchange_sign_keys esk ON esk.esk_serial = sr.esk_serial",
      "sr.signkey_revocations_serial_id",
      _blocks=lambda r, c: [blocks.signkey_revoked(r["exchange_pub"])], _pub=_master),
    S("auditor_denom_sigs", "auditor_sig", EDDSA, blocks.AUDITOR_EXCHANGE_KEYS,
      "auditors.auditor_pub (via auditor_uuid)", "yes",
      "NULL = the auditor has not signed (verdict None); Taler's coins helper checks only its own auditor",
      "auditor_denom_serial",
      "SELECT ads.auditor_denom_serial AS serial, ads.auditor_sig AS sig, a.auditor_pub,"
      " a.auditor_url, " + DENOM_TERMS_SQL + " FROM {s}.auditor_denom_sigs ads"
      " LEFT JOIN {s}.auditors a ON a.auditor_uuid = ads.auditor_uuid"
      " LEFT JOIN {s}.denominations d ON d.denominations_serial = ads.denominations_serial",
      "ads.auditor_denom_serial", nullable=True,
      _blocks=lambda r, c: [blocks.auditor_denomination(c.currency, r["auditor_url"], c.master_pub,
                                                        *_denom_terms(r))],
      _pub=_col("auditor_pub")),
    S("wire_fee", "master_sig", EDDSA, blocks.MASTER_WIRE_FEES,
      "[exchange] MASTER_PUBLIC_KEY", "yes", "", "wire_fee_serial",
      "SELECT wf.wire_fee_serial AS serial, wf.master_sig AS sig, wf.wire_method, wf.start_date,"
      " wf.end_date, " + amt("wf.wire_fee", "wire_fee") + ", " + amt("wf.closing_fee", "closing_fee")
      + " FROM {s}.wire_fee wf", "wf.wire_fee_serial",
      _blocks=lambda r, c: [blocks.wire_fee(c.currency, r["wire_method"], r["start_date"],
                                            r["end_date"], r["wire_fee"], r["closing_fee"])],
      _pub=_master),
    S("global_fee", "master_sig", EDDSA, blocks.MASTER_GLOBAL_FEES,
      "[exchange] MASTER_PUBLIC_KEY", "yes", "", "global_fee_serial",
      "SELECT gf.global_fee_serial AS serial, gf.master_sig AS sig, gf.start_date, gf.end_date,"
      " gf.purse_timeout, gf.history_expiration, " + amt("gf.history_fee", "history_fee") + ", "
      + amt("gf.account_fee", "account_fee") + ", " + amt("gf.purse_fee", "purse_fee")
      + ", gf.purse_account_limit FROM {s}.global_fee gf", "gf.global_fee_serial",
      _blocks=lambda r, c: [blocks.global_fee(
          c.currency, r["start_date"], r["end_date"], r["purse_timeout"], r["history_expiration"],
          r["history_fee"], r["account_fee"], r["purse_fee"], r["purse_account_limit"])],
      _pub=_master),
    S("profit_drains", "master_sig", EDDSA, blocks.MASTER_DRAIN_PROFIT,
      "[exchange] MASTER_PUBLIC_KEY", "yes", "", "profit_drain_serial_id",
      "SELECT pd.profit_drain_serial_id AS serial, pd.master_sig AS sig, pd.wtid, pd.trigger_date, "
      + amt("pd.amount", "amount") + ", pd.account_section, pd.payto_uri FROM {s}.profit_drains pd",
      "pd.profit_drain_serial_id",
      _blocks=lambda r, c: [blocks.profit_drain(c.currency, r["wtid"], r["trigger_date"], r["amount"],
                                                r["account_section"], r["payto_uri"])],
      _pub=_master),

    # --- coins and reserves ---------------------------------------------------------
    S("known_coins", "denom_sig", COIN, None, "denominations.denom_pub (via denominations_serial)",
      "yes", "RSA-FDH or CS over c_hash = H(coin_pub [‖ age_commitment_hash]); an age-restricted "
      "coin fails if age_commitment_hash was not replicated", "known_coin_id",
      "SELECT kc.known_coin_id AS serial, kc.denom_sig AS sig, kc.coin_pub, kc.age_commitment_hash,"
      " d.denom_pub FROM {s}.known_coins kc"
      " LEFT JOIN {s}.denominations d ON d.denominations_serial = kc.denominations_serial",
      "kc.known_coin_id"),
    S("reserves_out", "reserve_sig", EDDSA, blocks.WALLET_RESERVE_WITHDRAW,
      "reserves.reserve_pub (via reserve_uuid)", "yes", "", "reserve_out_serial_id",
      "SELECT ro.reserve_out_serial_id AS serial, ro.reserve_sig AS sig, r.reserve_pub, "
      + amt("ro.amount_with_fee", "amount_with_fee") + ", d.denom_pub_hash, ro.h_blind_ev"
      " FROM {s}.reserves_out ro LEFT JOIN {s}.reserves r ON r.reserve_uuid = ro.reserve_uuid"
      " LEFT JOIN {s}.denominations d ON d.denominations_serial = ro.denominations_serial",
      "ro.reserve_out_serial_id",
      _blocks=lambda r, c: [blocks.withdraw(c.currency, r["amount_with_fee"], r["denom_pub_hash"],
                                            r["h_blind_ev"])],
      _pub=_col("reserve_pub")),
    S("reserves_out", "denom_sig", BLIND_FORM, None, "denominations.denom_pub", "partly",
      "blinded message not stored: only the form is checked (cipher, marker, RSA 0<s<n, CS b∈{0,1})",
      "reserve_out_serial_id",
      "SELECT ro.reserve_out_serial_id AS serial, ro.denom_sig AS sig, d.denom_pub"
      " FROM {s}.reserves_out ro"
      " LEFT JOIN {s}.denominations d ON d.denominations_serial = ro.denominations_serial",
      "ro.reserve_out_serial_id"),
    S("batch_deposits", "merchant_sig", EDDSA, blocks.MERCHANT_CONTRACT,
      "batch_deposits.merchant_pub", "yes", "NULL = the merchant sent none (verdict None)",
      "batch_deposit_serial_id",
      "SELECT bd.batch_deposit_serial_id AS serial, bd.merchant_sig AS sig, bd.merchant_pub,"
      " bd.h_contract_terms FROM {s}.batch_deposits bd", "bd.batch_deposit_serial_id",
      nullable=True,
      _blocks=lambda r, c: [blocks.contract(r["h_contract_terms"])], _pub=_col("merchant_pub")),
    S("coin_deposits", "coin_sig", EDDSA, blocks.WALLET_COIN_DEPOSIT, "coin_deposits.coin_pub",
      "partly", "a deposit with a policy signed a policy hash not rebuilt here: verdict None when "
      "the zero policy hash does not verify", "coin_deposit_serial_id",
      "SELECT cd.coin_deposit_serial_id AS serial, cd.coin_sig AS sig, cd.coin_pub, "
      + amt("cd.amount_with_fee", "amount_with_fee") + ", bd.h_contract_terms, bd.wallet_timestamp,"
      " bd.refund_deadline, bd.merchant_pub, bd.wallet_data_hash, bd.wire_salt,"
      " bd.policy_details_serial_id, wt.payto_uri, kc.age_commitment_hash, d.denom_pub_hash, "
      + amt("d.fee_deposit", "fee_deposit")
      + " FROM {s}.coin_deposits cd"
      " LEFT JOIN {s}.batch_deposits bd ON bd.batch_deposit_serial_id = cd.batch_deposit_serial_id"
      " LEFT JOIN {s}.wire_targets wt ON wt.wire_target_h_payto = bd.wire_target_h_payto"
      " LEFT JOIN {s}.known_coins kc ON kc.coin_pub = cd.coin_pub"
      " LEFT JOIN {s}.denominations d ON d.denominations_serial = kc.denominations_serial",
      "cd.coin_deposit_serial_id",
      _blocks=_deposit_block, _pub=_col("coin_pub"),
      _undecided=lambda r: r.get("policy_details_serial_id") is not None),
    S("refunds", "merchant_sig", EDDSA, blocks.MERCHANT_REFUND,
      "batch_deposits.merchant_pub (via batch_deposit_serial_id)", "yes", "", "refund_serial_id",
      "SELECT rf.refund_serial_id AS serial, rf.merchant_sig AS sig, bd.merchant_pub,"
      " bd.h_contract_terms, rf.coin_pub, rf.rtransaction_id, "
      + amt("rf.amount_with_fee", "amount_with_fee") + " FROM {s}.refunds rf"
      " LEFT JOIN {s}.batch_deposits bd ON bd.batch_deposit_serial_id = rf.batch_deposit_serial_id",
      "rf.refund_serial_id",
      _blocks=lambda r, c: [blocks.refund(c.currency, r["h_contract_terms"], r["coin_pub"],
                                          r["rtransaction_id"], r["amount_with_fee"])],
      _pub=_col("merchant_pub")),
    S("refresh_commitments", "old_coin_sig", EDDSA, blocks.WALLET_COIN_MELT,
      "refresh_commitments.old_coin_pub", "yes",
      "age-restricted coins need the replicated known_coins.age_commitment_hash", "melt_serial_id",
      "SELECT rfc.melt_serial_id AS serial, rfc.old_coin_sig AS sig, rfc.old_coin_pub, rfc.rc, "
      + amt("rfc.amount_with_fee", "amount_with_fee") + ", kc.age_commitment_hash, d.denom_pub_hash, "
      + amt("d.fee_refresh", "fee_refresh") + " FROM {s}.refresh_commitments rfc"
      " LEFT JOIN {s}.known_coins kc ON kc.coin_pub = rfc.old_coin_pub"
      " LEFT JOIN {s}.denominations d ON d.denominations_serial = kc.denominations_serial",
      "rfc.melt_serial_id",
      _blocks=lambda r, c: [blocks.melt(c.currency, r["rc"], r["denom_pub_hash"],
                                        r.get("age_commitment_hash"), r["amount_with_fee"],
                                        r["fee_refresh"])],
      _pub=_col("old_coin_pub")),
    S("refresh_revealed_coins", "link_sig", EDDSA, blocks.WALLET_COIN_LINK,
      "refresh_commitments.old_coin_pub (via melt_serial_id)", "yes",
      "h_coin_ev recomputed from coin_ev (the stored column may be Taler's sync's H(coin_ev))",
      "rrc_serial",
      "SELECT rrc.rrc_serial AS serial, rrc.link_sig AS sig, rfc.old_coin_pub, d.denom_pub_hash,"
      " rtk.transfer_pub, rrc.coin_ev FROM {s}.refresh_revealed_coins rrc"
      " LEFT JOIN {s}.refresh_commitments rfc ON rfc.melt_serial_id = rrc.melt_serial_id"
      " LEFT JOIN {s}.refresh_transfer_keys rtk ON rtk.melt_serial_id = rrc.melt_serial_id"
      " LEFT JOIN {s}.denominations d ON d.denominations_serial = rrc.denominations_serial",
      "rrc.rrc_serial",
      _blocks=_link_block, _pub=_col("old_coin_pub")),
    S("refresh_revealed_coins", "ev_sig", BLIND, None, "denominations.denom_pub (new coin)", "yes",
      "RSA: ev_sig^e = coin_ev; CS: s_b·G = R_b + c_b·A with R_b from ewv", "rrc_serial",
      "SELECT rrc.rrc_serial AS serial, rrc.ev_sig AS sig, d.denom_pub, rrc.coin_ev, rrc.ewv"
      " FROM {s}.refresh_revealed_coins rrc"
      " LEFT JOIN {s}.denominations d ON d.denominations_serial = rrc.denominations_serial",
      "rrc.rrc_serial"),
    S("recoup", "coin_sig", EDDSA, blocks.WALLET_COIN_RECOUP, "recoup.coin_pub", "yes", "",
      "recoup_uuid",
      "SELECT rc.recoup_uuid AS serial, rc.coin_sig AS sig, rc.coin_pub, rc.coin_blind,"
      " d.denom_pub_hash FROM {s}.recoup rc"
      " LEFT JOIN {s}.known_coins kc ON kc.coin_pub = rc.coin_pub"
      " LEFT JOIN {s}.denominations d ON d.denominations_serial = kc.denominations_serial",
      "rc.recoup_uuid",
      _blocks=lambda r, c: [blocks.recoup(r["denom_pub_hash"], r["coin_blind"])],
      _pub=_col("coin_pub")),
    S("recoup_refresh", "coin_sig", EDDSA, blocks.WALLET_COIN_RECOUP_REFRESH,
      "recoup_refresh.coin_pub", "yes", "", "recoup_refresh_uuid",
      "SELECT rr.recoup_refresh_uuid AS serial, rr.coin_sig AS sig, rr.coin_pub, rr.coin_blind,"
      " d.denom_pub_hash FROM {s}.recoup_refresh rr"
      " LEFT JOIN {s}.known_coins kc ON kc.coin_pub = rr.coin_pub"
      " LEFT JOIN {s}.denominations d ON d.denominations_serial = kc.denominations_serial",
      "rr.recoup_refresh_uuid",
      _blocks=lambda r, c: [blocks.recoup(r["denom_pub_hash"], r["coin_blind"], refresh=True)],
      _pub=_col("coin_pub")),
    S("reserves_open_requests", "reserve_sig", EDDSA, blocks.WALLET_RESERVE_OPEN,
      "reserves_open_requests.reserve_pub", "yes", "", "open_request_uuid",
      "SELECT orq.open_request_uuid AS serial, orq.reserve_sig AS sig, orq.reserve_pub, "
      + amt("orq.reserve_payment", "reserve_payment") + ", orq.request_timestamp,"
      " orq.expiration_date, orq.requested_purse_limit FROM {s}.reserves_open_requests orq",
      "orq.open_request_uuid",
      _blocks=lambda r, c: [blocks.reserve_open(c.currency, r["reserve_payment"],
                                                r["request_timestamp"], r["expiration_date"],
                                                r["requested_purse_limit"])],
      _pub=_col("reserve_pub")),
    S("reserves_open_deposits", "coin_sig", EDDSA, blocks.WALLET_RESERVE_OPEN_DEPOSIT,
      "reserves_open_deposits.coin_pub", "yes", "", "reserve_open_deposit_uuid",
      "SELECT rod.reserve_open_deposit_uuid AS serial, rod.coin_sig AS sig, rod.coin_pub,"
      " rod.reserve_sig, " + amt("rod.contribution", "contribution")
      + " FROM {s}.reserves_open_deposits rod", "rod.reserve_open_deposit_uuid",
      _blocks=lambda r, c: [blocks.reserve_open_deposit(c.currency, r["reserve_sig"],
                                                        r["contribution"])],
      _pub=_col("coin_pub")),
    S("reserves_open_deposits", "reserve_sig", EDDSA, blocks.WALLET_RESERVE_OPEN,
      "reserves_open_deposits.reserve_pub", "yes",
      "a copy of the open request's signature: verified over the request row with the same "
      "reserve_pub and reserve_sig (none found: invalid)", "reserve_open_deposit_uuid",
      "SELECT rod.reserve_open_deposit_uuid AS serial, rod.reserve_sig AS sig, rod.reserve_pub, "
      + amt("orq.reserve_payment", "reserve_payment") + ", orq.request_timestamp,"
      " orq.expiration_date, orq.requested_purse_limit FROM {s}.reserves_open_deposits rod"
      " LEFT JOIN {s}.reserves_open_requests orq"
      " ON orq.reserve_pub = rod.reserve_pub AND orq.reserve_sig = rod.reserve_sig",
      "rod.reserve_open_deposit_uuid",
      _blocks=lambda r, c: [blocks.reserve_open(c.currency, r["reserve_payment"],
                                                r["request_timestamp"], r["expiration_date"],
                                                r["requested_purse_limit"])],
      _pub=_col("reserve_pub")),
    S("close_requests", "reserve_sig", EDDSA, blocks.WALLET_RESERVE_CLOSE,
      "close_requests.reserve_pub", "partly",
      "the wallet's target account is not stored here: tried are the target the linked "
      "reserves_close row paid, the origin payto_uri and 'no target'; without a linked "
      "reserves_close row a signature matching neither (a third-party target, or a forgery) "
      "gets verdict None", "close_request_serial_id",
      "SELECT cr.close_request_serial_id AS serial, cr.reserve_sig AS sig, cr.reserve_pub,"
      " cr.close_timestamp, cr.payto_uri, (SELECT rc.wire_target_h_payto FROM {s}.reserves_close rc"
      " WHERE rc.reserve_pub = cr.reserve_pub AND rc.close_request_row = cr.close_request_serial_id"
      " ORDER BY rc.close_uuid LIMIT 1) AS close_h_payto FROM {s}.close_requests cr",
      "cr.close_request_serial_id",
      _blocks=_close_candidates, _pub=_col("reserve_pub"),
      _undecided=lambda r: r.get("close_h_payto") is None),
    S("history_requests", "reserve_sig", NONE, blocks.WALLET_RESERVE_HISTORY,
      "history_requests.reserve_pub", "no",
      "signs start_off, which is not stored (and v0.14 has no writer): never checkable",
      "history_request_serial_id",
      "SELECT hr.history_request_serial_id AS serial, hr.reserve_sig AS sig, hr.reserve_pub"
      " FROM {s}.history_requests hr", "hr.history_request_serial_id"),

    # --- purses and merges -------------------------------------------------------------
    S("purse_requests", "purse_sig", EDDSA, blocks.WALLET_PURSE_CREATE,
      "purse_requests.purse_pub", "yes", "", "purse_requests_serial_id",
      "SELECT pr.purse_requests_serial_id AS serial, pr.purse_sig AS sig, pr.purse_pub,"
      " pr.purse_expiration, " + amt("pr.amount_with_fee", "amount_with_fee")
      + ", pr.h_contract_terms, pr.merge_pub, pr.age_limit FROM {s}.purse_requests pr",
      "pr.purse_requests_serial_id",
      _blocks=lambda r, c: [blocks.purse_create(c.currency, r["purse_expiration"],
                                                r["amount_with_fee"], r["h_contract_terms"],
                                                r["merge_pub"], r["age_limit"])],
      _pub=_col("purse_pub")),
    S("purse_merges", "merge_sig", EDDSA, blocks.WALLET_PURSE_MERGE,
      "purse_requests.merge_pub (via purse_pub)", "partly",
      "needs [exchange] BASE_URL; a merge for a partner exchange's reserve hashes the partner's "
      "base URL (from partners, replicated by taler-ops; verdict None if that row is missing)",
      "purse_merge_request_serial_id",
      "SELECT pm.purse_merge_request_serial_id AS serial, pm.merge_sig AS sig, pr.merge_pub,"
      " pm.merge_timestamp, pm.purse_pub, pm.reserve_pub, pm.partner_serial_id, pa.partner_base_url"
      " FROM {s}.purse_merges pm LEFT JOIN {s}.purse_requests pr ON pr.purse_pub = pm.purse_pub"
      " LEFT JOIN {s}.partners pa ON pa.partner_serial_id = pm.partner_serial_id",
      "pm.purse_merge_request_serial_id",
      _blocks=lambda r, c: [blocks.purse_merge(r["merge_timestamp"], r["purse_pub"], _base_url(r, c),
                                               r["reserve_pub"])],
      _pub=_col("merge_pub"), _undecided=_partner_unknown),
    S("purse_deposits", "coin_sig", EDDSA, blocks.WALLET_PURSE_DEPOSIT,
      "purse_deposits.coin_pub", "partly",
      "needs [exchange] BASE_URL; a deposit into a partner's purse hashes the partner's base URL "
      "(from partners; verdict None if that row is missing)", "purse_deposit_serial_id",
      "SELECT pdp.purse_deposit_serial_id AS serial, pdp.coin_sig AS sig, pdp.coin_pub, "
      + amt("pdp.amount_with_fee", "amount_with_fee") + ", pdp.purse_pub, pdp.partner_serial_id,"
      " kc.age_commitment_hash, d.denom_pub_hash, pa.partner_base_url FROM {s}.purse_deposits pdp"
      " LEFT JOIN {s}.partners pa ON pa.partner_serial_id = pdp.partner_serial_id"
      " LEFT JOIN {s}.known_coins kc ON kc.coin_pub = pdp.coin_pub"
      " LEFT JOIN {s}.denominations d ON d.denominations_serial = kc.denominations_serial",
      "pdp.purse_deposit_serial_id",
      _blocks=lambda r, c: [blocks.purse_deposit(c.currency, r["amount_with_fee"],
                                                 r["denom_pub_hash"], r.get("age_commitment_hash"),
                                                 r["purse_pub"], _base_url(r, c))],
      _pub=_col("coin_pub"), _undecided=_partner_unknown),
    S("account_merges", "reserve_sig", EDDSA, blocks.WALLET_ACCOUNT_MERGE,
      "account_merges.reserve_pub", "yes", "", "account_merge_request_serial_id",
      "SELECT am.account_merge_request_serial_id AS serial, am.reserve_sig AS sig, am.reserve_pub,"
      " am.purse_pub, pr.purse_expiration, " + amt("pr.amount_with_fee", "amount_with_fee") + ", "
      + amt("pr.purse_fee", "purse_fee") + ", pr.h_contract_terms, pr.age_limit, pr.flags,"
      " pm.merge_timestamp FROM {s}.account_merges am"
      " LEFT JOIN {s}.purse_requests pr ON pr.purse_pub = am.purse_pub"
      " LEFT JOIN {s}.purse_merges pm ON pm.purse_pub = am.purse_pub",
      "am.account_merge_request_serial_id",
      _blocks=_account_merge_block, _pub=_col("reserve_pub")),
    S("wad_out_entries", "reserve_sig", NONE, blocks.WALLET_ACCOUNT_MERGE,
      "wad_out_entries.reserve_pub (per the column comment)", "no",
      "wad transfers have no writer in v0.14 and the signed fields are not all stored",
      "wad_out_entry_serial_id",
      "SELECT w.wad_out_entry_serial_id AS serial, w.reserve_sig AS sig FROM {s}.wad_out_entries w",
      "w.wad_out_entry_serial_id"),
    S("wad_out_entries", "purse_sig", NONE, blocks.WALLET_PURSE_MERGE,
      "wad_out_entries.purse_pub (per the column comment)", "no",
      "wad transfers have no writer in v0.14 and the signed fields are not all stored",
      "wad_out_entry_serial_id",
      "SELECT w.wad_out_entry_serial_id AS serial, w.purse_sig AS sig FROM {s}.wad_out_entries w",
      "w.wad_out_entry_serial_id"),
    S("wad_in_entries", "reserve_sig", NONE, blocks.WALLET_ACCOUNT_MERGE,
      "wad_in_entries.reserve_pub (per the column comment)", "no",
      "wad transfers have no writer in v0.14 and the signed fields are not all stored",
      "wad_in_entry_serial_id",
      "SELECT w.wad_in_entry_serial_id AS serial, w.reserve_sig AS sig FROM {s}.wad_in_entries w",
      "w.wad_in_entry_serial_id"),
    S("wad_in_entries", "purse_sig", NONE, blocks.WALLET_PURSE_MERGE,
      "wad_in_entries.purse_pub (per the column comment)", "no",
      "wad transfers have no writer in v0.14 and the signed fields are not all stored",
      "wad_in_entry_serial_id",
      "SELECT w.wad_in_entry_serial_id AS serial, w.purse_sig AS sig FROM {s}.wad_in_entries w",
      "w.wad_in_entry_serial_id"),
    S("partners", "master_sig", NONE, 1019, "[exchange] MASTER_PUBLIC_KEY", "no",
      "MASTER_PARTNER_DETAILS: the signed layout is not in taler-signatures.md (only the purpose "
      "number), so it is not checked; partners is replicated by taler-ops only",
      "partner_serial_id",
      "SELECT pa.partner_serial_id AS serial, pa.master_sig AS sig FROM {s}.partners pa",
      "pa.partner_serial_id"),
)

BY_NAME: dict[str, SignatureColumn] = {c.name: c for c in COLUMNS}


def get(name: str) -> SignatureColumn:
    """The entry for "table.column"."""
    return BY_NAME[name]
