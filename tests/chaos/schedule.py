"""Scenario 12's plan: a seeded, randomized mix of operations and faults.

The whole plan is a pure function of the seed, drawn before anything runs, so a failing seed
replays exactly the same operations and the same faults in the same order at the same
offsets: `CHAOS_SEED=<seed> make chaos` (the failure message prints the seed and the plan).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

SERVICES = ("order", "credit", "payment")
KINDS = ("kill", "term", "freeze", "nats", "postgres", "crash-point")
OPERATIONS = ("pay", "decline", "cancel", "refund", "partial-refund")
DECLINED_LAST_TWO = (5, 51, 54)


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the start
    kind: str
    service: str
    seconds: float  # how long it lasts
    point: str = ""

    def __str__(self) -> str:
        what = f"{self.kind} {self.service}".strip()
        if self.point:
            what += f" at {self.point}"
        return f"+{self.at:.1f}s {what} for {self.seconds:.1f}s"


@dataclass(frozen=True)
class Operation:
    worker: int
    kind: str
    price: int


@dataclass(frozen=True)
class Plan:
    seed: int
    faults: tuple[Fault, ...]
    operations: tuple[Operation, ...]

    def describe(self) -> str:
        ops = ", ".join(f"{o.worker}:{o.kind}({o.price})" for o in self.operations)
        faults = "\n  ".join(str(f) for f in self.faults)
        return f"seed {self.seed}\nfaults:\n  {faults}\noperations: {ops}"


def plan(seed: int, workers: int = 5, per_worker: int = 5, faults: int = 5) -> Plan:
    rng = random.Random(seed)
    schedule: list[Fault] = []
    at = 1.0
    for _ in range(faults):
        at += rng.uniform(1.0, 3.0)
        kind = rng.choice(KINDS)
        service = "" if kind in ("nats", "postgres") else rng.choice(SERVICES)
        point = ""
        if kind == "crash-point":
            point = rng.choice(("outbox.committed", "inbox.committed"))
            if point == "inbox.committed" and service == "payment":
                service = rng.choice(("order", "credit"))  # Payment consumes no events
        seconds = round(rng.uniform(1.0, 4.0), 1)
        schedule.append(Fault(round(at, 1), kind, service, seconds, point))
        at += seconds
    operations = []
    for worker in range(workers):
        for _ in range(per_worker):
            kind = rng.choice(OPERATIONS)
            if kind == "decline":
                price = 100 * rng.randint(5, 40) + rng.choice(DECLINED_LAST_TWO)
            else:
                price = 100 * rng.randint(5, 40) + 10 * rng.randint(0, 9)  # approved
            operations.append(Operation(worker, kind, price))
    return Plan(seed, tuple(schedule), tuple(operations))
