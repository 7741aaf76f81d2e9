"""Known answers: GNUnet's own test vectors and taler-signatures.md §6.

Pure Python, no database.  Every hex string below is copied from the
reference; the keys are derived the way §6 says (seed = SHA-512(label)[:32]).
"""


import pytest

from taler_ops.crypto import blocks, catalog, crockford, cs, denom, eddsa, rsa
from taler_ops.crypto.context import SignatureContext
from taler_ops.crypto.encoding import INT64_MAX, amount_nbo
from taler_ops.crypto.hashes import coin_ev_hash, coin_hash, merchant_wire_hash, payto_hash, sha512

X = bytes.fromhex


def seed(label: str) -> bytes:
    return sha512(label.encode())[:32]


MASTER, RESERVE, COIN, MERCHANT = (seed(f"tv/{k}") for k in ("master", "reserve", "coin", "merchant"))
CUR = "KUDOS"
P = int("d6ae7fd49ee88dc2be9921d0d52e4743f0d74de24f9d4ef9e37370f5fd6fa97245b115e9a41e9f843a091ae88a06a6f1"
        "5d6104733847869608e12fce7a35aa01", 16)
Q = int("c478fae947dd6e475cfb06237b8890b2064aca00091a7dce239eebbc959cb53d69f58d344c0d38e6b0db515aeb22f359"
        "cdf03adbb507f2f5bb2f0959513c5051", 16)
RSA_KEY = rsa.RsaPrivateKey.from_primes(P, Q)
RSA_PUB_ENC = X(
    "00800003a4c30e14bf409bd26f3b808dbbeb493515bc39ec4d36da21cabde86816b8fad9fe52f9ef8d40e3b9173a88e869e18fcbd35a355d081177554875527b"
    "2d80a5c2c26206e05fd51220d98a39d69ebe791f3f5474f2e8a73b3a49efa790cc14bdcf324ae1d1ac81ac0565666d0309aa5f3b4ba54dc7d2e6f6390811693c"
    "99571a51010001")
DENOM_PUB = X("0000000100000000") + RSA_PUB_ENC
DENOM_PUB_HASH = X(
    "1f18bef737bd6a75600929805b46bef63873fba06561f252bf2e15bde14696969a0634a92b0b0754310783d461baab3197a60d4903942825c17edad140c8b166")
DAY = 86400 * 10**6
VALID_FROM = 1700000000 * 10**6
DENOM_ROW = dict(valid_from=VALID_FROM, expire_withdraw=VALID_FROM + 365 * DAY,
                 expire_deposit=VALID_FROM + 3 * 365 * DAY, expire_legal=VALID_FROM + 10 * 365 * DAY,
                 coin=(5, 0), fee_withdraw=(0, 1000000), fee_deposit=(0, 2000000),
                 fee_refresh=(0, 3000000), fee_refund=(0, 4000000), denom_pub=DENOM_PUB)
BKS = seed("tv/bks")
H_BLIND_EV = X(
    "6f29da3b53f5097520cad5d7203f86a2c5359daa64ba8d82c054ea6a93b895de82c9ba4ed34d9240d06c287dd34a94770b27704c6214ddbfb4f507f0a8214ba8")
CTX = SignatureContext(CUR, eddsa.public_key(MASTER), "https://exchange.example.com/")


# --- Crockford base32 ---------------------------------------------------------------------

def test_crockford_master_key():
    text = "C2S5E6PJ6F24S0DGFKH50ZCA40FD0SC9D83TEE2DBR2PD9TK30D0"
    pub = X("60b2571ad233c44c81b07ce2507d8a201ed065896a07a7384d5e0566a753181a")
    assert crockford.encode(pub) == text
    assert crockford.decode(text, 32) == pub
    # Case-insensitive, O->0, I/L->1 as GNUnet decodes.
    assert crockford.decode(text.lower(), 32) == pub
    assert crockford.decode(text.replace("0", "O"), 32) == pub
    with pytest.raises(ValueError):
        crockford.decode(text[:-1], 32)
    with pytest.raises(ValueError):
        crockford.decode(text[:-1] + "1", 32)      # non-zero padding bits
    with pytest.raises(ValueError):
        crockford.decode(text[:-1] + "*")


