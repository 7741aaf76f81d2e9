"""Taler's rules for derived columns (see docs/hash-rules.md).

Each rule is Taler's own formula (taler-exchange src/util/denom.c, payto.c,
crypto.c), byte for byte, in two forms kept equal by the tests: a Python form
(the generator writes it) and an SQL form (the sync recomputes it on the safe
copy and halts on a mismatch).

- denom_pub_hash:      SHA-512(denom_pub[4:8] || denom_pub[0:4] || denom_pub[8:]); the
                       stored denom_pub has cipher and age mask in the other order
- full_payto:          SHA-512(utf8(uri) || 0x00)[0:32] (the C string with its NUL)
- normalized_payto:    SHA-512(utf8(normalize(uri)) || 0x00)[0:32]; NULL when Taler has no
                       normalized form (the URI fails Taler's validation)
- coin_ev_hash:        SHA-512(denom_pub_hash of the row's denomination || coin_ev[0:4] ||
                       coin_ev[8:]) (parent-dependent: joins exchange.denominations)
- sha512:              SHA-512 of the bytes or UTF-8 text (no derived column uses it;
                       the generator uses it for hash-like values)
"""

import hashlib
import re
from collections.abc import Callable

from .spec import DerivedHash, Rule

# -- payto validation and normalisation (TALER_payto_validate / _normalize) --------

_PAYTO = "payto://"
_ALLOWED = re.compile(r"^[A-Za-z0-9/:$&?!\-_.,;=*+%~@()\[\]]*$")
_HOST = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?(:[0-9]+)?$")
# Country codes with IBANs (ISO 13616 registry), as TALER_iban_validate knows them.
_IBAN_COUNTRIES = frozenset("""AD AE AL AT AZ BA BE BG BH BI BR BY CH CR CY CZ DE DJ DK DO EE EG ES
FI FK FO FR GB GE GI GL GR GT HR HU IE IL IQ IS IT JO KW KZ LB LC LI LT LU LV LY MC MD ME MK MN
MR MT MU NI NL NO OM PK PL PS PT QA RO RS RU SA SC SD SE SI SK SM SO ST SV TL TN TR UA VA VG XK
YE""".split())


def iban_valid(iban: str) -> bool:
    """Taler's check: 4..34 characters, a known country, mod-97 = 1 (upper case only)."""
    if not 4 <= len(iban) <= 34 or iban[:2] not in _IBAN_COUNTRIES:
        return False
    digits = []
    for ch in iban[4:] + iban[:4]:
        if "0" <= ch <= "9":
            digits.append(ch)
        elif "A" <= ch <= "Z":
            digits.append(str(ord(ch) - ord("A") + 10))
        else:
            return False
    return int("".join(digits)) % 97 == 1


def iban_check_digits(country: str, bban: str) -> str:
    """The two check digits that make ``country + dd + bban`` a valid IBAN."""
    rest = "".join(ch if ch.isdigit() else str(ord(ch) - 55) for ch in bban + country) + "00"
    return f"{98 - int(rest) % 97:02d}"


def _has_param(query: str, name: str) -> bool:
    return any(p.lower().startswith(name + "=") for p in query.split("&"))


def payto_invalid(uri: str) -> str | None:
    """Why Taler rejects ``uri`` (a short reason), or None when it is valid."""
    if uri[:len(_PAYTO)].lower() != _PAYTO:
        return "not a payto:// URI"
    if not _ALLOWED.match(uri):
        return "character outside Taler's payto alphabet"
    rest = uri[len(_PAYTO):]
    if "/" not in rest:
        return "no '/' after the method"
    method, _, tail = rest.partition("/")
    path, sep, query = tail.partition("?")
    method = method.lower()
    if method == "iban":
        if not iban_valid(path.split("/")[-1]):
            return "invalid IBAN"
        if not (sep and _has_param(query, "receiver-name")):
            return "missing receiver-name"
    elif method == "x-taler-bank":
        host, slash, account = path.partition("/")
        if not _HOST.match(host) or host.startswith("."):
            return "invalid x-taler-bank host"
        if not slash or not account:
            return "missing account"
        if not (sep and _has_param(query, "receiver-name")):
            return "missing receiver-name"
    return None


def _case_until(text: str, n_slashes: int, fold: Callable[[str], str]) -> str:
    """Apply ``fold`` to the characters before the n-th '/'."""
    out, seen = [], 0
    for ch in text:
        seen += ch == "/"
        out.append(fold(ch) if seen < n_slashes else ch)
    return "".join(out)


def _ascii_lower(text: str) -> str:
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)


def _ascii_upper(text: str) -> str:
    return "".join(chr(ord(c) - 32) if "a" <= c <= "z" else c for c in text)


def normalize_payto(uri: str) -> str | None:
    """Taler's normalized payto URI, or None when Taler has none (invalid URI)."""
    if payto_invalid(uri) is not None:
        return None
    base = uri.split("?", 1)[0]
    method = _ascii_lower(base[len(_PAYTO):base.index("/", len(_PAYTO))])
    if method == "x-taler-bank":
        return _case_until(base, 4, _ascii_lower)
    if method == "bitcoin":
        return _case_until(base, 3, _ascii_lower)
    if method in ("upi", "ilp"):
        return _ascii_lower(base)
    if method == "iban":
        parts = base.split("/")
        if len(parts) not in (4, 5):
            return None
        return "payto://iban/" + _ascii_upper(parts[-1])
    return base


def full_payto_hash(uri: str) -> bytes:
    return hashlib.sha512(uri.encode("utf-8") + b"\0").digest()[:32]


def normalized_payto_hash(uri: str) -> bytes | None:
    norm = normalize_payto(uri)
    return None if norm is None else full_payto_hash(norm)


def denom_pub_hash(denom_pub: bytes) -> bytes:
    d = bytes(denom_pub)
    return hashlib.sha512(d[4:8] + d[0:4] + d[8:]).digest()


def coin_ev_hash(coin_ev: bytes, denom_pub_hash_of_row: bytes) -> bytes:
    ev = bytes(coin_ev)
    return hashlib.sha512(bytes(denom_pub_hash_of_row) + ev[0:4] + ev[8:]).digest()


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


# -- SQL forms ---------------------------------------------------------------
# They never contain '%': the sync runs them in statements with psycopg parameters.

def _sql_full(text_sql: str) -> str:
    return f"substring(sha512(convert_to({text_sql}, 'UTF8') || '\\x00'::bytea) from 1 for 32)"


def _sql_normalize(u: str) -> str:
    """Taler's per-method normalisation without validation (validation: _sql_valid)."""
    base = f"split_part({u}, '?', 1)"
    segs = f"string_to_array({base}, '/')"
    n = f"cardinality({segs})"
    method = f"lower(split_part({base}, '/', 3))"
    # lower-case before the k-th '/': the first k segments, then the rest as is.
    def until(k: int) -> str:
        return (f"lower(array_to_string(({segs})[1:{k}], '/')) || "
                f"CASE WHEN {n} > {k} THEN '/' || array_to_string(({segs})[{k + 1}:], '/') "
                f"ELSE '' END")
    return (f"CASE {method} "
            f"WHEN 'x-taler-bank' THEN {until(4)} "
            f"WHEN 'bitcoin' THEN {until(3)} "
            f"WHEN 'upi' THEN lower({base}) WHEN 'ilp' THEN lower({base}) "
            f"WHEN 'iban' THEN CASE WHEN {n} IN (4, 5) "
            f"THEN 'payto://iban/' || upper(({segs})[{n}]) END "
            f"ELSE {base} END")


def _sql_iban_valid(iban: str) -> str:
    """TALER_iban_validate in SQL: length, country, mod-97 computed digit by digit."""
    countries = ", ".join(f"'{c}'" for c in sorted(_IBAN_COUNTRIES))
    rotated = f"(substr({iban}, 5) || substr({iban}, 1, 4))"
    digits = (f"(SELECT string_agg(CASE WHEN ch BETWEEN '0' AND '9' THEN ch "
              f"ELSE (ascii(ch) - 55)::text END, '' ORDER BY i) "
              f"FROM unnest(string_to_array({rotated}, NULL)) WITH ORDINALITY AS x(ch, i))")
    # CASE, not AND: the digit string is only a number once the alphabet is checked.
    return (f"(length({iban}) BETWEEN 4 AND 34 AND substr({iban}, 1, 2) IN ({countries}) "
            f"AND CASE WHEN {rotated} ~ '^[0-9A-Z]+$' "
            f"THEN mod(({digits})::numeric, 97) = 1 ELSE FALSE END)")


