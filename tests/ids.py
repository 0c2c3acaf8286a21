"""Ids for tests: the contract's ids are canonical UUID strings (DESIGN §3)."""

from __future__ import annotations

import uuid


def new_id() -> str:
    """A fresh id, as a client or a service would make one."""
    return str(uuid.uuid4())
