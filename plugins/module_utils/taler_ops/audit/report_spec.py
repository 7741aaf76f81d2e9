"""What the report reads from Taler's auditor database: one entry per report table.

Table and column names are those of Taler's auditor schema (patches auditor-0001 and
auditor-0002, schema ``auditor``).  Every report table has ``row_id`` and
``suppressed``; an operator (through Taler's auditor web service) suppresses a finding
that was looked into, and the report lists suppressed findings apart.

Column kinds: ``int``, ``text``, ``bool``, ``amount`` (``auditor.taler_amount``),
``key`` (BYTEA, shown in Crockford base32 as Taler shows keys), ``time`` (INT8 µs
since the epoch).  A *measure* sums an amount over a table's findings: its category
says whether the summary counts it as a loss (money the exchange or its customers
lost), a risk (money that may still be lost), or an amount at issue (money whose
books disagree, without a loss being established).
"""

from typing import NamedTuple


class Col(NamedTuple):
    name: str
    kind: str
    label: str


class Measure(NamedTuple):
    name: str
    label: str
    expr: str               # SQL summed over the table's rows
    where: str | None       # SQL: which rows count (None: all)
    category: str           # LOSS, RISK or ISSUE


class Section(NamedTuple):
    table: str
    title: str
    helper: str
    what: str
    columns: tuple[Col, ...]
    measures: tuple[Measure, ...]


def units(col: str) -> str:
    """SQL: a taler_amount column as numeric units of 1e-8."""
    return f"(({col}).val::numeric * 100000000 + ({col}).frac)"


def delta(a: str, b: str) -> str:
    return f"abs({units(a)} - {units(b)})"


LOSS, RISK, ISSUE = "loss", "risk", "at issue"

