"""The columns the model writes, per table, in row order.

Every row the model puts is a tuple in this order.  Explicit lists (checked
against the table specs when the writer starts; see CopyWriter) let the same
rows fill the model's schema and one built from Taler's own files, which has
more tables and columns than the model writes.
"""

_COLUMNS_TEXT = {
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
COLUMNS: dict[str, tuple[str, ...]] = {table: tuple(cols.split())
                                       for table, cols in _COLUMNS_TEXT.items()}
