"""The alert rules of the observability component, checked and unit tested by promtool
(each alert firing and not firing: alerts_test.yml beside them)."""

from __future__ import annotations

import subprocess

from tests.observability.prometheus import ALERTS, COMPONENT, require


def test_alert_rules_are_valid() -> None:
    result = subprocess.run(
        [require("promtool"), "check", "rules", str(ALERTS)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout


def test_each_alert_fires_and_stays_quiet_as_its_unit_tests_say() -> None:
    result = subprocess.run(
        [require("promtool"), "test", "rules", "alerts_test.yml"],
        capture_output=True,
        text=True,
        cwd=COMPONENT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
