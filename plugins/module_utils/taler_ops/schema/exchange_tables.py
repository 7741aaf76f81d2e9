"""The exchange schema, table by table: column for column Taler v0.14.

Names, types, NOT NULL, defaults, keys, foreign keys (with their ON DELETE
actions), partition keys and the partitioned-mode placement of every key are
Taler's as taler-exchange-dbinit leaves them after exchange-0001..0007 (see
shared/reference/taler-real-schema.md §2.2, checked by
tests/test_taler_schema_identity.py against a database built from Taler's
own files).  The model applies them as two patches of its own names
(spec.FIRST_PATCH, spec.KYC_AUTH_PATCH), never under Taler's.

Columns the exchange updates after insert (§2.4) are either ``mutable``
(never copied by the sync, never compared by verify; they keep their default
on the safe copy) or ``first_seen`` (NOT NULL without a default, or needed by
the audit: copied once as first seen, never compared, not final).

Differences from Taler's own sync, on purpose:
- ``partners`` is replicated too: purse_merges, purse_deposits and wads_out
  reference it, and Taler's sync never copied it (taler-facts §8.6).
- columns Taler's sync leaves out although they are written once
  (batch_deposits.merchant_sig, known_coins.age_commitment_hash,
  reserves_close.close_request_row, purse_requests.in_reserve_quota and
  was_deleted, legitimization_outcomes.new_measure_name) are copied.

model-exchange-0002 is additive, as an upgrade between releases must be when
the ingres copy is fed by logical replication (which does not carry DDL): the
table ``kycauths_in``, as Taler's exchange-0005 adds it.
"""

from typing import Final

from .spec import (KYC_AUTH_PATCH, DerivedHash, Table, amount, blob, boolean, fk, hashcode, int2,
                   int4, int8, key32, key64, serial, text, timestamp)

_RESTRICT: Final = "RESTRICT"
_NO_ACTION: Final = "NO ACTION"
_FALSE = "false"

