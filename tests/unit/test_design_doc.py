"""docs/design.md is self-contained and in step with the code: it links only to files of the
repository, its order state diagram is the domain's transition table, and its events table
is the contract's (subjects, messages and consuming services from proto/ and the consumers)."""

from __future__ import annotations

import re
from pathlib import Path

from services.order.domain.model import TRANSITIONS
from tests.contract.descriptors import Contract, service_consumers

ROOT = Path(__file__).resolve().parents[2]
DESIGN = ROOT / "docs" / "design.md"


def mermaid_blocks() -> list[str]:
    return re.findall(r"^```mermaid\n(.*?)^```$", DESIGN.read_text(), re.MULTILINE | re.DOTALL)


def test_links_point_at_files_of_the_repository() -> None:
    text = DESIGN.read_text()
    assert "DESIGN" not in text, "the design is in this file, not in a document we do not ship"
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if not t.startswith(("http://", "https://"))]
    assert local
    for target in local:
        assert (DESIGN.parent / target).exists(), target


def test_the_order_state_diagram_is_the_domains_transition_table() -> None:
    (diagram,) = [b for b in mermaid_blocks() if "PENDING --> RESERVED" in b]
    drawn = set(re.findall(r"^\s*(\w+) --> (\w+): (.+)$", diagram, re.MULTILINE))
    expected = {(s.value, t.value, trigger.value) for (s, trigger), t in TRANSITIONS.items()}
    assert drawn == expected
    assert {"sequenceDiagram" in b for b in mermaid_blocks()} == {True, False}


def test_the_events_table_is_the_contracts() -> None:
    contract = Contract.load()
    rows = re.findall(r"^\| `([a-z_.]+)` \| `(shop\.[\w.]+)` \| (.+) \|$", DESIGN.read_text(), re.M)
    assert {(s, m) for s, m, _ in rows} == {(e.subject, e.full_name) for e in contract.events}
    consumed: dict[str, set[str]] = {}
    for service, consumer in service_consumers():
        for handler in consumer.handlers:
            consumed.setdefault(handler.DESCRIPTOR.full_name, set()).add(service)
    for _, message, flow in rows:
        _, _, consumers = flow.partition("→")
        named = {w.lower() for w in re.findall(r"\b(Order|Credit|Payment)\b", consumers)}
        assert named == consumed.get(message, set()), (message, flow)