def test_context_from_config(conf):
    from taler_ops import config
    from taler_ops.errors import ConfigError
    path = conf("x.conf", {"exchange": {"CURRENCY": "kudos", "BASE_URL": "https://ex.example/",
                                        "MASTER_PUBLIC_KEY": crockford.encode(eddsa.public_key(MASTER))}})
    ctx = SignatureContext.from_config(config.load(path))
    assert ctx == SignatureContext("KUDOS", eddsa.public_key(MASTER), "https://ex.example/")
    bad = conf("y.conf", {"exchange": {"CURRENCY": "KUDOS", "MASTER_PUBLIC_KEY": "C2S5"}})
    with pytest.raises(ConfigError):
        SignatureContext.from_config(config.load(bad))


# --- §6 ------------------------------------------------------------------------------------

def test_keys_of_the_vectors():
    assert MASTER.hex() == "82b12990603d885021ccc0a5b0695c17a539c767f8e4c456ccb486cb314a1006"
    assert eddsa.public_key(MASTER).hex() == "60b2571ad233c44c81b07ce2507d8a201ed065896a07a7384d5e0566a753181a"
    assert eddsa.public_key(RESERVE).hex() == "40650d17db0c40c62c0a21323cad6edefe6ac7829a4c630984b8d8c53fd5215d"
    assert eddsa.public_key(COIN).hex() == "7f1c4945582a3879f1f30672c0fcb2e453ed75756d119e0aa8e1099f97229d65"
    assert eddsa.public_key(MERCHANT).hex() == "39dcab25837cbcf4be41ceda977995512cc075e66e53837807cbbb604d39324c"
    assert RSA_KEY.public.encode() == RSA_PUB_ENC
    dp = denom.DenomPub.parse(DENOM_PUB)
    assert dp.hash() == DENOM_PUB_HASH and dp.encode() == DENOM_PUB


def test_6_1_denomination_master_sig():
    blk = blocks.denomination_validity(CUR, eddsa.public_key(MASTER), *catalog._denom_terms(DENOM_ROW))
    assert blk.hex() == (
        "000001000000040160b2571ad233c44c81b07ce2507d8a201ed065896a07a7384d5e0566a753181a00060a24181e4000000626d2a43220000006602fbc59e000"
        "000728f590e500000000000000000005000000004b55444f53000000000000000000000000000000000f42404b55444f53000000000000000000000000000000"
        "001e84804b55444f53000000000000000000000000000000002dc6c04b55444f53000000000000000000000000000000003d09004b55444f5300000000000000"
        "1f18bef737bd6a75600929805b46bef63873fba06561f252bf2e15bde14696969a0634a92b0b0754310783d461baab3197a60d4903942825c17edad140c8b166")
    sig = X("9f7cff24c910655cf17cf4247db321934a99d0aa8e8fb541e84b850748639dd9"
            "e219d4158530490c2f658af8a57b477dc96431eaac6845043911a0d6cac9a30d")
    assert eddsa.sign(MASTER, blk) == sig
    spec = catalog.get("denominations.master_sig")
    assert spec.verify(dict(DENOM_ROW, sig=sig), CTX) is True
    assert spec.sign(DENOM_ROW, CTX, MASTER) == sig


