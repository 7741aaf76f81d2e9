"""Taler's derived-hash formulas: the test vectors of taler-real-schema.md §3.5.

Every vector is checked in the Python form and in the SQL form on a real
PostgreSQL server (the SQL forms are what the sync evaluates on the safe copy).
"""

import hashlib

import psycopg
import pytest

from taler_ops.schema import hashing, registry

PAYTO = [
    ("payto://x-taler-bank/localhost/alice?receiver-name=Alice",
     "37f7bbed5c75deb1aa8e4e127a95ce90769817adfc7774e5255861c56967da77",
     "payto://x-taler-bank/localhost/alice",
     "24d7ed909df4546629e2652b1ba520c5b4989bdddd06dd11769c4865a1d2b91a"),
    ("payto://X-Taler-Bank/LocalHost:8080/Alice?receiver-name=Alice",
     "ba4f1bb35e3d9002db872ea5ce0d08cf6e9b2cbec3372594df6257ee1cf896d2",
     "payto://x-taler-bank/localhost:8080/Alice",
     "230d881ccbc73dc7332bcadcb21ce6885f95a1d7622be800ade6e6efb84043ea"),
    ("payto://iban/DE89370400440532013000?receiver-name=Max%20Mustermann",
     "b9f46d564f7aa83c9533d889f37e7e0e5a597fb6832b6155a2a67e7c981de488",
     "payto://iban/DE89370400440532013000",
     "50846033eae8af991a45870e51ff6b5b55ec6520267f1900b02dffdf6e53b0cf"),
    ("payto://IBAN/COBADEFFXXX/DE89370400440532013000?receiver-name=Max",
     "6025a8da9c2360e3119af9ecd6aa951afa6677d5777e4f964b20439b6a2cebdb",
     "payto://iban/DE89370400440532013000",
     "50846033eae8af991a45870e51ff6b5b55ec6520267f1900b02dffdf6e53b0cf"),
    ("payto://void/Something?receiver-name=x",
     "fd6165513932463babdd556ad8b25c9c54e16a0bd5dbc698d4a399b2195ef383",
     "payto://void/Something",
     "10a6d0a43ef9a783481586b35617f42e5e71a68b806522b0cbfa7ead8445ffa2"),
]

# URIs Taler has no normalized form for: the normalized hash is NULL.
INVALID = [
    "payto://iban/DE89370400440532013001?receiver-name=Max",     # mod-97 fails
    "payto://iban/de89370400440532013000?receiver-name=Max",     # lower-case IBAN
    "payto://iban/DE89370400440532013000",                       # no receiver-name
    "payto://iban/ZZ89370400440532013000?receiver-name=Max",     # unknown country
    "payto://iban/DE89-370400440532013000?receiver-name=Max",    # not alphanumeric
    "payto://iban/DE89?receiver-name=Max",                        # country and digits only
    "payto://x-taler-bank/localhost/alice",                      # no receiver-name
    "payto://x-taler-bank/local host/alice?receiver-name=A",     # space
    "payto://x-taler-bank/.localhost/alice?receiver-name=A",     # leading dot
    "payto://x-taler-bank/localhost:80a/alice?receiver-name=A",  # port not numeric
    "payto://x-taler-bank/localhost?receiver-name=A",            # no account
    "payto://nomethodslash",
    "http://example.com/",
]


def _rsa_key():
    n = int.from_bytes(b"".join(hashlib.sha512(f"taler-ops test modulus {i}".encode()).digest()
                                for i in range(4)), "big") | (1 << 2047) | 1
    return n.to_bytes(256, "big")


def _rsa_denom_pub(age_mask=0):
    n = _rsa_key()
    return (b"\x00\x00\x00\x01" + age_mask.to_bytes(4, "big") + b"\x01\x00\x00\x03"
            + n + b"\x01\x00\x01")


