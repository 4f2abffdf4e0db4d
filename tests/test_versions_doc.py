"""scripts/gen-versions-doc: the drift table of docs/versions.md is what the overrides in golden/ say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lxml import etree

from pytest_pcie.drift import Cause, classify

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gen-versions-doc"


def test_the_committed_versions_page_is_up_to_date() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def outcome(devices: str, failure: str | None = None) -> etree._Element:
    failed = f"<failure step='0' label='define'>{failure}</failure>" if failure else ""
    return etree.fromstring(f"<outcome machine='q35'><devices>{devices}</devices>{failed}</outcome>")


ROOT_PORT = (
    "<controller type='pci' index='{i}' model='pcie-root-port'><address type='pci' bus='0x00' slot='{s}'/></controller>"
)
NIC = "<interface type='user'><address type='pci' bus='{b}' slot='0x00'/></interface>"


def test_a_moved_address_an_extra_port_and_a_new_device_are_each_named() -> None:
    before = outcome(ROOT_PORT.format(i=1, s="0x01") + NIC.format(b="0x01"))
    after = outcome(
        ROOT_PORT.format(i=1, s="0x01") + ROOT_PORT.format(i=2, s="0x02") + NIC.format(b="0x02")
        + "<memballoon model='virtio'><address type='pci' bus='0x01' slot='0x00'/></memballoon>"
    )
    causes, details = classify(before, after)
    assert causes == (Cause.PORT_COUNT, Cause.NEW_DEVICE, Cause.ADDRESS_MOVED)
    assert details[0] == "1 ports/bridges became 2"


def test_message_text_and_failures_that_come_or_go() -> None:
    old, new = outcome("", "a PCI slot"), outcome("", "a PCIe slot")
    assert classify(old, new)[0] == (Cause.MESSAGE_TEXT,)
    assert classify(outcome(""), new)[0] == (Cause.NOW_FAILS,)
    assert classify(old, outcome(""))[0] == (Cause.NOW_SUCCEEDS,)
