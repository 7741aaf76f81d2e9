"""Bank accounts and KYC: the customers who fill reserves, the merchants who take
deposits, and the KYC measures, processes and outcomes of their accounts."""

from .core import ExchangeCore
from .entities import ACCOUNT_SECTION, Customer, Merchant, h_normalized_payto, h_payto, iban_payto
from .units import CENT, HOUR, MINUTE, YEAR, canonical_json


class Accounts(ExchangeCore):
    def wire_target(self, payto: str, t: int, kyc_pub: bool = False) -> tuple[bytes, bytes]:
        """A bank account; with ``kyc_pub`` its owner proved control by a KYC auth transfer.
        Returns (wire_target_h_payto, access token)."""
        rng = self.rng
        serial = self.w.serial("wire_targets")
        token = rng.key32()
        account_pub = rng.key32() if kyc_pub else None
        self.put("wire_targets", serial, None, payto, token, account_pub, None, None)
        h = h_payto(payto)
        if kyc_pub:
            self.put("kycauths_in", self.w.serial("kycauths_in"), account_pub,
                     self.next_wire_reference(), CENT, h, ACCOUNT_SECTION, t)
        return h, token

    def kyc(self, payto: str, token: bytes, t: int) -> None:
        """A KYC measure, its provider process and the AML outcome for an account."""
        rng = self.rng
        h = h_normalized_payto(payto)     # KYC tables key accounts by the normalized hash
        measure = self.w.serial("legitimization_measures")
        self.put("legitimization_measures", measure, token, t,
                 canonical_json({"measures": [{"check_name": "form-identity", "context": {}}],
                                 "is_and_combinator": False, "verboten": False}), 1, True)
        process = self.w.serial("legitimization_processes")
        self.put("legitimization_processes", process, h, t + MINUTE, t + YEAR, measure, 0,
                 "kycaid", f"user-{rng.getrandbits(48):012x}",
                 f"legi-{rng.getrandbits(64):016x}",
                 f"https://kyc.example.com/redirect/{process}", 0, None)
        self.put("legitimization_outcomes", self.w.serial("legitimization_outcomes"), h,
                 t + HOUR, t + YEAR,
                 canonical_json({"FILE_NOTE": "identity verified", "PEP": False}), False,
                 canonical_json({"rules": [], "new_measures": None, "custom_measures": {}}),
                 True, None)

    def new_merchant(self, t: int) -> Merchant:
        rng = self.rng
        n = len(self.merchants) + 1
        tag = rng.getrandbits(40)
        payto = iban_payto(rng, f"Shop+{n}", bic=(tag % 5 == 0))
        seed, pub = self.keypair()
        m = Merchant(pub, payto, seed)
        _, token = self.wire_target(payto, t, kyc_pub=True)
        self.kyc(payto, token, t)
        self.merchants.append(m)
        return m

    def pick_merchant(self) -> Merchant:
        # A few big shops take most payments (Zipf-like).
        n = len(self.merchants)
        return self.merchants[min(n - 1, int(n * self.rng.random() ** 2.5))]

    def customer(self, t: int, kyc: bool = False) -> Customer:
        rng = self.rng
        if self.customers and rng.random() < 0.6 and not kyc:
            return self.customers[int(rng.random() * len(self.customers))]
        n = len(self.customers) + 1
        tag = rng.getrandbits(40)
        payto = (f"payto://x-taler-bank/bank.demo.taler.net/customer{tag:010x}"
                 f"?receiver-name=Customer+{n}")
        h, token = self.wire_target(payto, t, kyc_pub=kyc)
        if kyc:
            self.kyc(payto, token, t)
        entry = (h, payto)
        self.customers.append(entry)
        return entry
