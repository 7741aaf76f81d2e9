"""The invariants a record must satisfy before it may enter the safe copy.

Everything here renders SQL from the registry, so the rules follow the table
specs.  Row rules (NULLs, lengths, amounts, derived hashes, column CHECKs) are
evaluated set-based on the *source*, inside the sync's snapshot, before a batch
is streamed; relation rules (parents, natural keys, serials) are enforced by
the destination's constraints and, where the destination cannot enforce them
(partitioned safe copies have no FKs and only per-partition keys), checked
explicitly on the destination before the batch commits.

Rule names are part of the interface: they appear in the HALT line, in
``exchange.sync_halts`` and in the Ansible module's failure.
"""

from dataclasses import dataclass

from . import hashing
from .exchange_schema import AMOUNT_FRAC_BASE, MAX_AMOUNT_VALUE
from .exchange_tables import TABLES

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
SERIAL_GAP = "serial-gap"

ROW_RULES = (NULL, LENGTH, AMOUNT_NULL, AMOUNT_NEGATIVE, AMOUNT_NOT_NORMALIZED,
             DERIVED_HASH, CHECK)
RELATION_RULES = (PARENT_MISSING, DUPLICATE_KEY, DUPLICATE_SERIAL, SERIAL_GAP)
ALL_RULES = ROW_RULES + RELATION_RULES + (SCHEMA_DRIFT,)

_SPECS = {t.name: t for t in TABLES}


def q(name):
    return '"' + name.replace('"', '""') + '"'


def lit(text):
    return "'" + text.replace("'", "''") + "'"


def qualified(name):
    return f"exchange.{q(name)}"


@dataclass(frozen=True)
class RowRule:
    rule: str
    column: str
    violated: str     # SQL, true when the row breaks the rule
    detail: str       # SQL text expression explaining it


def row_rules(entry):
    """The per-row rules of a registry entry, in the order they are reported."""
    rules = []
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
            expr = hashing.derived_expression(d)
            rules.append(RowRule(DERIVED_HASH, col.name, f"{c} IS DISTINCT FROM {expr}",
                                 lit(f"does not match {d.rule}({d.source})")))
    return rules


def any_violation_sql(entry):
    """One boolean SQL expression: the row breaks at least one row rule."""
    return "(" + " OR ".join(f"({r.violated})" for r in row_rules(entry)) + ")"


def first_violation_sql(entry):
    """A CASE naming the first rule the row breaks: 'rule<TAB>column<TAB>detail', else NULL."""
    whens = [f"WHEN {r.violated} THEN {lit(r.rule + chr(9) + r.column + chr(9))} || {r.detail}"
             for r in row_rules(entry)]
    return "CASE " + " ".join(whens) + " END"


def copy_select_list(entry):
    """The copied columns as the source is read: derived hashes are recomputed, not trusted."""
    derived = {d.column: d for d in entry.derived}
    out = []
    for col in entry.copy_columns:
        if col.name in derived:
            d = derived[col.name]
            out.append(f"{hashing.derived_expression(d)} AS {q(col.name)}")
        else:
            out.append(q(col.name))
    return ", ".join(out)


def column_list(entry):
    return ", ".join(q(c.name) for c in entry.copy_columns)


# -- relation rules, evaluated on the destination ------------------------------

def _in_range(alias, entry):
    s = f"{alias}.{q(entry.serial)}"
    return f"{s} > %(lo)s AND {s} <= %(hi)s"


def relation_checks(entry, rows_table, target_table, enforced_keys=None, foreign_keys=True):
    """(rule, SQL returning the first offending serial and a detail) for new rows.

    ``rows_table`` holds the candidate rows (the target itself after an
    uncommitted COPY, or a staging table); ``target_table`` is the safe copy's
    table.  ``enforced_keys``: keys the destination enforces globally itself
    (skipped); ``foreign_keys``: the destination enforces FKs itself (skipped).
    """
    same = rows_table == target_table
    s = q(entry.serial)
    checks = []
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


def globally_enforced_keys(entry, partitions):
    """Keys a destination with this partitioning enforces across the whole table."""
    return _SPECS[entry.name].enforced_keys(partitions)
