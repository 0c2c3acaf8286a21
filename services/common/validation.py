"""What the `buf.validate` rules of proto/ leave to the servicers.

The request interceptor (services/common/request_rules.py) has already refused any request
that breaks a field rule of the contract (UUIDs, required fields, ranges, lengths, currency
codes), so a servicer only reads the checked fields into domain values here; the rules that
span fields (one currency per order, a total that fits) are the domain's and come back as
`FieldViolation`s, raised with `refuse`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from services.common.errors import FieldViolation, InvalidArgument
from services.common.money import DEFAULT_CURRENCY, Money

MAX_PAGE_SIZE = 1000
# A free-text reason (CancelOrder, RefundPayment): one limit for every service.
MAX_REASON_LENGTH = 1000
DEFAULT_PAGE_SIZE = 50


class MoneyMessage(Protocol):
    """Structural view of shop.common.v1.Money, so this module needs no generated code."""

    currency_code: str
    minor_units: int


def canonical_id(value: str) -> str:
    """A UUID the rules accepted (any case), spelled the one way the mesh stores it.

    Args:
        value: a UUID the rules accepted.

    Returns:
        It in lower case.
    """
    return value.lower()


def money(value: MoneyMessage) -> Money:
    """A checked amount; the empty currency means USD.

    Args:
        value: a `shop.common.v1.Money`.

    Returns:
        The amount.
    """
    return Money(value.currency_code or DEFAULT_CURRENCY, value.minor_units)


def page_size(value: int) -> int:
    """0 means the default; larger sizes are capped (the rules refuse negative ones).

    Args:
        value: the requested page size.

    Returns:
        The page size to use.
    """
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


# At most this many field names in an error's message (all are in its BadRequest, up to
# grpc_server.MAX_FIELD_VIOLATIONS).
MESSAGE_FIELDS = 20


def refuse(violations: Sequence[FieldViolation]) -> None:
    """Raise one InvalidArgument naming every violation, if there is any.

    Args:
        violations: the bad fields.
    """
    if violations:
        named = list(dict.fromkeys(v.field for v in violations))
        fields = ", ".join(named[:MESSAGE_FIELDS])
        if len(named) > MESSAGE_FIELDS:  # the message travels in a header: keep it short
            fields += f" and {len(named) - MESSAGE_FIELDS} more"
        raise InvalidArgument(f"the request has invalid fields: {fields}", violations)
