"""Test-only fault points: make the process die (SIGKILL, no clean-up) at a named point.

Off unless the environment sets `SHOP_FAULT_CRASH_AT` (the chaos suite does; production never
does): `point` crashes at the first hit of that point, `point@N` at the N-th. Points:

    outbox.committed   a unit of work committed a state change and its outbox rows,
                       before the relay published them
    inbox.committed    a consumer committed an event's effect and its inbox row, before
                       the ack to JetStream
    inbox.dead_lettered  a consumer published a poison event to DEADLETTER, before the ack
                       that takes it off its own stream
"""

from __future__ import annotations

import os
import signal
import sys

ENV = "SHOP_FAULT_CRASH_AT"

_spec = os.environ.get(ENV, "").strip()
_point, _, _nth = _spec.partition("@")
_remaining = int(_nth) if _nth.isdigit() and int(_nth) > 0 else 1


def crash_point(name: str) -> None:
    """SIGKILL ourselves here when the test setting names this point.

    Args:
        name: the point's name, e.g. `outbox.committed`.
    """
    global _remaining
    if not _point or name != _point:
        return
    _remaining -= 1
    if _remaining > 0:
        return
    sys.stderr.write(f"FAULT: crashing at {name} ({ENV})\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)