def _sql_valid(u: str) -> str:
    base = f"split_part({u}, '?', 1)"
    query = f"substr({u}, length({base}) + 2)"
    has_name = f"position('&receiver-name=' in '&' || lower({query})) > 0"
    has_q = f"position('?' in {u}) > 0"
    rest = f"substr({base}, 9)"
    method = f"lower(split_part({rest}, '/', 1))"
    path = f"substr({rest}, length(split_part({rest}, '/', 1)) + 2)"
    host = f"split_part({path}, '/', 1)"
    account = f"substr({path}, length({host}) + 2)"
    last = f"(string_to_array({base}, '/'))[cardinality(string_to_array({base}, '/'))]"
    return (f"(lower(substr({u}, 1, 8)) = 'payto://' "
            f"AND {u} ~ '^[A-Za-z0-9/:$&?!_.,;=*+\\x25~@()\\[\\]-]*$' "
            f"AND position('/' in {rest}) > 0 "
            f"AND CASE {method} "
            f"WHEN 'iban' THEN {_sql_iban_valid(last)} AND {has_q} AND {has_name} "
            f"WHEN 'x-taler-bank' THEN {host} ~ '^[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*\\.?(:[0-9]+)?$' "
            f"AND position('/' in {path}) > 0 AND {account} <> '' AND {has_q} AND {has_name} "
            f"ELSE TRUE END)")


def _sql_normalized_hash(u: str) -> str:
    return f"CASE WHEN {_sql_valid(u)} THEN {_sql_full(_sql_normalize(u))} END"


# rule -> (Python form, SQL form); a parent-dependent rule takes the parent's value too,
# so each form takes one or two arguments.
RULES: dict[Rule, tuple[Callable[..., bytes | None], Callable[..., str]]] = {
    "denom_pub_hash": (denom_pub_hash,
                       lambda c: f"sha512(substring({c} from 5 for 4) || "
                                 f"substring({c} from 1 for 4) || substring({c} from 9))"),
    "full_payto": (full_payto_hash, _sql_full),
    "normalized_payto": (normalized_payto_hash, _sql_normalized_hash),
    "coin_ev_hash": (coin_ev_hash,
                     lambda c, p: f"sha512({p} || substring({c} from 1 for 4) || "
                                  f"substring({c} from 9))"),
    "sha512": (lambda v: hashlib.sha512(_as_bytes(v)).digest(), lambda c: f"sha512({c})"),
}


def compute(rule: Rule, value: str | bytes, parent_value: bytes | None = None) -> bytes | None:
    fn = RULES[rule][0]
    return fn(value) if parent_value is None else fn(value, parent_value)


def sql_expression(rule: Rule, column_sql: str, parent_sql: str | None = None) -> str:
    fn = RULES[rule][1]
    return fn(column_sql) if parent_sql is None else fn(column_sql, parent_sql)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def derived_expression(derived: DerivedHash, row_alias: str | None = None,
                       schema: str = "exchange") -> str:
    """The SQL recomputing a DerivedHash for the current row (``row_alias`` qualifies
    its columns).  A parent-dependent rule reads the parent's value with a scalar
    subquery, so the expression fits any SELECT over the table."""
    col = (lambda n: f"{row_alias}.{_q(n)}") if row_alias else _q
    if derived.null_kept:
        # The row's own NULL stands (e.g. h_normalized_payto of a pre-0007 account).
        plain = type(derived)(derived.column, derived.rule, derived.source, derived.parent)
        return (f"CASE WHEN {col(derived.column)} IS NULL THEN NULL::bytea "
                f"ELSE {derived_expression(plain, row_alias, schema)} END")
    if derived.parent is None:
        return sql_expression(derived.rule, col(derived.source))
    local, table, key, value = derived.parent
    # The row's own column is read inside VALUES, where the parent table is not
    # in scope: an unqualified name there can only mean the outer row's column
    # (in "WHERE p.key = key" it would mean the parent's own).
    parent = (f"(SELECT p.{_q(value)} FROM (VALUES ({col(local)})) AS o(k) "
              f"JOIN {schema}.{_q(table)} p ON p.{_q(key)} = o.k)")
    return sql_expression(derived.rule, col(derived.source), parent)
