"""CPU time and memory of the mesh's processes (services, NATS, PostgreSQL), via psutil."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import psutil


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its descendants, including reaped children (so a
    PostgreSQL backend that exited still counts, through the postmaster)."""
    total = 0.0
    for process in _tree(pid):
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
            if process.pid == pid:
                total += times.children_user + times.children_system
    return total


def peak_rss_bytes(pid: int) -> int | None:
    """The kernel's high-water mark of resident memory (VmHWM), Linux only."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def rss_bytes(pid: int) -> int:
    with contextlib.suppress(psutil.Error):
        return int(psutil.Process(pid).memory_info().rss)
    return 0


@dataclass
class Monitor:
    """Samples the RSS of named processes while the benchmark runs; peaks are kept."""

    pids: dict[str, int]
    interval: float = 0.25
    peak_rss: dict[str, int] = field(default_factory=dict)

    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def sample(self) -> None:
        for name, pid in self.pids.items():
            self.peak_rss[name] = max(self.peak_rss.get(name, 0), rss_bytes(pid))

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def peaks(self) -> dict[str, int]:
        """Per process: the kernel's high-water mark when known, else the sampled peak."""
        self.sample()
        return {
            name: max(self.peak_rss.get(name, 0), peak_rss_bytes(pid) or 0)
            for name, pid in self.pids.items()
        }
