"""The invariants a record must satisfy before it may enter the safe copy.

Everything here renders SQL from the registry, so the rules follow the table
specs.  Every rule is evaluated on the *destination* (the trusted safe copy),
never by the untrusted source: a batch is streamed as stored column values into
the destination table inside the batch transaction, the safe copy's own
constraints (NOT NULL, lengths, amounts, CHECKs, keys, FKs) reject what they
can, and the checks rendered here run over the batch's serial range before it
commits: row rules (derived hashes above all), relation rules where the
destination cannot enforce them itself (partitioned safe copies have no FKs and
only per-partition keys).  A rule may read other tables of the safe copy (a
parent row is already there and trusted), which derived-hash rules that need
the row's parent rely on.

Rule names are part of the interface: they appear in the HALT line, in
``taler_ops.sync_halts`` and in the Ansible module's failure.
"""

from collections.abc import Collection
from dataclasses import dataclass

from ..schema import hashing
from ..schema.exchange_schema import AMOUNT_FRAC_BASE, MAX_AMOUNT_VALUE
from ..schema.exchange_tables import TABLES
from ..schema.registry import Entry

NULL = "null"
LENGTH = "length"
AMOUNT_NULL = "amount-null"
AMOUNT_NEGATIVE = "amount-negative"
AMOUNT_NOT_NORMALIZED = "amount-not-normalized"
DERIVED_HASH = "derived-hash"
CHECK = "check"
PARENT_MISSING = "parent-missing"
DUPLICATE_KEY = "duplicate-key"
DUPLICATE_SERIAL = "duplicate-serial"
SCHEMA_DRIFT = "schema-drift"
# A row appeared in a hole whose horizon had passed: the watermark already went past it.
LATE_ROW = "late-row"
# The source sent rows outside the serial range it was asked for.
OUT_OF_RANGE = "out-of-range"
# The source could hide rows from the sync's reader (views, rules, RLS, foreign tables).
HIDDEN_ROWS = "hidden-rows"

ROW_RULES = (NULL, LENGTH, AMOUNT_NULL, AMOUNT_NEGATIVE, AMOUNT_NOT_NORMALIZED,
             DERIVED_HASH, CHECK)
RELATION_RULES = (PARENT_MISSING, DUPLICATE_KEY, DUPLICATE_SERIAL, LATE_ROW, OUT_OF_RANGE)
ALL_RULES = ROW_RULES + RELATION_RULES + (SCHEMA_DRIFT, HIDDEN_ROWS)

_SPECS = {t.name: t for t in TABLES}


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def qualified(name: str) -> str:
    return f"exchange.{q(name)}"


@dataclass(frozen=True)
class RowRule:
    rule: str
    column: str
    violated: str     # SQL, true when the row breaks the rule
    detail: str       # SQL text expression explaining it


def row_rules(entry: Entry) -> list[RowRule]:
    """The per-row rules of a registry entry, in the order they are reported."""
    rules: list[RowRule] = []
    derived = {d.column: d for d in entry.derived}
    for col in entry.copy_columns:
        c = q(col.name)
        if not col.nullable:
            rules.append(RowRule(NULL, col.name, f"{c} IS NULL", lit("is NULL")))
        if col.length is not None:
            rules.append(RowRule(
                LENGTH, col.name, f"length({c}) <> {col.length}",
                f"'has length ' || length({c}) || ', expected {col.length}'"))
        if col.is_amount:
            shown = f"'is ' || {c}::text"
            # "NOT (x IS NULL)", not "x IS NOT NULL": the latter is false for (NULL, 5).
            rules.append(RowRule(AMOUNT_NULL, col.name,
                                 f"NOT ({c} IS NULL) AND (({c}).val IS NULL OR ({c}).frac IS NULL)",
                                 f"{shown} || ': an amount part is NULL'"))
            rules.append(RowRule(AMOUNT_NEGATIVE, col.name, f"(({c}).val < 0 OR ({c}).frac < 0)",
                                 f"{shown} || ': negative'"))
            rules.append(RowRule(
                AMOUNT_NOT_NORMALIZED, col.name,
                f"(({c}).frac >= {AMOUNT_FRAC_BASE} OR ({c}).val > {MAX_AMOUNT_VALUE})",
                f"{shown} || ': frac must be < {AMOUNT_FRAC_BASE} and val <= {MAX_AMOUNT_VALUE}'"))
        if col.check:
            rules.append(RowRule(CHECK, col.name, f"NOT ({col.check})",
                                 f"'= ' || {c}::text || ' violates CHECK ({col.check})'"))
        if col.name in derived:
            d = derived[col.name]
            # Evaluated on the destination, over the candidate rows: a rule that needs
            # the row's parent reads it with a scalar subquery on exchange.<parent>
            # (already in the safe copy, so trusted); column names here are unqualified.
            expr = hashing.derived_expression(d)
            rules.append(RowRule(DERIVED_HASH, col.name, f"{c} IS DISTINCT FROM {expr}",
                                 lit(f"does not match {d.rule}({d.source})")))
    return rules


