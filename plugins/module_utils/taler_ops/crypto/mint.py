"""Making valid coins: what the generator needs to write rows whose
denomination signatures verify (the exchange's and the wallet's side of
withdraw and refresh, for RSA and CS denominations).

Not used by the audit.  Keys here are test/demo keys held in memory.
"""

import os
from dataclasses import dataclass

from . import cs, denom, rsa
from .hashes import coin_ev_hash, coin_hash, sha512


@dataclass(frozen=True)
class Planchet:
    """One blinded coin and its signatures, in their BYTEA layouts."""
    coin_ev: bytes      # refresh_revealed_coins.coin_ev
    ewv: bytes          # refresh_revealed_coins.ewv
    h_coin_ev: bytes    # reserves_out.h_blind_ev / the exchange's h_coin_ev
    blind_sig: bytes    # reserves_out.denom_sig / refresh_revealed_coins.ev_sig
    coin_sig: bytes     # known_coins.denom_sig


class DenominationKey:
    """A denomination's private key (RSA or CS) and its public encodings."""

    def __init__(self, cipher: int, age_mask: int = 0, rsa_priv: rsa.RsaPrivateKey | None = None,
                 cs_priv: bytes | None = None):
        self.cipher = cipher
        self.age_mask = age_mask
        self.rsa_priv = rsa_priv
        if cipher == denom.RSA:
            self.pub = denom.DenomPub.from_rsa(self._rsa.public, age_mask)
        else:
            if cs_priv is None:
                raise ValueError("a CS denomination key needs its private seed")
            self.cs_priv, cs_pub = cs.keypair(cs_priv)
            self.pub = denom.DenomPub.from_cs(cs_pub, age_mask)
        self.denom_pub = self.pub.encode()
        self.denom_pub_hash = self.pub.hash()

    @classmethod
    def new_rsa(cls, bits: int = 2048, age_mask: int = 0) -> "DenominationKey":
        return cls(denom.RSA, age_mask, rsa_priv=rsa.RsaPrivateKey.generate(bits))

    @classmethod
    def new_cs(cls, seed: bytes | None = None, age_mask: int = 0) -> "DenominationKey":
        """``seed`` is clamped into the private scalar (random when None)."""
        return cls(denom.CS, age_mask, cs_priv=seed or os.urandom(32))

    @property
    def _rsa(self) -> rsa.RsaPrivateKey:
        """The private key of an RSA denomination (a CS one has none)."""
        if self.rsa_priv is None:
            raise ValueError("an RSA denomination key needs its private key")
        return self.rsa_priv

    # -- the exchange ---------------------------------------------------------------
    def sign_coin(self, c_hash: bytes) -> bytes:
        """An unblinded signature directly (known_coins.denom_sig), no protocol."""
        if self.cipher == denom.RSA:
            return denom.encode_rsa_sig(rsa.sign(self._rsa, c_hash))
        # A deterministic nonce per (key, message), as RFC 6979 does: never
        # the same r for two messages, which would reveal the key.
        r_seed = sha512(b"taler-ops cs nonce" + self.cs_priv + bytes(c_hash))[:32]
        s, r_point = cs.sign_unblinded(self.cs_priv, self.pub.key, c_hash, r_seed)
        return denom.encode_cs_sig(s, r_point)

    def r_public(self, session_nonce: bytes, melt: bool) -> tuple[bytes, bytes]:
        return cs.r_public(cs.r_derive(self.cs_priv, session_nonce, melt))

    def sign_planchet(self, coin_ev: bytes, melt: bool) -> bytes:
        """The blind signature on a stored planchet (ev_sig / reserves_out.denom_sig)."""
        cipher, _m, payload = denom._split(coin_ev, denom.PLANCHET)
        if cipher != self.cipher:
            raise ValueError("planchet of another cipher")
        if cipher == denom.RSA:
            return denom.encode_rsa_sig(self._rsa.sign_raw(int.from_bytes(payload, "big")),
                                        blinded=True)
        c, nonce = (payload[:32], payload[32:64]), payload[64:96]
        b, s_b = cs.sign_blinded(self.cs_priv, cs.r_derive(self.cs_priv, nonce, melt), c, nonce)
        return denom.encode_cs_blind_sig(b, s_b)

    # -- the whole withdraw / refresh of one coin --------------------------------------
    def make_coin(self, coin_pub: bytes, bks: bytes, age_commitment_hash: bytes | None = None,
                  melt: bool = False, session_nonce: bytes | None = None) -> Planchet:
        """Blind ``coin_pub`` with ``bks`` (what recoup.coin_blind stores), have
        it signed, unblind: every stored value of one withdrawn (``melt=False``)
        or refreshed (``melt=True``) coin."""
        msg = coin_hash(coin_pub, age_commitment_hash)
        if self.cipher == denom.RSA:
            # The same values as blind → sign → unblind, with one private-key
            # operation and no inverse: for h = FDH(msg) and blinding factor r,
            # blinded = h·r^e, its signature (h·r^e)^d = h^d·r, unblinded h^d.
            pub = self._rsa.public
            h, r = rsa.fdh(pub, msg), rsa.blinding_factor(pub, bks)
            if h is None or r is None:
                raise ValueError("malicious RSA key")
            blinded = h * rsa._powmod(r, pub.e, pub.n) % pub.n
            coin_ev = denom.encode_rsa_planchet(blinded)
            ewv = denom.encode_ewv(denom.RSA)
            unblinded = self._rsa.sign_raw(h)
            blind_sig_int = unblinded * r % pub.n
            coin_sig = denom.encode_rsa_sig(unblinded)
            return Planchet(coin_ev, ewv, coin_ev_hash(self.denom_pub_hash, denom.RSA,
                                                      rsa.int_bytes(blinded)),
                            denom.encode_rsa_sig(blind_sig_int, blinded=True), coin_sig)
        nonce = session_nonce or sha512(b"taler-ops cs session" + bytes(bks))[:32]
        r_pub = self.r_public(nonce, melt)
        c, r_blind = cs.blind(self.pub.key, msg, bks, r_pub)
        coin_ev = denom.encode_cs_planchet(c, nonce)
        b, s_b = cs.sign_blinded(self.cs_priv, cs.r_derive(self.cs_priv, nonce, melt), c, nonce)
        coin_sig = denom.encode_cs_sig(cs.unblind(s_b, b, bks), r_blind[b])
        return Planchet(coin_ev, denom.encode_ewv(denom.CS, r_pub),
                        coin_ev_hash(self.denom_pub_hash, denom.CS, coin_ev[8:]),
                        denom.encode_cs_blind_sig(b, s_b), coin_sig)
