"""Money as integer minor units in one ISO 4217 currency; never a float."""

from __future__ import annotations

from dataclasses import dataclass

# ISO 4217 active codes with their minor-unit exponent. Only the exponent matters to us
# (display and sanity); amounts are always carried in minor units.
_TWO_DECIMALS = """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN BWP
    BYN BZD CAD CDF CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP
    GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT
    LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN
    NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP
    SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD UYU UZS VES
    WST XCD YER ZAR ZMW ZWG
"""
_NO_DECIMALS = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE_DECIMALS = "BHD IQD JOD KWD LYD OMR TND"

CURRENCY_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(_TWO_DECIMALS.split(), 2),
    **dict.fromkeys(_NO_DECIMALS.split(), 0),
    **dict.fromkeys(_THREE_DECIMALS.split(), 3),
}

DEFAULT_CURRENCY = "USD"
# Amounts travel as int64 on the wire; sums must stay representable there too.
MAX_MINOR_UNITS = 2**63 - 1


class MoneyError(ValueError):
    """An amount that cannot exist: unknown currency, mixed currencies or int64 overflow."""


def is_known_currency(code: str) -> bool:
    """Whether `code` is an active ISO 4217 currency code.

    Args:
        code: a three-letter code.

    Returns:
        True for an active ISO 4217 code.
    """
    return code in CURRENCY_EXPONENTS


@dataclass(frozen=True, slots=True)
class Money:
    """An amount: an ISO 4217 currency and an integer count of its minor units."""

    currency: str
    minor_units: int

    def __post_init__(self) -> None:
        if self.currency not in CURRENCY_EXPONENTS:
            raise MoneyError(f"unknown currency {self.currency!r}")
        if not -MAX_MINOR_UNITS <= self.minor_units <= MAX_MINOR_UNITS:
            raise MoneyError("amount does not fit in int64 minor units")

    @classmethod
    def zero(cls, currency: str) -> Money:
        """Nothing, in `currency`."""
        return cls(currency, 0)

    def _same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise MoneyError(f"currency mismatch: {self.currency} vs {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.currency, self.minor_units + other.minor_units)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.currency, self.minor_units - other.minor_units)

    def __mul__(self, factor: int) -> Money:
        return Money(self.currency, self.minor_units * factor)

    def __lt__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.minor_units < other.minor_units

    def __le__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.minor_units <= other.minor_units

    @property
    def is_positive(self) -> bool:
        """More than zero."""
        return self.minor_units > 0

    @property
    def is_negative(self) -> bool:
        """Less than zero."""
        return self.minor_units < 0

    def __str__(self) -> str:
        exponent = CURRENCY_EXPONENTS[self.currency]
        sign = "-" if self.minor_units < 0 else ""
        whole, fraction = divmod(abs(self.minor_units), 10**exponent)
        return (
            f"{sign}{whole}.{fraction:0{exponent}d} {self.currency}"
            if exponent
            else (f"{sign}{whole} {self.currency}")
        )
