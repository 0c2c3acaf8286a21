"""Request validation that reports every bad field at once (google.rpc.BadRequest)."""

from __future__ import annotations

import uuid
from typing import Protocol

from services.common.errors import FieldViolation, InvalidArgument
from services.common.money import DEFAULT_CURRENCY, MAX_MINOR_UNITS, Money, is_known_currency

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50


class MoneyMessage(Protocol):
    """Structural view of shop.common.v1.Money, so this module needs no generated code."""

    currency_code: str
    minor_units: int


class Validator:
    """Collects field violations; `check()` raises one InvalidArgument naming them all."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.violations.append(FieldViolation(field, description))

    def uuid(self, field: str, value: str, *, required: bool = True) -> uuid.UUID | None:
        if not value:
            if required:
                self.add(field, "is required (a UUID)")
            return None
        try:
            parsed = uuid.UUID(value)
        except ValueError:
            self.add(field, f"must be a UUID, got {value[:64]!r}")
            return None
        if str(parsed) != value.lower():
            # Reject braces, URNs and hex without dashes: one canonical spelling per id.
            self.add(field, f"must be a UUID in canonical form, got {value[:64]!r}")
            return None
        return parsed

    def money(
        self, field: str, value: MoneyMessage | None, *, positive: bool = True
    ) -> Money | None:
        if value is None:
            self.add(field, "is required")
            return None
        currency = value.currency_code or DEFAULT_CURRENCY
        ok = True
        if not is_known_currency(currency):
            self.add(f"{field}.currency_code", f"unknown ISO 4217 currency {currency[:16]!r}")
            ok = False
        if positive and value.minor_units <= 0:
            self.add(f"{field}.minor_units", "must be greater than zero")
            ok = False
        elif value.minor_units < 0:
            self.add(f"{field}.minor_units", "must not be negative")
            ok = False
        elif value.minor_units > MAX_MINOR_UNITS:
            self.add(f"{field}.minor_units", "is too large")
            ok = False
        return Money(currency, value.minor_units) if ok else None

    def page_size(self, field: str, value: int) -> int:
        if value < 0:
            self.add(field, "must not be negative")
            return DEFAULT_PAGE_SIZE
        return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)

    def check(self, message: str = "the request has invalid fields") -> None:
        if self.violations:
            fields = ", ".join(v.field for v in self.violations)
            raise InvalidArgument(f"{message}: {fields}", self.violations)