CS_DENOM_PUB = b"\x00\x00\x00\x02\x00\x00\x00\x00" + bytes(range(32))
DENOM = [
    (_rsa_denom_pub(), "1598cca74e911ff22b78a3038d1500ef126d39518075b75069c250f3be672df3"
                       "206f95bddcd23d0ccaf02b19d66d454a8ed62d718e209fd3d4139527ec128b4d"),
    (_rsa_denom_pub(0x00255501), "35956afb5b18fb536677a73d2ecb7fb759eef8d5a3ad731da0d3b7411c2bf9d3"
                                 "ceba67c061abc627c04f127cdd37b5ae9888561a9bd7bfe3059d7602a22ab58e"),
    (CS_DENOM_PUB, "2027ba734d33e6194453e639ba865559af57a9fc355e041a83198c8691126e00"
                   "9eaefdd6e92993a6d6aec2779645bb19f00e71283858fe901c926fd1703d9e3c"),
]
COIN_EV = b"\x00\x00\x00\x01\x00\x00\x01\x00" + b"".join(
    hashlib.sha512(f"blinded {i}".encode()).digest() for i in range(4))
H_COIN_EV = ("67e20e3e1420d83dcdf6cb09dc8f2168c4e81e1b80cffa146a75addbca3bdcc5"
             "0c4273abf674667f4d9136010142fbaf74d53c922a6eee7e8b4af704213b437e")
TALER_SYNC_H_COIN_EV = ("4b7576c5c7577b66b65b900bda72091a7c373e084af38ac820fc815263de3f09"
                        "41ca075f45a0c83627bd01388e9e2b8571a71750605bed57ce1597a8e132ea2a")


@pytest.fixture(scope="module")
def pg(cluster):
    with psycopg.connect(cluster.createdb("hashing_vectors"), autocommit=True) as conn:
        yield conn


def _sql(conn, rule, value, parent=None):
    """The SQL form evaluated on the server (the value is a column, as in the sync)."""
    typ = "bytea" if isinstance(value, bytes) else "text"
    expr = hashing.sql_expression(rule, "x.v", None if parent is None else "x.p")
    got = conn.execute(f"SELECT {expr} FROM (SELECT %s::{typ} AS v, %s::bytea AS p) x",
                       (value, parent)).fetchone()[0]
    return None if got is None else bytes(got)


@pytest.mark.parametrize("uri,full,norm,norm_hash", PAYTO)
def test_payto_vectors(pg, uri, full, norm, norm_hash):
    assert hashing.full_payto_hash(uri).hex() == full
    assert hashing.normalize_payto(uri) == norm
    assert hashing.normalized_payto_hash(uri).hex() == norm_hash
    assert _sql(pg, "full_payto", uri).hex() == full
    assert _sql(pg, "normalized_payto", uri).hex() == norm_hash


@pytest.mark.parametrize("uri", INVALID)
def test_invalid_payto_has_no_normalized_hash(pg, uri):
    assert hashing.payto_invalid(uri) is not None
    assert hashing.normalized_payto_hash(uri) is None
    assert _sql(pg, "normalized_payto", uri) is None
    # The full hash exists for any text.
    assert _sql(pg, "full_payto", uri) == hashing.full_payto_hash(uri)


@pytest.mark.parametrize("uri", [
    "payto://bitcoin/BC1QXY2KGDYGJRSQTZQ2N0YRF2493P83KKFJHX0WLH?receiver-name=B",
    "payto://UPI/Alice@Bank?receiver-name=A",
    "payto://ilp/Some.Where/X?receiver-name=A",
    "payto://x-taler-bank/Bank.Example/sub/Alice?receiver-name=A&message=x",
    "payto://iban/CH9300762011623852957?receiver-name=Exchange+Operator",
])
def test_normalisation_agrees_between_python_and_sql(pg, uri):
    assert hashing.normalized_payto_hash(uri) is not None
    assert _sql(pg, "normalized_payto", uri) == hashing.normalized_payto_hash(uri)