SECTIONS = (
    Section("auditor_bad_sig_losses", "Bad signatures", "coins, aggregation, purses, reserves",
            "Operations whose signature does not verify; the exchange carried them out "
            "anyway, so their amount is lost.",
            (Col("problem_row_id", "int", "row"), Col("operation", "text", "operation"),
             Col("loss", "amount", "loss"), Col("operation_specific_pub", "key", "public key")),
            (Measure("loss", "bad signatures", units("loss"), None, LOSS),)),
    Section("auditor_amount_arithmetic_inconsistency", "Amount arithmetic",
            "coins, aggregation, purses, reserves",
            "Amounts the exchange computed differently from the auditor (fees, totals, "
            "balances). 'profitable' means the difference favours the exchange.",
            (Col("problem_row_id", "int", "row"), Col("operation", "text", "operation"),
             Col("exchange_amount", "amount", "exchange"),
             Col("auditor_amount", "amount", "auditor"), Col("profitable", "bool", "profitable")),
            (Measure("loss", "arithmetic errors against the exchange",
                     delta("exchange_amount", "auditor_amount"), "NOT profitable", LOSS),
             Measure("gain", "arithmetic errors in the exchange's favour",
                     delta("exchange_amount", "auditor_amount"), "profitable", ISSUE))),
    Section("auditor_coin_inconsistency", "Coin inconsistencies", "aggregation",
            "A coin's transactions do not add up (for example spent beyond its value).",
            (Col("operation", "text", "operation"), Col("coin_pub", "key", "coin"),
             Col("exchange_amount", "amount", "exchange"),
             Col("auditor_amount", "amount", "auditor"), Col("profitable", "bool", "profitable")),
            (Measure("loss", "coin inconsistencies against the exchange",
                     delta("exchange_amount", "auditor_amount"), "NOT profitable", LOSS),
             Measure("gain", "coin inconsistencies in the exchange's favour",
                     delta("exchange_amount", "auditor_amount"), "profitable", ISSUE))),
    Section("auditor_emergency", "Emergencies (by value)", "coins",
            "Denominations of which more value was deposited than was issued: the "
            "denomination's private key may be compromised.",
            (Col("denompub_h", "key", "denomination"), Col("value", "amount", "value"),
             Col("denom_risk", "amount", "risk"), Col("denom_loss", "amount", "loss"),
             Col("deposit_start", "time", "deposits from"),
             Col("deposit_end", "time", "deposits until")),
            (Measure("loss", "emergencies (value)", units("denom_loss"), None, LOSS),
             Measure("risk", "emergencies (value)", units("denom_risk"), None, RISK))),
    Section("auditor_emergency_by_count", "Emergencies (by count)", "coins",
            "Denominations of which more coins are known than were issued.",
            (Col("denompub_h", "key", "denomination"), Col("value", "amount", "value"),
             Col("num_issued", "int", "issued"), Col("num_known", "int", "known"),
             Col("risk", "amount", "risk"), Col("start", "time", "valid from"),
             Col("deposit_end", "time", "deposits until")),
            (Measure("risk", "emergencies (count)", units("risk"), None, RISK),)),
    Section("auditor_refreshes_hanging", "Hanging refreshes", "coins",
            "Melts that were never revealed: the melted value is stuck.",
            (Col("problem_row_id", "int", "row"), Col("amount", "amount", "amount")),
            (Measure("risk", "hanging refreshes", units("amount"), None, RISK),)),
    Section("auditor_denominations_without_sigs", "Denominations without auditor signature",
            "coins", "Denominations in use that this auditor never signed.",
            (Col("denompub_h", "key", "denomination"), Col("value", "amount", "value"),
             Col("start_time", "time", "valid from"), Col("end_time", "time", "valid until")),
            ()),
    Section("auditor_denomination_key_validity_withdraw_inconsistency",
            "Withdrawals outside the denomination's validity", "reserves",
            "Coins withdrawn while their denomination was not valid for withdrawal.",
            (Col("problem_row_id", "int", "row"), Col("execution_date", "time", "executed"),
             Col("reserve_pub", "key", "reserve"), Col("denompub_h", "key", "denomination")),
            ()),
    Section("auditor_reserve_balance_insufficient_inconsistency", "Reserve balance insufficient",
            "reserves", "Withdrawals beyond a reserve's balance (a loss), or a balance the "
            "exchange lacks (gain).",
            (Col("reserve_pub", "key", "reserve"), Col("inconsistency_gain", "bool", "gain"),
             Col("inconsistency_amount", "amount", "amount")),
            (Measure("loss", "reserve balances insufficient", units("inconsistency_amount"),
                     "NOT inconsistency_gain", LOSS),
             Measure("gain", "reserve balance gains", units("inconsistency_amount"),
                     "inconsistency_gain", ISSUE))),
    Section("auditor_reserve_balance_summary_wrong_inconsistency", "Reserve balance summary wrong",
            "reserves (-i)", "The exchange's stored reserve balance differs from the "
            "auditor's (internal audits only).",
            (Col("reserve_pub", "key", "reserve"), Col("exchange_amount", "amount", "exchange"),
             Col("auditor_amount", "amount", "auditor")),
            (Measure("delta", "reserve summaries wrong",
                     delta("exchange_amount", "auditor_amount"), None, ISSUE),)),
    Section("auditor_reserve_not_closed_inconsistency", "Reserves not closed", "reserves",
            "Expired reserves with a balance that the exchange has not closed.",
            (Col("reserve_pub", "key", "reserve"), Col("balance", "amount", "balance"),
             Col("expiration_time", "time", "expired"), Col("diagnostic", "text", "diagnostic")),
            (Measure("balance", "reserves not closed", units("balance"), None, ISSUE),)),
    Section("auditor_purse_not_closed_inconsistencies", "Purses not closed", "purses",
            "Expired purses the exchange has not decided.",
            (Col("purse_pub", "key", "purse"), Col("amount", "amount", "amount"),
             Col("expiration_date", "time", "expired")),
            (Measure("amount", "purses not closed", units("amount"), None, ISSUE),)),
    Section("auditor_wire_out_inconsistency", "Outgoing wire transfers", "aggregation, wire-debit",
            "Wire transfers whose amount differs from what the aggregated deposits justify.",
            (Col("wire_out_serial_id", "int", "wire_out"),
             Col("destination_account", "text", "account"),
             Col("expected", "amount", "expected"), Col("claimed", "amount", "claimed"),
             Col("diagnostic", "text", "diagnostic")),
            (Measure("delta", "wire transfers out", delta("expected", "claimed"), None, ISSUE),)),
    Section("auditor_closure_lags", "Closure lags", "wire-debit",
            "Reserve closures or transfers not executed by their deadline.",
            (Col("problem_row_id", "int", "row"), Col("amount", "amount", "amount"),
             Col("deadline", "time", "deadline"), Col("wtid", "key", "wire transfer id"),
             Col("account", "text", "account")),
            (Measure("amount", "closure lags", units("amount"), None, ISSUE),)),
    Section("auditor_reserve_in_inconsistency", "Incoming wire transfers", "wire-credit",
            "Incoming transfers the bank and the exchange disagree on.",
            (Col("bank_row_id", "int", "bank row"), Col("reserve_pub", "key", "reserve"),
             Col("amount_exchange_expected", "amount", "exchange"),
             Col("amount_wired", "amount", "wired"), Col("timestamp", "time", "time"),
             Col("account", "text", "account"), Col("diagnostic", "text", "diagnostic")),
            (Measure("delta", "wire transfers in",
                     delta("amount_exchange_expected", "amount_wired"), None, ISSUE),)),
    Section("auditor_misattribution_in_inconsistency", "Misattributed incoming transfers",
            "wire-credit", "Incoming transfers credited to a reserve other than the one named.",
            (Col("bank_row", "int", "bank row"), Col("reserve_pub", "key", "reserve"),
             Col("amount", "amount", "amount")),
            (Measure("amount", "misattributed transfers", units("amount"), None, ISSUE),)),
    Section("auditor_wire_format_inconsistency", "Wire format", "wire-credit, wire-debit",
            "Bank transfers whose subject or format is malformed.",
            (Col("wire_offset", "int", "offset"), Col("amount", "amount", "amount"),
             Col("diagnostic", "text", "diagnostic")),
            (Measure("amount", "malformed transfers", units("amount"), None, ISSUE),)),
    Section("auditor_fee_time_inconsistency", "Fee time", "aggregation",
            "Fees applied outside the validity of the fee schedule.",
            (Col("problem_row_id", "int", "row"), Col("fee_type", "text", "fee"),
             Col("fee_time", "time", "time"), Col("diagnostic", "text", "diagnostic")),
            ()),
    Section("auditor_row_inconsistency", "Row inconsistencies", "all helpers",
            "Rows of the exchange database that are malformed or contradict others.",
            (Col("row_table", "text", "table"), Col("problem_row_id", "int", "row"),
             Col("diagnostic", "text", "diagnostic")),
            ()),
    Section("auditor_row_minor_inconsistencies", "Minor row inconsistencies",
            "wire-credit, wire-debit", "Inconsistencies without consequence for balances.",
            (Col("row_table", "text", "table"), Col("problem_row", "int", "row"),
             Col("diagnostic", "text", "diagnostic")),
            ()),
    Section("auditor_pending_deposits", "Deposits pending past their deadline", "transfer",
            "Deposits whose wire deadline passed without a matching wire transfer yet.",
            (Col("batch_deposit_serial_id", "int", "batch deposit"),
             Col("wire_target_h_payto", "key", "account hash"),
             Col("total_amount", "amount", "amount"), Col("deadline", "time", "deadline")),
            (Measure("amount", "deposits pending", units("total_amount"), None, ISSUE),)),
    Section("auditor_deposit_confirmations", "Deposit confirmations not found", "deposits",
            "Confirmations merchants submitted that the deposits check has not matched to "
            "a deposit in the exchange database (matched ones are deleted).",
            (Col("h_contract_terms", "key", "contract"), Col("merchant_pub", "key", "merchant"),
             Col("exchange_timestamp", "time", "time"),
             Col("total_without_fee", "amount", "amount"), Col("ancient", "bool", "ancient")),
            (Measure("amount", "deposit confirmations missing", units("total_without_fee"),
                     None, ISSUE),)),
)