def test_6_2_rsa_coin():
    coin_pub = eddsa.public_key(COIN)
    c_hash = coin_hash(coin_pub)
    assert c_hash.hex() == (
        "47ba3a457a71696144fbfd7706d25477da679dfb682a971062af3a2f5d6b720fd7521bbb9e3da342a638e46cfa680719c493449b3adbe2079902ff685793e6bf")
    assert coin_hash(coin_pub, bytes(32)) == c_hash     # zero age hash = none
    assert BKS.hex() == "837d7122dc5c234828dfe15a3697ff05fa34147b06b3d4a9ec1d5c86c0655212"
    pub = RSA_KEY.public
    assert rsa.int_bytes(rsa.fdh(pub, c_hash)).hex() == (
        "5f18083969f3f8a6942e5af8f5c3a5618ff23c0fdbd34df083e4577aa2043eb5b16f2c4a9a1d2bd4a565626e7e5e6885f59a71561bfcabcf3e14ecf57511fcc0"
        "b4d141e148c218edbd5c7c38fd4e6cb5673e613f4ce2762d5718a5780859a86d33ff2305051c38dc36710557cda51c997100f708e3138b2fd1c6ffa34f3a43a7")
    blinded = rsa.blind(pub, c_hash, BKS)
    assert rsa.int_bytes(blinded).hex() == (
        "0fdd190602ebe5a1b681a1d0e17d48b7636db2e1886c85145567948fd29bddf2fea3507914ed61b43b78ee21f76d3d81976a4c69de8e87108762048a9ec2a12f"
        "8c49a7900c53a22143680111fded996bf3b1f33d64e0faaf62c676ed4c59c22385047e438847478cc3a735039306da5ac9bce7589fb7799d3345a367a2efe6f2")
    blind_sig = RSA_KEY.sign_raw(blinded)
    assert rsa.int_bytes(blind_sig).hex() == (
        "8aa2836ff2ee2bbf1e582095bd11dbc70392b6ab20aa563366958e7a975138668a3cc86cbc5ace087c2d41aad22c6b764a8f2c0ff474a0ee1c10298950e0952a"
        "3e6be355d94d3c5dc2405030bd9c69a7b0e887899c11fed0f2506fda702d72d195a20a87ae2cc763b888beafb1f8b46f721a77200f3a46434ef09c1a639ecc80")
    sig = rsa.unblind(pub, blind_sig, BKS)
    assert rsa.int_bytes(sig).hex() == (
        "909b44e1454e31397e4a70a6e78892a6e8efb4a88ddd793eeed910edba7f3bd4fbd85f88c80a1151f0bb9b7f403718db043cd5615fc48056582c8b00c0b0f016"
        "1affbbc25bf28274e9d73d414165942b49402dbc54717ffb4c0181fc1fa105966b5050d397667d240c2511574b0443a6f72e4154b2279c3477e73eeab2bcc4e6")
    assert rsa.sign(RSA_KEY, c_hash) == sig
    assert coin_ev_hash(DENOM_PUB_HASH, denom.RSA, rsa.int_bytes(blinded)) == H_BLIND_EV
    # In their BYTEA layouts, through the catalog.
    known = dict(sig=X("0000000100000000") + rsa.int_bytes(sig), coin_pub=coin_pub,
                 age_commitment_hash=None, denom_pub=DENOM_PUB)
    assert catalog.get("known_coins.denom_sig").verify(known, CTX) is True
    out_sig = X("0000000100000001") + rsa.int_bytes(blind_sig)
    assert catalog.get("reserves_out.denom_sig").verify(dict(sig=out_sig, denom_pub=DENOM_PUB), CTX)
    coin_ev = X("0000000100000100") + rsa.int_bytes(blinded)
    assert denom.planchet_hash(DENOM_PUB_HASH, coin_ev) == H_BLIND_EV
    assert denom.verify_blind_sig(DENOM_PUB, coin_ev, X("0000000100010000"), out_sig)
    # The generator's path gives the same bytes.
    from taler_ops.crypto.mint import DenominationKey
    planchet = DenominationKey(denom.RSA, rsa_priv=RSA_KEY).make_coin(coin_pub, BKS)
    assert (planchet.coin_sig, planchet.blind_sig, planchet.h_coin_ev, planchet.coin_ev) == (
        known["sig"], out_sig, H_BLIND_EV, coin_ev)