TABLES = (
    Table(
        "denominations", "denominations_serial",
        (serial("denominations_serial"), key64("denom_pub_hash"),
         int4("denom_type", default="1"), int4("age_mask", default="0"),
         blob("denom_pub"), key64("master_sig"),
         timestamp("valid_from"), timestamp("expire_withdraw"),
         timestamp("expire_deposit"), timestamp("expire_legal"),
         amount("coin"), amount("fee_withdraw"), amount("fee_deposit"),
         amount("fee_refresh"), amount("fee_refund")),
        primary_key=("denom_pub_hash",), uniques=(("denominations_serial",),),
        derived=(DerivedHash("denom_pub_hash", "denom_pub_hash", "denom_pub"),)),
    Table(
        "denomination_revocations", "denom_revocations_serial_id",
        (serial("denom_revocations_serial_id"), int8("denominations_serial"),
         key64("master_sig")),
        primary_key=("denominations_serial",), uniques=(("denom_revocations_serial_id",),),
        foreign_keys=(fk("denominations_serial", "denominations", inline=True),)),
    Table(
        "wire_targets", "wire_target_serial_id",
        (serial("wire_target_serial_id"), key32("wire_target_h_payto"),
         text("payto_uri"),
         key32("access_token", nullable=True, default="exchange.random_bytea(32)"),
         # Set by a KYC auth transfer after insert; Taler's sync copies it as first seen.
         key32("target_pub", nullable=True, first_seen=True),
         # NULL when Taler has no normalized form (an invalid URI, or rows before 0007).
         key32("h_normalized_payto", nullable=True),
         timestamp("aml_program_lock_timeout", nullable=True, mutable=True)),
        primary_key=("wire_target_h_payto",),
        uniques=(("access_token",), ("wire_target_serial_id",)),
        partition_key="wire_target_h_payto", master_keys=(("wire_target_h_payto",),),
        derived=(DerivedHash("wire_target_h_payto", "full_payto", "payto_uri"),
                 DerivedHash("h_normalized_payto", "normalized_payto", "payto_uri",
                             null_kept=True))),
    Table(
        "legitimization_measures", "legitimization_measure_serial_id",
        (serial("legitimization_measure_serial_id"), key32("access_token"),
         timestamp("start_time"), text("jmeasures"),
         int4("display_priority", first_seen=True),   # raised with GREATEST() later
         boolean("is_finished", default=_FALSE, mutable=True)),
        primary_key=None, uniques=(("legitimization_measure_serial_id",),),
        foreign_keys=(fk("access_token", "wire_targets"),),
        partition_key="access_token"),
    Table(
        "legitimization_outcomes", "outcome_serial_id",
        (serial("outcome_serial_id"), key32("h_payto"), timestamp("decision_time"),
         timestamp("expiration_time"), text("jproperties", nullable=True),
         text("new_measure_name", nullable=True),
         boolean("to_investigate"),
         boolean("is_active", default="true", mutable=True),
         text("jnew_rules", nullable=True)),
        # h_payto is a normalized payto hash: no FK (Taler's 0007 dropped it).
        primary_key=None, uniques=(("outcome_serial_id",),),
        unpartitioned_only_keys=(("outcome_serial_id",),),
        partition_key="h_payto"),
    Table(
        "legitimization_processes", "legitimization_process_serial_id",
        # The exchange upserts a process ON CONFLICT (measure, index): most
        # columns are first seen.
        (serial("legitimization_process_serial_id"), key32("h_payto", first_seen=True),
         timestamp("start_time", first_seen=True),
         timestamp("expiration_time", default="0", first_seen=True),
         text("provider_name", first_seen=True),
         text("provider_user_id", nullable=True, first_seen=True),
         text("provider_legitimization_id", nullable=True, first_seen=True),
         text("redirect_url", nullable=True, first_seen=True),
         boolean("finished", nullable=True, default=_FALSE, mutable=True),
         int8("legitimization_measure_serial_id", nullable=True),
         int4("measure_index", nullable=True, default="0"),
         int4("error_code", nullable=True, default="0", mutable=True),
         text("error_message", nullable=True, mutable=True)),
        primary_key=None,
        uniques=(("legitimization_measure_serial_id", "measure_index"),
                 ("legitimization_process_serial_id",)),
        unpartitioned_only_keys=(("legitimization_measure_serial_id", "measure_index"),),
        foreign_keys=(fk("legitimization_measure_serial_id", "legitimization_measures",
                         on_delete=_NO_ACTION),),
        partition_key="h_payto"),
    Table(
        "reserves", "reserve_uuid",
        (serial("reserve_uuid"), key32("reserve_pub"),
         amount("current_balance", default="ROW((0)::bigint, 0)", mutable=True),
         int8("purses_active", default="0", mutable=True),
         int8("purses_allowed", default="0", mutable=True),
         int4("birthday", default="0", mutable=True),
         # Pushed out (GREATEST) by later activity: first seen, not final.
         timestamp("expiration_date", first_seen=True), timestamp("gc_date", first_seen=True)),
        primary_key=("reserve_pub",), uniques=(("reserve_uuid",),),
        partition_key="reserve_pub", master_keys=(("reserve_pub",),)),
    Table(
        "reserves_in", "reserve_in_serial_id",
        (serial("reserve_in_serial_id"), blob("reserve_pub"), int8("wire_reference"),
         amount("credit"), key32("wire_source_h_payto", nullable=True),
         text("exchange_account_section"), timestamp("execution_date")),
        primary_key=("reserve_pub",), uniques=(("reserve_in_serial_id",),),
        foreign_keys=(fk("reserve_pub", "reserves"),
                      fk("wire_source_h_payto", "wire_targets", "wire_target_h_payto",
                         _RESTRICT)),
        partition_key="reserve_pub", master_keys=(("reserve_pub",),)),
    Table(
        "reserves_close", "close_uuid",
        (serial("close_uuid"), blob("reserve_pub"), timestamp("execution_date"),
         key32("wtid"), key32("wire_target_h_payto", nullable=True), amount("amount"),
         amount("closing_fee"), int8("close_request_row", default="0")),
        primary_key=("close_uuid",),
        foreign_keys=(fk("reserve_pub", "reserves"),),
        partition_key="reserve_pub"),
    Table(
        "reserves_open_requests", "open_request_uuid",
        (serial("open_request_uuid"), blob("reserve_pub"), timestamp("request_timestamp"),
         timestamp("expiration_date"), key64("reserve_sig"), amount("reserve_payment"),
         int4("requested_purse_limit")),
        primary_key=("open_request_uuid",),
        uniques=(("reserve_pub", "request_timestamp"),),
        foreign_keys=(fk("reserve_pub", "reserves"),),
        partition_key="reserve_pub"),
    Table(
        "reserves_open_deposits", "reserve_open_deposit_uuid",
        (serial("reserve_open_deposit_uuid"), key64("reserve_sig"), key32("reserve_pub"),
         key32("coin_pub"), key64("coin_sig"), amount("contribution")),
        # Taler has only a plain index on the serial: the sync checks it itself.
        primary_key=("coin_pub", "coin_sig"),
        partition_key="coin_pub"),
    Table(
        "reserves_out", "reserve_out_serial_id",
        (serial("reserve_out_serial_id"), key64("h_blind_ev", nullable=True),
         int8("denominations_serial"), blob("denom_sig"), int8("reserve_uuid"),
         key64("reserve_sig"), timestamp("execution_date"), amount("amount_with_fee")),
        primary_key=None, uniques=(("h_blind_ev",), ("reserve_out_serial_id",)),
        foreign_keys=(fk("denominations_serial", "denominations", on_delete=_NO_ACTION),
                      fk("reserve_uuid", "reserves")),
        partition_key="h_blind_ev", master_keys=(("h_blind_ev",),)),
    Table(
        "auditors", "auditor_uuid",
        # pg_update_auditor changes all four: the copy keeps the first-seen values.
        (serial("auditor_uuid"), key32("auditor_pub"), text("auditor_name", first_seen=True),
         text("auditor_url", first_seen=True), boolean("is_active", first_seen=True),
         timestamp("last_change", first_seen=True)),
        primary_key=("auditor_pub",), uniques=(("auditor_uuid",),)),
    Table(
        "auditor_denom_sigs", "auditor_denom_serial",
        (serial("auditor_denom_serial"), int8("auditor_uuid"), int8("denominations_serial"),
         key64("auditor_sig", nullable=True)),
        primary_key=("denominations_serial", "auditor_uuid"),
        uniques=(("auditor_denom_serial",),),
        foreign_keys=(fk("auditor_uuid", "auditors", inline=True),
                      fk("denominations_serial", "denominations", inline=True))),
    Table(
        "exchange_sign_keys", "esk_serial",
        (serial("esk_serial"), key32("exchange_pub"), key64("master_sig"),
         timestamp("valid_from"), timestamp("expire_sign"), timestamp("expire_legal")),
        primary_key=("exchange_pub",), uniques=(("esk_serial",),)),
    Table(
        "signkey_revocations", "signkey_revocations_serial_id",
        (serial("signkey_revocations_serial_id"), int8("esk_serial"), key64("master_sig")),
        primary_key=("esk_serial",), uniques=(("signkey_revocations_serial_id",),),
        foreign_keys=(fk("esk_serial", "exchange_sign_keys", inline=True),)),
    Table(
        "known_coins", "known_coin_id",
        (serial("known_coin_id"), int8("denominations_serial"), key32("coin_pub"),
         # Written at insert; the coins check needs it for age-restricted coins.
         key32("age_commitment_hash", nullable=True),
         blob("denom_sig"),
         amount("remaining", default="ROW((0)::bigint, 0)", mutable=True)),
        primary_key=("coin_pub",), uniques=(("known_coin_id",),),
        foreign_keys=(fk("denominations_serial", "denominations"),),
        partition_key="coin_pub", master_keys=(("coin_pub",),)),
    Table(
        "refresh_commitments", "melt_serial_id",
        (serial("melt_serial_id"), key64("rc"), blob("old_coin_pub"),
         key64("old_coin_sig"), amount("amount_with_fee"), int4("noreveal_index")),
        primary_key=("rc",), uniques=(("melt_serial_id",),),
        foreign_keys=(fk("old_coin_pub", "known_coins", "coin_pub"),),
        partition_key="rc", master_keys=(("rc",),)),
    Table(
        "refresh_revealed_coins", "rrc_serial",
        (serial("rrc_serial"), int8("melt_serial_id"), int4("freshcoin_index"),
         key64("link_sig"), int8("denominations_serial"), blob("coin_ev"),
         key64("h_coin_ev"), blob("ev_sig"), blob("ewv")),
        primary_key=("melt_serial_id", "freshcoin_index"),
        uniques=(("coin_ev",), ("h_coin_ev",), ("rrc_serial",)),
        foreign_keys=(fk("denominations_serial", "denominations"),
                      fk("melt_serial_id", "refresh_commitments")),
        partition_key="melt_serial_id",
        derived=(DerivedHash("h_coin_ev", "coin_ev_hash", "coin_ev",
                             parent=("denominations_serial", "denominations",
                                     "denominations_serial", "denom_pub_hash")),)),
    Table(
        "refresh_transfer_keys", "rtc_serial",
        (serial("rtc_serial"), int8("melt_serial_id"), key32("transfer_pub"),
         blob("transfer_privs")),
        primary_key=("melt_serial_id",), uniques=(("rtc_serial",),),
        foreign_keys=(fk("melt_serial_id", "refresh_commitments"),),
        partition_key="melt_serial_id", master_keys=(("melt_serial_id",),)),
    Table(
        "batch_deposits", "batch_deposit_serial_id",
        (serial("batch_deposit_serial_id"), int8("shard"), key32("merchant_pub"),
         timestamp("wallet_timestamp"), timestamp("exchange_timestamp"),
         timestamp("refund_deadline"), timestamp("wire_deadline"),
         key64("h_contract_terms"), key64("wallet_data_hash", nullable=True),
         blob("wire_salt", length=16), key32("wire_target_h_payto", nullable=True),
         int8("policy_details_serial_id", nullable=True),
         boolean("policy_blocked", default=_FALSE),
         boolean("done", default=_FALSE, mutable=True),
         key64("merchant_sig", nullable=True)),
        primary_key=("batch_deposit_serial_id",),
        uniques=(("shard", "merchant_pub", "h_contract_terms"),),
        foreign_keys=(fk("policy_details_serial_id", "policy_details", on_delete=_RESTRICT),),
        partition_key="shard"),
    Table(
        "coin_deposits", "coin_deposit_serial_id",
        (serial("coin_deposit_serial_id"), int8("batch_deposit_serial_id"),
         key32("coin_pub"), key64("coin_sig"), amount("amount_with_fee")),
        primary_key=("coin_deposit_serial_id",), uniques=(("coin_pub", "coin_sig"),),
        foreign_keys=(fk("batch_deposit_serial_id", "batch_deposits"),
                      fk("coin_pub", "known_coins")),
        partition_key="coin_pub"),
    Table(
        "refunds", "refund_serial_id",
        (serial("refund_serial_id"), key32("coin_pub"), int8("batch_deposit_serial_id"),
         key64("merchant_sig"), int8("rtransaction_id"), amount("amount_with_fee")),
        primary_key=("batch_deposit_serial_id", "coin_pub", "rtransaction_id"),
        uniques=(("refund_serial_id",),),
        foreign_keys=(fk("coin_pub", "known_coins"),
                      fk("batch_deposit_serial_id", "batch_deposits")),
        partition_key="coin_pub"),
    Table(
        "wire_out", "wireout_uuid",
        (serial("wireout_uuid"), timestamp("execution_date"), key32("wtid_raw"),
         key32("wire_target_h_payto", nullable=True), text("exchange_account_section"),
         amount("amount")),
        primary_key=("wireout_uuid",), uniques=(("wtid_raw",),),
        partition_key="wtid_raw", master_keys=(("wtid_raw",),)),
    Table(
        "aggregation_tracking", "aggregation_serial_id",
        (serial("aggregation_serial_id"), int8("batch_deposit_serial_id"), blob("wtid_raw")),
        primary_key=("batch_deposit_serial_id",), uniques=(("aggregation_serial_id",),),
        foreign_keys=(fk("batch_deposit_serial_id", "batch_deposits"),),
        partition_key="batch_deposit_serial_id",
        master_keys=(("batch_deposit_serial_id",),)),
    Table(
        "wire_fee", "wire_fee_serial",
        (serial("wire_fee_serial"), text("wire_method"), timestamp("start_date"),
         timestamp("end_date"), amount("wire_fee"), amount("closing_fee"),
         key64("master_sig")),
        primary_key=("wire_method", "start_date"), uniques=(("wire_fee_serial",),)),
    Table(
        "global_fee", "global_fee_serial",
        (serial("global_fee_serial"), timestamp("start_date"), timestamp("end_date"),
         amount("history_fee"), amount("account_fee"), amount("purse_fee"),
         timestamp("purse_timeout"), timestamp("history_expiration"),
         int4("purse_account_limit"), key64("master_sig")),
        primary_key=("start_date",), uniques=(("global_fee_serial",),)),
    Table(
        "recoup", "recoup_uuid",
        (serial("recoup_uuid"), key32("coin_pub"), key64("coin_sig"), key32("coin_blind"),
         amount("amount"), timestamp("recoup_timestamp"), int8("reserve_out_serial_id")),
        primary_key=None, uniques=(("recoup_uuid",),),
        foreign_keys=(fk("coin_pub", "known_coins", on_delete=_NO_ACTION),
                      fk("reserve_out_serial_id", "reserves_out")),
        partition_key="coin_pub"),
    Table(
        "recoup_refresh", "recoup_refresh_uuid",
        (serial("recoup_refresh_uuid"), key32("coin_pub"), int8("known_coin_id"),
         key64("coin_sig"), key32("coin_blind"), amount("amount"),
         timestamp("recoup_timestamp"), int8("rrc_serial")),
        primary_key=None, uniques=(("recoup_refresh_uuid",),),
        foreign_keys=(fk("coin_pub", "known_coins", on_delete=_NO_ACTION),
                      fk("known_coin_id", "known_coins"),
                      fk("rrc_serial", "refresh_revealed_coins")),
        partition_key="coin_pub"),
    Table(
        "extensions", "extension_id",
        # The manifest is upserted (ON CONFLICT DO UPDATE): first seen.
        (serial("extension_id"), text("name"), blob("manifest", nullable=True, first_seen=True)),
        primary_key=None, uniques=(("extension_id",), ("name",))),
    Table(
        "policy_details", "policy_details_serial_id",
        # pg_add_policy_fulfillment_proof updates the amounts and the state: first seen.
        (serial("policy_details_serial_id"), hashcode("policy_hash_code"), text("policy_json"),
         timestamp("deadline", first_seen=True), amount("commitment", first_seen=True),
         amount("accumulated_total", first_seen=True), amount("fee", first_seen=True),
         amount("transferable", first_seen=True),
         int2("fulfillment_state", first_seen=True,
              check="(fulfillment_state >= 0) AND (fulfillment_state <= 5)"),
         hashcode("h_fulfillment_proof", nullable=True)),
        primary_key=None,
        uniques=(("policy_details_serial_id",), ("policy_hash_code", "h_fulfillment_proof")),
        foreign_keys=(fk("h_fulfillment_proof", "policy_fulfillments", on_delete=_RESTRICT),),
        partition_key="h_fulfillment_proof"),
    Table(
        "policy_fulfillments", "fulfillment_id",
        (hashcode("h_fulfillment_proof"), serial("fulfillment_id"),
         timestamp("fulfillment_timestamp"), text("fulfillment_proof", nullable=True),
         hashcode("policy_hash_codes", array=True)),
        # The serial is unique only together with the proof hash: the sync checks it itself.
        primary_key=("h_fulfillment_proof",),
        uniques=(("h_fulfillment_proof", "fulfillment_id"),),
        partition_key="h_fulfillment_proof", master_keys=(("h_fulfillment_proof",),)),
    Table(
        "purse_requests", "purse_requests_serial_id",
        (serial("purse_requests_serial_id"), key32("purse_pub"), key32("merge_pub"),
         timestamp("purse_creation"), timestamp("purse_expiration"),
         key64("h_contract_terms"), int4("age_limit"), int4("flags"),
         boolean("in_reserve_quota", default=_FALSE),
         boolean("was_decided", default=_FALSE, mutable=True),
         amount("amount_with_fee"), amount("purse_fee"),
         amount("balance", default="ROW((0)::bigint, 0)", mutable=True),
         key64("purse_sig"), boolean("was_deleted", default=_FALSE)),
        primary_key=("purse_pub",), uniques=(("purse_requests_serial_id",),),
        partition_key="purse_pub", master_keys=(("purse_pub",),)),
    Table(
        "purse_decision", "purse_decision_serial_id",
        (serial("purse_decision_serial_id"), key32("purse_pub"),
         timestamp("action_timestamp"), boolean("refunded")),
        primary_key=("purse_pub",),
        uniques=(("purse_decision_serial_id",), ("purse_pub",)),
        partition_key="purse_pub", master_keys=(("purse_pub",),)),
    Table(
        "partners", "partner_serial_id",
        (serial("partner_serial_id"), key32("partner_master_pub"), timestamp("start_date"),
         timestamp("end_date"), int8("next_wad", default="0"), int8("wad_frequency"),
         amount("wad_fee"), key64("master_sig"), text("partner_base_url")),
        primary_key=("partner_master_pub", "start_date"), uniques=(("partner_serial_id",),),
        taler_sync=False,
        comment="replicated by taler-ops (not by Taler's sync) so that the purse and wad "
                "tables' references to partners can be checked on the safe copy"),
    Table(
        "purse_merges", "purse_merge_request_serial_id",
        (serial("purse_merge_request_serial_id"),
         int8("partner_serial_id", nullable=True), key32("reserve_pub"),
         key32("purse_pub"), key64("merge_sig"), timestamp("merge_timestamp")),
        primary_key=("purse_pub",), uniques=(("purse_merge_request_serial_id",),),
        foreign_keys=(fk("partner_serial_id", "partners"),
                      fk("purse_pub", "purse_requests")),
        partition_key="purse_pub", master_keys=(("purse_pub",),)),
    Table(
        "purse_deposits", "purse_deposit_serial_id",
        (serial("purse_deposit_serial_id"), int8("partner_serial_id", nullable=True),
         key32("purse_pub"), blob("coin_pub"), amount("amount_with_fee"),
         key64("coin_sig")),
        primary_key=("purse_pub", "coin_pub"), uniques=(("purse_deposit_serial_id",),),
        foreign_keys=(fk("coin_pub", "known_coins"),
                      fk("partner_serial_id", "partners")),
        partition_key="purse_pub", master_keys=(("purse_pub", "coin_pub"),)),
    Table(
        "account_merges", "account_merge_request_serial_id",
        (serial("account_merge_request_serial_id"), key32("reserve_pub"),
         key64("reserve_sig"), key32("purse_pub"), key32("wallet_h_payto")),
        primary_key=("purse_pub",), uniques=(("account_merge_request_serial_id",),),
        foreign_keys=(fk("purse_pub", "purse_requests", on_delete=_NO_ACTION),
                      fk("reserve_pub", "reserves")),
        partition_key="purse_pub", master_keys=(("purse_pub",),)),
    Table(
        "history_requests", "history_request_serial_id",
        (serial("history_request_serial_id"), key32("reserve_pub"),
         timestamp("request_timestamp"), key64("reserve_sig"), amount("history_fee")),
        primary_key=("reserve_pub", "request_timestamp"),
        uniques=(("history_request_serial_id",),),
        foreign_keys=(fk("reserve_pub", "reserves"),),
        partition_key="reserve_pub", master_keys=(("reserve_pub", "request_timestamp"),)),
    Table(
        "close_requests", "close_request_serial_id",
        (serial("close_request_serial_id"), key32("reserve_pub"),
         timestamp("close_timestamp"), key64("reserve_sig"), amount("close"),
         amount("close_fee"), text("payto_uri"),
         boolean("done", default=_FALSE, mutable=True)),
        primary_key=("reserve_pub", "close_timestamp"),
        uniques=(("close_request_serial_id",),),
        foreign_keys=(fk("reserve_pub", "reserves"),),
        partition_key="reserve_pub", master_keys=(("reserve_pub", "close_timestamp"),)),
    Table(
        "wads_out", "wad_out_serial_id",
        (serial("wad_out_serial_id"), blob("wad_id", length=24), int8("partner_serial_id"),
         amount("amount"), timestamp("execution_time")),
        primary_key=("wad_id",), uniques=(("wad_out_serial_id",),),
        foreign_keys=(fk("partner_serial_id", "partners"),),
        partition_key="wad_id", master_keys=(("wad_id",),)),
    Table(
        "wad_out_entries", "wad_out_entry_serial_id",
        (serial("wad_out_entry_serial_id"), int8("wad_out_serial_id", nullable=True),
         key32("reserve_pub"), key32("purse_pub"), key64("h_contract"),
         timestamp("purse_expiration"), timestamp("merge_timestamp"),
         amount("amount_with_fee"), amount("wad_fee"), amount("deposit_fees"),
         key64("reserve_sig"), key64("purse_sig")),
        primary_key=("purse_pub",), uniques=(("wad_out_entry_serial_id",),),
        foreign_keys=(fk("wad_out_serial_id", "wads_out"),),
        partition_key="purse_pub", master_keys=(("purse_pub",),)),
    Table(
        "wads_in", "wad_in_serial_id",
        (serial("wad_in_serial_id"), blob("wad_id", length=24), text("origin_exchange_url"),
         amount("amount"), timestamp("arrival_time")),
        # Taler declares UNIQUE (wad_id, origin_exchange_url) twice (inline and by a
        # constrain action); under -P one stays on the table, one goes on each partition.
        primary_key=("wad_id",),
        uniques=(("wad_id", "origin_exchange_url"), ("wad_id", "origin_exchange_url"),
                 ("wad_in_serial_id",)),
        partition_key="wad_id", master_keys=(("wad_id",), ("wad_id", "origin_exchange_url"))),
    Table(
        "wad_in_entries", "wad_in_entry_serial_id",
        (serial("wad_in_entry_serial_id"), int8("wad_in_serial_id", nullable=True),
         key32("reserve_pub"), key32("purse_pub"), key64("h_contract"),
         timestamp("purse_expiration"), timestamp("merge_timestamp"),
         amount("amount_with_fee"), amount("wad_fee"), amount("deposit_fees"),
         key64("reserve_sig"), key64("purse_sig")),
        primary_key=("purse_pub",), uniques=(("wad_in_entry_serial_id",),),
        foreign_keys=(fk("wad_in_serial_id", "wads_in"),),
        partition_key="purse_pub", master_keys=(("purse_pub",),)),
    Table(
        "profit_drains", "profit_drain_serial_id",
        (serial("profit_drain_serial_id"), key32("wtid"), text("account_section"),
         text("payto_uri"), timestamp("trigger_date"), amount("amount"),
         key64("master_sig"),
         boolean("executed", default=_FALSE, mutable=True)),
        primary_key=("wtid",), uniques=(("profit_drain_serial_id",),)),
    Table(
        "kycauths_in", "kycauth_in_serial_id",
        (serial("kycauth_in_serial_id"), key32("account_pub", nullable=True),
         int8("wire_reference"), amount("credit"), key32("wire_source_h_payto"),
         text("exchange_account_section"), timestamp("execution_date")),
        primary_key=("wire_source_h_payto", "wire_reference"),
        uniques=(("kycauth_in_serial_id",),),
        partition_key="wire_source_h_payto",
        master_keys=(("wire_source_h_payto", "wire_reference"),),
        taler_sync=False, since=KYC_AUTH_PATCH,
        comment="wire transfers that prove control of a bank account for KYC "
                "(the subject carries account_pub); no reserve is credited"),
    # Exchange-internal tables that garbage collection touches; never replicated.
    Table(
        "prewire", "prewire_uuid",
        (serial("prewire_uuid"), text("wire_method"),
         boolean("finished", default=_FALSE, mutable=True),
         boolean("failed", default=_FALSE, mutable=True), blob("buf")),
        primary_key=("prewire_uuid",), partition_key="prewire_uuid",
        master_keys=(("prewire_uuid",),), replicated=False, taler_sync=False),
    Table(
        "cs_nonce_locks", "cs_nonce_lock_serial_id",
        (serial("cs_nonce_lock_serial_id"), key32("nonce"), key64("op_hash"),
         int8("max_denomination_serial")),
        primary_key=("nonce",), uniques=(("cs_nonce_lock_serial_id",),),
        master_keys=(("nonce",),), replicated=False, taler_sync=False,
        partition_key="nonce"),
)

# Taler's taler-auditor-sync order (taler-facts §1.3); the registry keeps it
# wherever the foreign keys allow and moves parents first where they don't.
TALER_SYNC_ORDER = (
    "denominations", "denomination_revocations", "wire_targets",
    "legitimization_measures", "legitimization_outcomes", "legitimization_processes",
    "reserves", "reserves_in", "reserves_close", "reserves_open_requests",
    "reserves_open_deposits", "reserves_out", "auditors", "auditor_denom_sigs",
    "exchange_sign_keys", "signkey_revocations", "known_coins", "refresh_commitments",
    "refresh_revealed_coins", "refresh_transfer_keys", "batch_deposits", "coin_deposits",
    "refunds", "wire_out", "aggregation_tracking", "wire_fee", "global_fee", "recoup",
    "recoup_refresh", "extensions", "policy_details", "policy_fulfillments",
    "purse_requests", "purse_decision", "purse_merges", "purse_deposits", "account_merges",
    "history_requests", "close_requests", "wads_out", "wad_out_entries", "wads_in",
    "wad_in_entries", "profit_drains",
)