# Progress keys (facts §7.4): helper and the exchange table whose serials they count.
PROGRESS_TABLES: dict[str, tuple[str, str | None]] = {
    "aggregation_last_wire_out_serial_id": ("aggregation", "wire_out"),
    "coins_withdraw_serial_id": ("coins", "reserves_out"),
    "coins_deposit_serial_id": ("coins", "coin_deposits"),
    "coins_melt_serial_id": ("coins", "refresh_commitments"),
    "coins_refund_serial_id": ("coins", "refunds"),
    "coins_recoup_serial_id": ("coins", "recoup"),
    "coins_recoup_refresh_serial_id": ("coins", "recoup_refresh"),
    "coins_purse_deposits_serial_id": ("coins", "purse_deposits"),
    "coins_purse_refunds_serial_id": ("coins", "purse_decision"),
    "deposit_confirmation_serial_id": ("deposits", None),
    "purse_account_merge_serial_id": ("purses", "account_merges"),
    "purse_decision_serial_id": ("purses", "purse_decision"),
    "purse_deposits_serial_id": ("purses", "purse_deposits"),
    "purse_merges_serial_id": ("purses", "purse_merges"),
    "purse_request_serial_id": ("purses", "purse_requests"),
    "purse_open_counter": ("purses", None),
    "reserves_reserve_in_serial_id": ("reserves", "reserves_in"),
    "reserves_reserve_out_serial_id": ("reserves", "reserves_out"),
    "reserves_reserve_recoup_serial_id": ("reserves", "recoup"),
    "reserves_reserve_open_serial_id": ("reserves", "reserves_open_requests"),
    "reserves_reserve_close_serial_id": ("reserves", "reserves_close"),
    "reserves_purse_decisions_serial_id": ("reserves", "purse_decision"),
    "reserves_account_merges_serial_id": ("reserves", "account_merges"),
    "reserves_history_requests_serial_id": ("reserves", "history_requests"),
    "wire_batch_deposit_id": ("transfer", "batch_deposits"),
    "wire_aggregation_id": ("transfer", "aggregation_tracking"),
    "wire_reserve_close_id": ("wire-debit", "reserves_close"),
    # taler-ops' audit (docs/audit.md) also keeps these
    "reserves_reserves_serial_id": ("reserves", "reserves"),
    "reserves_wad_in_entries_serial_id": ("reserves", "wad_in_entries"),
    "reserves_open_deposits_serial_id": ("reserves", "reserves_open_deposits"),
    "coins_refresh_reveal_serial_id": ("coins", "refresh_revealed_coins"),
}
# Counters that are not serials (no range).
COUNTERS = ("purse_open_counter",)
# Balance keys whose prefix does not name their helper (facts §7.4).
BALANCE_HELPERS = {
    "coin_balance_risk": "coins", "total_escrowed": "coins", "coin_irregular_loss": "coins",
    "total_recoup_loss": "coins", "total_refresh_hanging": "coins",
    "total_missed_deposit_confirmations": "deposits", "total_amount_lag": "transfer",
    "total_wire_in": "wire-credit", "total_bad_amount_in_plus": "wire-credit",
    "total_bad_amount_in_minus": "wire-credit", "total_misattribution_in": "wire-credit",
    "total_wire_credit_fees": "wire-credit", "total_wire_out": "wire-debit",
    "total_bad_amount_out_plus": "wire-debit", "total_bad_amount_out_minus": "wire-debit",
    "total_closure_amount_lag": "wire-debit", "total_drained": "wire-debit",
}
# Prefixes of progress and balance keys -> helper.
HELPER_PREFIXES = (("aggregation_", "aggregation"), ("coins_", "coins"), ("coin_", "coins"),
                   ("deposit", "deposits"), ("purse", "purses"), ("reserves_", "reserves"),
                   ("wire-", "wire"), ("wire_", "transfer"), ("signatures_", "signatures"))


def progress_table(key: str) -> str | None:
    """The exchange table a progress key walks, or None."""
    if key in PROGRESS_TABLES:
        return PROGRESS_TABLES[key][1]
    if key.startswith("signatures_"):
        # taler-ops' signatures check: one key per signature column
        from .signatures import COLUMNS, progress_key
        for column in COLUMNS:
            if progress_key(column) == key:
                return column.table
    return None


def helper_of(key: str) -> str:
    if key in PROGRESS_TABLES:
        return PROGRESS_TABLES[key][0]
    if key in BALANCE_HELPERS:
        return BALANCE_HELPERS[key]
    for prefix, helper in HELPER_PREFIXES:
        if key.startswith(prefix):
            return helper
    return "-"


def balance_category(key: str) -> str:
    """How the summary reads an auditor_balances key: by the words Taler's names use."""
    k = key.lower()
    if "revenue" in k:
        return "revenue"
    if "loss" in k:
        return LOSS
    if "risk" in k:
        return RISK
    return "other"