def test_6_3_withdraw():
    blk = blocks.withdraw(CUR, (5, 1000000), DENOM_PUB_HASH, H_BLIND_EV)
    assert blk.hex() == (
        "000000a0000004b00000000000000005000f42404b55444f53000000000000001f18bef737bd6a75600929805b46bef63873fba06561f252bf2e15bde1469696"
        "9a0634a92b0b0754310783d461baab3197a60d4903942825c17edad140c8b1666f29da3b53f5097520cad5d7203f86a2c5359daa64ba8d82c054ea6a93b895de"
        "82c9ba4ed34d9240d06c287dd34a94770b27704c6214ddbfb4f507f0a8214ba8")
    sig = X("d49eb25bced1bcf2a6340f96a35d95c395e52312cb4dd132dcc154ec86e74a9f"
            "cbaa1c7e5cee36e6e664d08c6be1b8dcf14340c0810acc255ae7f3a55d522108")
    assert eddsa.sign(RESERVE, blk) == sig
    row = dict(sig=sig, reserve_pub=eddsa.public_key(RESERVE), amount_with_fee=(5, 1000000),
               denom_pub_hash=DENOM_PUB_HASH, h_blind_ev=H_BLIND_EV)
    assert catalog.get("reserves_out.reserve_sig").verify(row, CTX) is True


