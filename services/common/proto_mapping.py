"""Conversions between core values and the shared proto types."""

from __future__ import annotations

from datetime import datetime
from typing import overload

from google.protobuf.timestamp_pb2 import Timestamp

from services.common.money import Money
from shop.common.v1.money_pb2 import Money as MoneyProto


def money_to_proto(money: Money) -> MoneyProto:
    """`Money` as the contract's `shop.common.v1.Money`.

    Args:
        money: the amount.

    Returns:
        The message.
    """
    return MoneyProto(currency_code=money.currency, minor_units=money.minor_units)


def amount_to_proto(currency: str, minor_units: int) -> MoneyProto:
    """An amount in `currency` as the contract's `shop.common.v1.Money`.

    Args:
        currency: the ISO 4217 code.
        minor_units: the amount in minor units.

    Returns:
        The message.
    """
    return MoneyProto(currency_code=currency, minor_units=minor_units)


@overload
def timestamp(moment: datetime) -> Timestamp: ...


@overload
def timestamp(moment: None) -> None: ...


def timestamp(moment: datetime | None) -> Timestamp | None:
    """A datetime as a protobuf `Timestamp`; None stays None (the field is left unset).

    Args:
        moment: an aware datetime, or None when there is none yet (a row's time before
            the store wrote it, a payment not yet processed).

    Returns:
        The Timestamp, or None.
    """
    if moment is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp
