"""A model of a Taler exchange's business, producing its database rows.

Everything the exchange records is produced here as rows for CopyWriter:
the key material (denominations, signing keys, auditors, fees), wallets'
reserves with their withdrawals, coins and how they are spent (deposits,
refreshes, recoups, purses), merchants' refunds, the aggregator's wire
transfers, p2p payments across partner exchanges (wads) and KYC.

The history obeys docs/economics.md: every reserve's debits are covered by
credits dated earlier, a coin is never spent beyond its value, every wire
transfer equals its deposits minus fees, and the mutable columns hold what
the exchange would hold (current_balance, remaining, done).  Amounts are ints
of 1e-8 units.  Only ``sim/inject.py`` breaks these rules, on request.

The business is split by subject, one mixin each over the state and
primitives of sim/core.py: sim/key_material.py, sim/accounts.py,
sim/reserves.py, sim/deposits.py (with refreshes, recoups and aggregation)
and sim/purses.py (with wads).
"""

from .deposits import Deposits
from .key_material import KeyMaterial
from .purses import Purses


class Exchange(KeyMaterial, Deposits, Purses):
    """The exchange's state and business rules; every action writes its rows."""