def test_6_4_deposit():
    payto = "payto://x-taler-bank/bank.example.com/merchant?receiver-name=Merchant"
    assert payto_hash(payto).hex() == "909b400fa7b9234858674ef87b6dfe24d6161229eccd9b3b3822c18865c1c49c"
    salt = X("00112233445566778899aabbccddeeff")
    h_wire = merchant_wire_hash(payto, salt)
    assert h_wire.hex() == (
        "219313d8bf678302d1dec3a3b647c2e5b62fde01cad0b239edad06f2412931833db5bb76beb39c07814b6b86b3a78588862ff1ffa3d06092e656f11cac265dba")
    contract = b'{"amount":"KUDOS:4","summary":"test"}'
    assert len(contract) == 37
    h_contract = sha512(contract)
    assert h_contract.hex() == (
        "34e689c4198081397d3732ef8d74fd418c9a7d4011c9567154d0c1efc905f9d5f4125730e163843982de098a4d1773de42d8e9a90938615e2c9cd12a6803dcb7")
    row = dict(coin_pub=eddsa.public_key(COIN), h_contract_terms=h_contract, age_commitment_hash=None,
               policy_details_serial_id=None, payto_uri=payto, wire_salt=salt,
               denom_pub_hash=DENOM_PUB_HASH, wallet_timestamp=1700000100000000,
               refund_deadline=INT64_MAX, amount_with_fee=(4, 0), fee_deposit=(0, 2000000),
               merchant_pub=eddsa.public_key(MERCHANT), wallet_data_hash=None)
    spec = catalog.get("coin_deposits.coin_sig")
    (blk,) = spec.blocks(row, CTX)
    assert blk.hex() == (
        "000001c8000004b134e689c4198081397d3732ef8d74fd418c9a7d4011c9567154d0c1efc905f9d5f4125730e163843982de098a4d1773de42d8e9a90938615e"
        "2c9cd12a6803dcb70000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "00000000000000000000000000000000000000000000000000000000000000000000000000000000219313d8bf678302d1dec3a3b647c2e5b62fde01cad0b239"
        "edad06f2412931833db5bb76beb39c07814b6b86b3a78588862ff1ffa3d06092e656f11cac265dba1f18bef737bd6a75600929805b46bef63873fba06561f252"
        "bf2e15bde14696969a0634a92b0b0754310783d461baab3197a60d4903942825c17edad140c8b16600060a241e142100ffffffffffffffff0000000000000004"
        "000000004b55444f53000000000000000000000000000000001e84804b55444f530000000000000039dcab25837cbcf4be41ceda977995512cc075e66e538378"
        "07cbbb604d39324c0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "0000000000000000")
    sig = X("48261323bf990d3379c32711a4501233bc493f39c786242a08f875fb8a4ac231"
            "c758f60c50eef81c6f4b4fe6906cce86157c38f6c6ce1a4e2af8f55315f9410e")
    assert spec.sign(row, CTX, COIN) == sig
    assert spec.verify(dict(row, sig=sig), CTX) is True


def test_6_5_cs_coin():
    x, pub = cs.keypair(seed("tv/cs/priv"))
    assert x.hex() == "10e765ca583b9a227f3ea8dc7237cb33c1eec0deab227e6a620949f988ec7543"
    assert pub.hex() == "6af87ef46670c4d3855f91fe764e34f948bff4ba20fab5cdecc92a955c02edb4"
    dp = denom.DenomPub.from_cs(pub)
    assert dp.hash().hex() == (
        "6eb69592000f98135a4331fd836a44692d56cfd9dd702cde91ed8d6dd44fffea7e26bede330141a448df62e6f1d5ed6a9549228d993a4965b6d32948a37ed9f3")
    c_hash = coin_hash(eddsa.public_key(COIN))
    s, r_point = cs.sign_unblinded(x, pub, c_hash, seed("tv/cs/r"))
    assert r_point.hex() == "0a63c88d1feada78818e84af227a8a941a7870c23f0b2f7244818ef4546b7d97"
    assert cs.scalar_bytes(cs.fdh(r_point, c_hash, pub)).hex() == (
        "094ad90e37928b71fcf335a94c89c7528011ea93b64cf183099994acfc6ad603")
    assert s.hex() == "2bf546543d35ea73bca1d697b617530dd9f59cf5eb5d4e9217c0e9cd6f3b7b01"
    assert cs.verify(pub, c_hash, s, r_point)
    row = dict(sig=X("0000000200000000") + s + r_point, coin_pub=eddsa.public_key(COIN),
               age_commitment_hash=None, denom_pub=dp.encode())
    assert catalog.get("known_coins.denom_sig").verify(row, CTX) is True


def test_schema_vectors_denom_pub_hash():
    """taler-real-schema.md §3.5: denom_pub_hash of the RSA and CS test keys."""
    n = int.from_bytes(b"".join(sha512(f"taler-ops test modulus {i}".encode()) for i in range(4)), "big")
    n |= (1 << 2047) | 1
    enc = rsa.RsaPublicKey(n, 65537).encode()
    assert enc[:4] == X("01000003") and enc[4:12].hex() == "8016bb37c789e217"
    assert denom.DenomPub(denom.RSA, 0, enc).hash().hex().startswith("1598cca74e911ff22b78a303")
    assert denom.DenomPub(denom.RSA, 0x00255501, enc).hash().hex().startswith("35956afb5b18fb53")
    assert denom.DenomPub(denom.CS, 0, bytes(range(32))).hash().hex().startswith("2027ba734d33e619")
    blinded = b"".join(sha512(f"blinded {i}".encode()) for i in range(4))
    coin_ev = X("0000000100000100") + blinded
    h = denom.planchet_hash(denom.DenomPub(denom.RSA, 0, enc).hash(), coin_ev)
    assert h.hex().startswith("67e20e3e1420d83dcdf6cb09dc8f2168")


def test_amount_encoding():
    assert amount_nbo((5, 1000000), CUR).hex() == "0000000000000005000f42404b55444f5300000000000000"
    with pytest.raises(ValueError):
        amount_nbo((0, 10**8), CUR)
    with pytest.raises(ValueError):
        amount_nbo((2**52 + 1, 0), CUR)


@pytest.mark.parametrize("uri,full", [
    ("payto://x-taler-bank/localhost/alice?receiver-name=Alice",
     "37f7bbed5c75deb1aa8e4e127a95ce90769817adfc7774e5255861c56967da77"),
    ("payto://X-Taler-Bank/LocalHost:8080/Alice?receiver-name=Alice",
     "ba4f1bb35e3d9002db872ea5ce0d08cf6e9b2cbec3372594df6257ee1cf896d2"),
    ("payto://iban/DE89370400440532013000?receiver-name=Max%20Mustermann",
     "b9f46d564f7aa83c9533d889f37e7e0e5a597fb6832b6155a2a67e7c981de488"),
    ("payto://void/Something?receiver-name=x",
     "fd6165513932463babdd556ad8b25c9c54e16a0bd5dbc698d4a399b2195ef383"),
])
def test_full_payto_hash(uri, full):
    """taler-real-schema.md §3.5 (the hash signed into profit drains and close requests)."""
    assert payto_hash(uri).hex() == full


def test_rsa_without_gmp(monkeypatch):
    """gmpy2 only makes RSA faster: Python's own integers give the same answers."""
    monkeypatch.setattr(rsa, "_powmod", pow)
    import math
    monkeypatch.setattr(rsa, "_gcd", math.gcd)
    test_6_2_rsa_coin()
