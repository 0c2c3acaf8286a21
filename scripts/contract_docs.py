"""Write the table of every RPC and event into docs/contract.md, from the descriptors of proto/.

    python scripts/contract_docs.py            # rewrite the part between the markers
    python scripts/contract_docs.py --check    # fail if it is out of date (make lint)

Nothing in the table is written by hand: services and RPCs with their comments and request
field rules, events with their subjects, and who consumes each event (the services' durable
consumer definitions).
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.contract.descriptors import Contract, service_consumers  # noqa: E402

DOC = ROOT / "docs" / "contract.md"
BEGIN = "<!-- BEGIN GENERATED CONTRACT TABLE (make docs) -->"
END = "<!-- END GENERATED CONTRACT TABLE -->"


def short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def render(contract: Contract) -> str:
    consumers: dict[str, list[str]] = {}
    for service, consumer in service_consumers():
        for cls in consumer.handlers:
            consumers.setdefault(cls.DESCRIPTOR.full_name, []).append(
                f"{service} (`{consumer.name}`)"
            )
    lines = [
        BEGIN,
        "",
        "### RPCs",
        "",
        "| service | RPC | request → response | required | UUID | what it does |",
        "|---|---|---|---|---|---|",
    ]
    for method in contract.methods:
        rules = contract.field_rules(method.input_type)
        required = [r.field for r in rules if r.required]
        groups = sorted({r.one_of_required for r in rules if r.one_of_required})
        required += [
            " or ".join(r.field for r in rules if r.one_of_required == group) for group in groups
        ]
        uuids = [r.field for r in rules if r.uuid]
        stream = "stream " if method.server_streaming else ""
        lines.append(
            f"| `{method.service}` | `{method.name}` | `{short(method.input_type)}` → "
            f"`{stream}{short(method.output_type)}` | {', '.join(required) or '—'} | "
            f"{', '.join(uuids) or '—'} | {method.comment} |"
        )
    lines += [
        "",
        "### Events",
        "",
        "| subject | message | consumed by | what happened |",
        "|---|---|---|---|",
    ]
    for event in sorted(contract.events, key=lambda e: e.subject):
        consumed = ", ".join(consumers.get(event.full_name, [])) or "— (audit)"
        lines.append(
            f"| `{event.subject or '(none)'}` | `{event.full_name}` | {consumed} | "
            f"{event.comment} |"
        )
    lines += ["", END]
    return "\n".join(lines)


def updated(text: str, table: str) -> str:
    if BEGIN not in text or END not in text:
        sys.exit(f"contract docs: {DOC.relative_to(ROOT)} lacks the markers {BEGIN} … {END}")
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return head + table + tail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the table is stale")
    args = parser.parse_args()
    current = DOC.read_text()
    fresh = updated(current, render(Contract.load()))
    if args.check:
        if fresh != current:
            diff = difflib.unified_diff(
                current.splitlines(),
                fresh.splitlines(),
                "docs/contract.md",
                "generated",
                lineterm="",
            )
            print("\n".join(diff))
            print("contract docs: docs/contract.md is stale; run `make docs`", file=sys.stderr)
            return 1
        print("contract docs: docs/contract.md is up to date")
        return 0
    DOC.write_text(fresh)
    print(f"contract docs: wrote the table into {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
