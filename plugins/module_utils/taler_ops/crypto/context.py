"""The configuration values a signature check needs besides the row itself."""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import crockford
from .encoding import check_currency

if TYPE_CHECKING:   # the crypto layer does not load the configuration reader itself
    from ..ini import TalerConfig


@dataclass(frozen=True)
class SignatureContext:
    """``[exchange] CURRENCY``, ``MASTER_PUBLIC_KEY`` and ``BASE_URL``.

    The base URL is only needed for purse merges and purse deposits (it is
    hashed into them); it must be the exact configured string, trailing ``/``
    included.
    """
    currency: str
    master_pub: bytes
    exchange_base_url: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "currency", check_currency(self.currency))
        if len(self.master_pub) != 32:
            raise ValueError("master public key must be 32 bytes")

    @classmethod
    def from_config(cls, cfg: "TalerConfig") -> "SignatureContext":
        """From a ``taler_ops.config.TalerConfig``; a missing or malformed
        option raises ConfigError / ValueError naming it."""
        from ..errors import ConfigError
        currency = cfg.get("exchange", "CURRENCY")
        master = cfg.get("exchange", "MASTER_PUBLIC_KEY")
        base_url = cfg.get("exchange", "BASE_URL", required=False) or None
        try:
            return cls(currency, crockford.decode(master, 32), base_url)
        except ValueError as exc:
            raise ConfigError(f"{cfg.path}: [exchange] CURRENCY / MASTER_PUBLIC_KEY: {exc}") from None