def any_violation_sql(entry: Entry) -> str:
    """One boolean SQL expression: the row breaks at least one row rule."""
    return "(" + " OR ".join(f"({r.violated})" for r in row_rules(entry)) + ")"


def first_violation_sql(entry: Entry) -> str:
    """A CASE naming the first rule the row breaks: 'rule<TAB>column<TAB>detail', else NULL."""
    whens = [f"WHEN {r.violated} THEN {lit(r.rule + chr(9) + r.column + chr(9))} || {r.detail}"
             for r in row_rules(entry)]
    return "CASE " + " ".join(whens) + " END"


def row_check(entry: Entry, rows_table: str) -> str:
    """SQL on the destination: the first serial in (lo, hi] of ``rows_table`` breaking a row rule.

    Runs on the trusted server after the batch was streamed in, so no rule is
    ever evaluated by the source.  The safe copy's constraints already refuse
    most of these; evaluating them again here keeps the guarantee independent of
    how the safe copy's DDL was made, and computes the derived hashes, which no
    constraint does.  Returns (serial, 'rule<TAB>column<TAB>detail') or no row.
    """
    s = q(entry.serial)
    return (f"SELECT {s}, {first_violation_sql(entry)} FROM {rows_table} "
            f"WHERE {s} > %(lo)s AND {s} <= %(hi)s AND {any_violation_sql(entry)} "
            f"ORDER BY {s} LIMIT 1")


def copy_select_list(entry: Entry) -> str:
    """The copied columns as stored on the source: nothing is computed there."""
    return column_list(entry)


def column_list(entry: Entry) -> str:
    return ", ".join(q(c.name) for c in entry.copy_columns)


# -- relation rules, evaluated on the destination ------------------------------

def _in_range(alias: str, entry: Entry) -> str:
    s = f"{alias}.{q(entry.serial)}"
    return f"{s} > %(lo)s AND {s} <= %(hi)s"


def relation_checks(entry: Entry, rows_table: str, target_table: str,
                    enforced_keys: Collection[tuple[str, ...]] | None = None,
                    foreign_keys: bool = True) -> list[tuple[str, str]]:
    """(rule, SQL returning the first offending serial and a detail) for new rows.

    ``rows_table`` holds the candidate rows (the target itself after an
    uncommitted COPY, or a staging table); ``target_table`` is the safe copy's
    table.  ``enforced_keys``: keys the destination enforces globally itself
    (skipped); ``foreign_keys``: the destination enforces FKs itself (skipped).
    """
    same = rows_table == target_table
    s = q(entry.serial)
    checks: list[tuple[str, str]] = []
    keys = [(entry.serial,)] + [k for k in entry.natural_keys]
    for key in keys:
        if enforced_keys is not None and tuple(key) in enforced_keys:
            continue
        rule = DUPLICATE_SERIAL if tuple(key) == (entry.serial,) else DUPLICATE_KEY
        match = " AND ".join(f"o.{q(k)} = n.{q(k)}" for k in key)
        shown = " || ', ' || ".join(f"n.{q(k)}::text" for k in key)
        # Blame the later of two clashing rows (old rows always come earlier).
        earlier = (f"(o.{s} < n.{s} OR (o.{s} = n.{s} AND "
                   f"(o.tableoid, o.ctid) < (n.tableoid, n.ctid)))")
        if same:
            other = f"EXISTS (SELECT 1 FROM {target_table} o WHERE {match} AND {earlier})"
        else:
            other = (f"EXISTS (SELECT 1 FROM {target_table} o WHERE {match}) OR "
                     f"EXISTS (SELECT 1 FROM {rows_table} o WHERE {match} AND {earlier})")
        detail = f"'({', '.join(key)}) = (' || {shown} || ') already exists'"
        checks.append((rule, f"SELECT n.{s}, {detail} FROM {rows_table} n "
                             f"WHERE {_in_range('n', entry)} AND ({other}) "
                             f"ORDER BY n.{s} LIMIT 1"))
    if not foreign_keys:
        for fk in entry.parents:
            notnull = " AND ".join(f"n.{q(c)} IS NOT NULL" for c in fk.columns)
            match = " AND ".join(f"p.{q(r)} = n.{q(c)}" for c, r in zip(fk.columns, fk.ref_columns))
            shown = " || ', ' || ".join(f"n.{q(c)}::text" for c in fk.columns)
            detail = (f"'({', '.join(fk.columns)}) = (' || {shown} || ') has no row in "
                      f"{fk.table}({', '.join(fk.ref_columns)})'")
            checks.append((PARENT_MISSING,
                           f"SELECT n.{s}, {detail} FROM {rows_table} n "
                           f"WHERE {_in_range('n', entry)} AND {notnull} AND NOT EXISTS "
                           f"(SELECT 1 FROM {qualified(fk.table)} p WHERE {match}) "
                           f"ORDER BY n.{s} LIMIT 1"))
    return checks


def globally_enforced_keys(entry: Entry, partitions: int | None) -> set[tuple[str, ...]]:
    """Keys a destination with this partitioning enforces across the whole table."""
    keys: set[tuple[str, ...]] = _SPECS[entry.name].enforced_keys(partitions)
    return keys
