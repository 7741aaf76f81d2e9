"""Hash rules for derived columns (see docs/hash-rules.md).

Taler hashes with its own encodings; taler-ops defines simpler, documented
rules and applies them the same way everywhere: the generator writes them, the
sync recomputes them and halts on a mismatch.  Each rule has a Python form
(for streaming validation) and an SQL form (for set-based checks), which the
tests keep equal.

- sha512:                  SHA-512 of the bytes (denom_pub_hash, h_coin_ev)
- sha256:                  SHA-256 of the UTF-8 text (wire_target_h_payto)
- sha256_normalized_payto: SHA-256 of the payto URI without its query part,
                           ASCII letters lower-cased (h_normalized_payto)
"""

import hashlib

_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER = _UPPER.lower()
_ASCII_LOWER = str.maketrans(_UPPER, _LOWER)


def normalize_payto(uri):
    return uri.split("?", 1)[0].translate(_ASCII_LOWER)


def _as_bytes(value):
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


RULES = {
    "sha512": (lambda v: hashlib.sha512(_as_bytes(v)).digest(),
               "sha512({0})"),
    "sha256": (lambda v: hashlib.sha256(_as_bytes(v)).digest(),
               "sha256(convert_to({0}, 'UTF8'))"),
    "sha256_normalized_payto": (
        lambda v: hashlib.sha256(normalize_payto(v).encode("utf-8")).digest(),
        f"sha256(convert_to(translate(split_part({{0}}, '?', 1), '{_UPPER}', '{_LOWER}'), 'UTF8'))"),
}


def compute(rule, value):
    return RULES[rule][0](value)


def sql_expression(rule, column_sql):
    return RULES[rule][1].format(column_sql)
