"""scripts/gen-drift-doc: docs/drift.md is what the profile table, rules.toml and the cases say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gen-drift-doc"


def test_the_committed_drift_page_is_up_to_date() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_change_is_pinned_by_a_case() -> None:
    page = (ROOT / "docs" / "drift.md").read_text(encoding="utf-8")
    assert "Pinned by no case" not in page
