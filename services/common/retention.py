"""Nothing grows forever: how long the streams, the outbox, the inbox and the request ids
keep what they hold, and the one pruner every service runs to delete what is older.

The windows nest (docs/reliability.md, "Retention"): JetStream forgets a message id after
DUPLICATE_WINDOW_SECONDS; a stream keeps an event STREAM_MAX_AGE_SECONDS, so that is how
late a redelivery or a replay can bring it; the inbox must remember the event at least that
long, or the late copy would be applied a second time. Settings that break the chain are
refused at start. A request id is kept IDEMPOTENCY_RETENTION_SECONDS: the window within
which a client may retry with the same `request_id` and get the first answer.

The pruner deletes a bounded batch per statement (each its own short transaction, the rows
taken `FOR UPDATE SKIP LOCKED`, so it never waits on a lock nor holds many), pauses between
batches, and never touches a row whose age column is NULL: an unsent outbox row, an open
cancellation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.sql import Transaction

if TYPE_CHECKING:
    from services.common.settings import Env

log = logging.getLogger(__name__)

DAY = 24 * 3600
WEEK = 7 * DAY
NO_LIMIT = -1

# Publishes retried within this window are dropped by JetStream (Nats-Msg-Id); the inbox
# covers anything later, so it must keep at least this much (it keeps far more).
DUPLICATE_WINDOW_SECONDS = 600.0

_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Retention:
    """How long each kind of record is kept, in seconds; the defaults are the documented ones."""

    stream_max_age_seconds: int = WEEK
    stream_max_bytes: int = NO_LIMIT  # the age bounds the streams
    outbox_seconds: int = DAY  # sent outbox rows; unsent ones are kept until sent
    inbox_seconds: int = WEEK  # also Credit's and Payment's cancelled-order notes
    idempotency_seconds: int = WEEK

    @classmethod
    def read(cls, env: Env) -> Retention:
        """The windows from the environment, refusing ones that break the chain.

        Args:
            env: the settings reader (problems are collected on it).

        Returns:
            The retention windows.
        """
        max_age = env.integer(
            "STREAM_MAX_AGE_SECONDS",
            WEEK,
            minimum=int(DUPLICATE_WINDOW_SECONDS),
        )
        max_bytes = env.integer("STREAM_MAX_BYTES", NO_LIMIT, minimum=-1, maximum=2**62)
        if 0 <= max_bytes < _MIB:
            env.problems.append(
                f"STREAM_MAX_BYTES must be -1 (no limit) or at least {_MIB}, got {max_bytes}"
            )
            max_bytes = NO_LIMIT
        inbox = env.integer("INBOX_RETENTION_SECONDS", WEEK, minimum=int(DUPLICATE_WINDOW_SECONDS))
        if inbox < max_age:
            env.problems.append(
                f"INBOX_RETENTION_SECONDS ({inbox}) must be at least STREAM_MAX_AGE_SECONDS"
                f" ({max_age}): an event still in a stream but gone from the inbox would be"
                " applied twice if it were redelivered or replayed"
            )
        return cls(
            stream_max_age_seconds=max_age,
            stream_max_bytes=max_bytes,
            outbox_seconds=env.integer("OUTBOX_RETENTION_SECONDS", DAY),
            inbox_seconds=inbox,
            # at least an hour: a claim must outlive the call that made it
            idempotency_seconds=env.integer("IDEMPOTENCY_RETENTION_SECONDS", WEEK, minimum=3600),
        )


@dataclass(frozen=True, slots=True)
class PruneRule:
    """Rows of `table` whose `age_column` is more than `keep_seconds` old are deleted; a row
    whose `age_column` is NULL never is. Names are the code's own, never input."""

    table: str
    age_column: str
    keep_seconds: float

    @property
    def sql(self) -> str:
        """The DELETE of one bounded batch of this rule's old rows."""
        # The rows are locked by the inner SELECT, so they cannot change before the DELETE
        # finds them by ctid (a TID scan: no second search, whatever the table's size).
        return (
            f"DELETE FROM {self.table} WHERE ctid = ANY(ARRAY("
            f"SELECT ctid FROM {self.table}"
            f" WHERE {self.age_column} < now() - make_interval(secs => :keep)"
            " LIMIT :batch FOR UPDATE SKIP LOCKED))"
        )


def core_rules(retention: Retention) -> list[PruneRule]:
    """The shared tables of every service (services/common/migrations).

    Args:
        retention: the windows.

    Returns:
        The prune rules of the outbox, the inbox and the request ids.
    """
    return [
        PruneRule("outbox", "published_at", retention.outbox_seconds),  # NULL: not yet sent
        PruneRule("inbox", "processed_at", retention.inbox_seconds),
        PruneRule("idempotency_keys", "created_at", retention.idempotency_seconds),
    ]


class Pruner:
    """Deletes what the rules say is past its window, every `interval_seconds`; several
    replicas may run it at once (SKIP LOCKED: each takes rows the others have not)."""

    def __init__(
        self,
        engine: AsyncEngine,
        rules: Sequence[PruneRule],
        *,
        batch: int = 1000,
        pause_seconds: float = 0.1,
        interval_seconds: float = 300.0,
    ) -> None:
        self.engine = engine
        self.rules = list(rules)
        self.batch = batch
        self.pause_seconds = pause_seconds
        self.interval_seconds = interval_seconds

    async def prune_batch(self, rule: PruneRule) -> int:
        """Delete at most `batch` rows past the rule's window, in one short statement."""
        async with Transaction(self.engine, autocommit=True) as sql:
            return await sql.execute(
                rule.sql, {"keep": float(rule.keep_seconds), "batch": self.batch}
            )

    async def prune(self) -> dict[str, int]:
        """One round over every rule, batch after batch until a short one; rows deleted per
        table."""
        deleted: dict[str, int] = {}
        for rule in self.rules:
            total = 0
            while True:
                n = await self.prune_batch(rule)
                total += n
                if n < self.batch:
                    break
                await asyncio.sleep(self.pause_seconds)  # let other work have the table
            deleted[rule.table] = deleted.get(rule.table, 0) + total
        return deleted

    async def run(self) -> None:
        """Prune every few minutes until cancelled."""
        while True:
            try:
                deleted = await self.prune()
                if any(deleted.values()):
                    log.info(
                        "pruned rows past their retention: %s", deleted, extra={"pruned": deleted}
                    )
            except asyncio.CancelledError:
                raise
            except Exception as error:  # database away: try again next round
                log.warning("pruning failed (%s); retrying next round", error)
            await asyncio.sleep(self.interval_seconds)