def test_iban_check_digits_make_valid_ibans():
    for bban in ("370400440532013000", "500105175407324931"):
        iban = "DE" + hashing.iban_check_digits("DE", bban) + bban
        assert hashing.iban_valid(iban), iban
    assert hashing.iban_check_digits("DE", "370400440532013000") == "89"


@pytest.mark.parametrize("denom_pub,expected", DENOM)
def test_denom_pub_hash_vectors(pg, denom_pub, expected):
    assert hashing.denom_pub_hash(denom_pub).hex() == expected
    assert _sql(pg, "denom_pub_hash", denom_pub).hex() == expected
    # SHA-512 of the stored bytes (the old rule) is not Taler's.
    assert hashlib.sha512(denom_pub).hexdigest() != expected


def test_rsa_denom_pub_layout():
    assert len(_rsa_denom_pub()) == 271
    assert _rsa_key()[:8].hex() == "8016bb37c789e217"


def test_h_coin_ev_vector(pg):
    dph = hashing.denom_pub_hash(_rsa_denom_pub())
    assert len(COIN_EV) == 264
    assert hashing.coin_ev_hash(COIN_EV, dph).hex() == H_COIN_EV
    assert _sql(pg, "coin_ev_hash", COIN_EV, dph).hex() == H_COIN_EV
    assert hashlib.sha512(COIN_EV).hexdigest() == TALER_SYNC_H_COIN_EV != H_COIN_EV


def test_h_coin_ev_rule_joins_the_rows_denomination(cluster):
    """The registry's SQL form reads denom_pub_hash through denominations_serial."""
    uri = cluster.createdb("hashing_join")
    from taler_ops.schema import dbinit
    dbinit.exchange_dbinit(uri)
    d = [d for d in registry.entry("refresh_revealed_coins").derived if d.column == "h_coin_ev"][0]
    assert d.parent == ("denominations_serial", "denominations", "denominations_serial",
                        "denom_pub_hash")
    dph = hashing.denom_pub_hash(_rsa_denom_pub())
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE r (denominations_serial INT8, coin_ev BYTEA)")
        conn.execute("INSERT INTO exchange.denominations (denominations_serial, denom_pub_hash, "
                     "denom_pub, master_sig, valid_from, expire_withdraw, expire_deposit, "
                     "expire_legal, coin, fee_withdraw, fee_deposit, fee_refresh, fee_refund) "
                     "VALUES (7, %s, %s, %s, 0, 0, 0, 0, (1,0), (0,0), (0,0), (0,0), (0,0))",
                     (dph, _rsa_denom_pub(), b"s" * 64))
        conn.execute("INSERT INTO r VALUES (7, %s), (8, %s)", (COIN_EV, COIN_EV))
        rows = conn.execute(f"SELECT denominations_serial, {hashing.derived_expression(d, 'r')} "
                            "FROM r ORDER BY 1").fetchall()
    assert rows[0][1].hex() == H_COIN_EV
    assert rows[1][1] is None      # no such denomination: no hash, so the row cannot match


def test_a_null_normalized_payto_hash_is_kept(cluster):
    """Taler leaves h_normalized_payto NULL on accounts from before exchange-0007: the
    sync's SQL keeps such a NULL, but a stored value must still match the rule."""
    d = [d for d in registry.entry("wire_targets").derived if d.column == "h_normalized_payto"][0]
    assert d.null_kept
    uri = PAYTO[0][0]
    with psycopg.connect(cluster.createdb("hashing_null_kept"), autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT {hashing.derived_expression(d, 'w')} FROM (VALUES (%s, NULL::bytea), "
            "(%s, '\\x00'::bytea)) AS w(payto_uri, h_normalized_payto) ORDER BY 1 NULLS FIRST",
            (uri, uri)).fetchall()
    assert rows[0][0] is None
    assert bytes(rows[1][0]) == hashing.normalized_payto_hash(uri)
