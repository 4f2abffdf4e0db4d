"""attach() and detach() of the reference assigner, each expectation checked against libvirtd 9.0.0
(define, then ``attach-device --config``/``--live`` on a transient guest started with no OS, or
``detach-device --config``)."""

from __future__ import annotations

import pytest
from lxml import etree
from reference_support import MIN, addresses, controller, domain, nic, pci

from pytest_pcie.reference import LibvirtError, attach, define, detach

BRIDGE = controller("pci-bridge", 1, "<model name='pci-bridge'/><target chassisNr='1'/>")
MAC = "52:54:00:00:00:0{}"

# (id, machine, base devices, live?, devices attached in order, expected addresses (subset),
#  expected (failing step, message) or None)
SEQUENCES: list[tuple[str, str, str, bool, list[str], dict[str, str], tuple[int, str] | None]] = [
    ("live-q35-spare-port-then-full", "q35", "", True, [nic(), nic()], {"interface#0": "03:00.0"},
     (2, "internal error: No more available PCI slots")),
    ("live-q35-e1000-needs-legacy-bridge", "q35", "", True, [nic("e1000")], {},
     (1, "internal error: No more available PCI slots")),
    ("live-q35-pcie-root-not-hotpluggable", "q35", "", True, [nic(address=pci(0, 5))], {},
     (1, "XML error: The device at PCI address 0000:00:05.0 requires hotplug capability, but the PCI "
         "controller with index='0' doesn't support hotplug")),
    ("live-function-1", "q35", "", True, [nic(address=pci(3, 0, 1))], {},
     (1, "internal error: Only PCI device addresses with function=0 are supported")),
    ("live-double-use", "q35", "", True, [nic(address=pci(1, 0))], {},
     (1, "XML error: Attempted double use of PCI Address 0000:01:00.0")),
    ("live-missing-bus", "q35", "", True, [nic(address=pci(9, 0))], {},
     (1, "XML error: Invalid PCI address 0000:09:00.0. Only PCI buses up to 3 are available")),
    ("live-root-port-slot-1", "q35", "", True, [nic(address=pci(3, 1))], {},
     (1, "XML error: Invalid PCI address 0000:03:01.0. slot must be <= 0")),
    ("live-pci-bridge-refused", "pc", "", True, [BRIDGE], {},
     (1, "Operation not supported: 'pci' controller cannot be hot plugged.")),
    ("live-bare-root-port-refused", "q35", "", True, [controller("pcie-root-port")], {},
     (1, "internal error: Required option 'modelName' is not set for PCI controller with index '-1', model "
         "'pcie-root-port' and modelName 'none'")),
    ("live-pc-next-free-slot", "pc", MIN + nic(address=pci(0, 2)), True, [nic(), nic("e1000e")],
     {"interface#1": "00:03.0", "interface#2": "00:04.0"}, None),
    ("live-pc-bridge-slots", "pc", MIN + BRIDGE + "".join(nic(address=pci(0, slot)) for slot in range(3, 32)), True,
     [nic()], {"pci1": "00:02.0", "interface#29": "01:01.0"}, None),
    ("offline-q35-spare-then-new-ports", "q35", "", False, [nic(), nic(), nic("e1000")],
     {"interface#0": "03:00.0", "pci4": "00:01.3", "interface#1": "04:00.0", "pci5": "00:01.4",
      "pci6": "05:00.0", "interface#2": "06:01.0"}, None),
    ("offline-explicit-far-bus-adds-ports", "q35", "", False, [nic(address=pci(0x1F, 0))],
     {"pci7": "00:01.6", "pci31": "00:04.6", "interface#0": "1f:00.0"}, None),
    ("offline-double-use", "q35", "", False, [nic(address=pci(1, 0))], {},
     (1, "XML error: Attempted double use of PCI Address 0000:01:00.0")),
    ("offline-controller-index-taken", "q35", "", False,
     [controller("pcie-root-port", 1, "<model name='pcie-root-port'/><target chassis='1' port='0x20'/>")], {},
     (1, "Requested operation is not valid: controller index='1' already exists")),
]


def _run(machine: str, base: str, live: bool, steps: list[str]) -> tuple[str, tuple[int, str] | None]:
    xml = define(domain(machine, base))
    for number, device in enumerate(steps, start=1):
        try:
            xml = attach(xml, device, live=live)
        except LibvirtError as exc:
            return xml, (number, exc.message)
    return xml, None


@pytest.mark.parametrize(("machine", "base", "live", "steps", "expected", "failure"),
                         [case[1:] for case in SEQUENCES], ids=[case[0] for case in SEQUENCES])
def test_attach_sequences(machine: str, base: str, live: bool, steps: list[str], expected: dict[str, str],
                          failure: tuple[int, str] | None) -> None:
    xml, failed = _run(machine, base, live, steps)
    assert failed == failure
    placed = addresses(xml)
    assert {key: placed.get(key) for key in expected} == expected


def test_live_attach_never_adds_controllers() -> None:
    before = define(domain("q35", nic() * 2))
    after = attach(before, nic(), live=True)
    controllers = {key for key in addresses(before) if key.startswith("pci")}
    assert {key for key in addresses(after) if key.startswith("pci")} == controllers


def test_pc_without_acpi_cannot_hotplug_into_pci_root() -> None:
    xml = define(domain("pc", MIN).replace("<acpi/>", ""))
    with pytest.raises(LibvirtError) as caught:
        attach(xml, nic(), live=True)
    assert caught.value.message == (
        "internal error: unable to execute QEMU command 'device_add': Bus 'pci.0' does not support hotplugging"
    )


def test_detach_keeps_added_controllers_and_frees_the_slot() -> None:
    xml = define(domain("q35", MIN + nic(mac=MAC.format(1)) + nic(mac=MAC.format(2))))
    detached = detach(xml, nic(mac=MAC.format(1)))
    assert {key for key in addresses(detached) if key.startswith("pci")} == {
        key for key in addresses(xml) if key.startswith("pci")}
    assert addresses(detached)["interface#0"] == "02:00.0"
    reattached = attach(detached, nic(mac=MAC.format(3)), live=False)
    assert addresses(reattached)["interface#1"] == "01:00.0"


def test_detach_of_an_absent_nic_names_its_mac() -> None:
    xml = define(domain("pc", MIN + nic(mac=MAC.format(1))))
    with pytest.raises(LibvirtError) as caught:
        detach(xml, nic(mac=MAC.format(9)))
    assert caught.value.message == (
        "device not found: no device found at address '(<null>)' matching MAC address '52:54:00:00:00:09' "
        "and alias '(<null>)'"
    )


PCI_SERIAL = "<serial type='pty'><target type='pci-serial'{}/>{}</serial>"
VIRTIO_CONSOLE = "<console type='pty'><target type='virtio'{}/></console>"
CHANNEL = "<channel type='{}'><target type='virtio'{}/></channel>"
REDIRDEV = "<redirdev bus='usb' type='tcp'>{}<source mode='{}' host='localhost' service='{}'/></redirdev>"
LEASE = "<lease>{}<key>{}</key><target path='/tmp/lease'/></lease>"
CHR_MISSING = "invalid argument: device not present in domain configuration"
THREE_SERIALS = MIN + "<serial type='pty'/>" + PCI_SERIAL.format("", "") * 2

# (id, machine, base devices, the device to detach, what is left of that element kind (PCI address,
#  or for devices without one the attribute that tells them apart; consoles of type serial left out),
#  or libvirt's message).  Each checked against libvirtd 9.0.0 with detach-device --config.
DETACHES: list[tuple[str, str, str, str, list[str] | str]] = [
    ("serial-by-port-2", "pc", THREE_SERIALS, PCI_SERIAL.format(" port='2'", ""), ["isa-serial", "00:02.0"]),
    ("serial-by-port-1", "pc", THREE_SERIALS, PCI_SERIAL.format(" port='1'", ""), ["isa-serial", "00:03.0"]),
    ("serial-by-port-q35", "q35", THREE_SERIALS, PCI_SERIAL.format(" port='1'", ""), ["isa-serial", "02:02.0"]),
    ("serial-no-target-type-is-isa", "pc", THREE_SERIALS, "<serial type='pty'><target port='0'/></serial>",
     ["00:02.0", "00:03.0"]),
    ("serial-address-ignored", "pc", THREE_SERIALS, PCI_SERIAL.format(" port='2'", pci(0, 0x1F)),
     ["isa-serial", "00:02.0"]),
    ("serial-target-type-differs", "pc", THREE_SERIALS,
     "<serial type='pty'><target type='isa-serial' port='1'/></serial>", CHR_MISSING),
    ("serial-without-port", "pc", THREE_SERIALS, PCI_SERIAL.format("", ""), CHR_MISSING),
    ("serial-source-differs", "pc", THREE_SERIALS,
     "<serial type='file'><source path='/tmp/x'/><target type='pci-serial' port='1'/></serial>", CHR_MISSING),
    # written with target type isa-serial, an ISA serial takes port 0 before the pci-serial before it is numbered
    ("serial-isa-ports-first", "pc",
     MIN + PCI_SERIAL.format("", "") + "<serial type='pty'><target type='isa-serial'/></serial>",
     PCI_SERIAL.format(" port='1'", ""), ["isa-serial"]),
    ("parallel-by-port", "pc", MIN + "<parallel type='pty'/><parallel type='null'/>",
     "<parallel type='null'><target port='1'/></parallel>", ["pty"]),
    ("parallel-without-port", "pc", MIN + "<parallel type='pty'/>", "<parallel type='pty'/>", CHR_MISSING),
    ("channel-by-name", "q35", MIN + CHANNEL.format("unix", " name='a.0'") + CHANNEL.format("unix", " name='b.0'"),
     CHANNEL.format("unix", " name='b.0'"), ["a.0"]),
    ("channel-unix-without-path-any-mode", "q35", MIN + CHANNEL.format("unix", " name='a.0'"),
     "<channel type='unix'><source mode='connect'/><target type='virtio' name='a.0'/></channel>", []),
    ("channel-without-name", "q35", MIN + CHANNEL.format("unix", " name='a.0'"), CHANNEL.format("unix", ""),
     CHR_MISSING),
    ("channel-source-type-differs", "q35", MIN + CHANNEL.format("unix", " name='a.0'"),
     CHANNEL.format("pty", " name='a.0'"), CHR_MISSING),
    ("console-serial-refused", "pc", MIN + "<serial type='pty'/>", "<console type='pty'/>",
     "Requested operation is not valid: detaching serial console is not supported"),
    # the alias of the ISA serial 0 is console 0, so the virtio console is port 1 whatever was written
    ("console-virtio-by-position", "pc", MIN + "<serial type='pty'/>" + VIRTIO_CONSOLE.format(" port='7'"),
     VIRTIO_CONSOLE.format(" port='1'"), []),
    ("console-virtio-first-without-serial", "pc", MIN + VIRTIO_CONSOLE.format("") * 2,
     VIRTIO_CONSOLE.format(" port='1'"), ["virtio"]),
    ("console-virtio-port-past-the-end", "pc", MIN + VIRTIO_CONSOLE.format("") * 2,
     VIRTIO_CONSOLE.format(" port='2'"), CHR_MISSING),
    ("redirdev-by-source", "q35", REDIRDEV.format("", "connect", 4000) + REDIRDEV.format("", "connect", 4001),
     REDIRDEV.format("", "connect", 4001), ["4000"]),
    ("redirdev-mode-differs", "q35", REDIRDEV.format("", "connect", 4000), REDIRDEV.format("", "bind", 4000),
     "device not found: no matching redirdev was not found"),
    ("redirdev-alias-differs", "q35", REDIRDEV.format("", "connect", 4000),
     REDIRDEV.format("<alias name='ua-x'/>", "connect", 4000), "device not found: no matching redirdev was not found"),
    ("lease-by-lockspace-and-key", "pc", MIN + LEASE.format("<lockspace>ls</lockspace>", "k1")
     + LEASE.format("<lockspace>ls</lockspace>", "k2"), LEASE.format("<lockspace>ls</lockspace>", "k1"), ["k2"]),
    ("lease-absent", "pc", MIN + LEASE.format("<lockspace>ls</lockspace>", "k1"),
     LEASE.format("<lockspace>other</lockspace>", "k1"),
     "device not found: Lease k1 in lockspace other does not exist"),
    ("lease-without-lockspace", "pc", MIN + LEASE.format("<lockspace>ls</lockspace>", "k1"), LEASE.format("", "k1"),
     "An error occurred, but the cause is unknown"),
]


def left_of_kind(xml: str, tag: str) -> list[str]:
    """What tells apart the ``tag`` devices left in ``xml`` (see DETACHES); serial-type consoles,
    which libvirt prints as aliases of serial 0, are left out."""
    result: list[str] = []
    devices = etree.fromstring(xml.encode()).find("devices")
    assert devices is not None
    for element in devices.iterfind(tag):
        address = element.find("address")
        target = element.find("target")
        if address is not None and address.get("type") == "pci":
            bus, slot, function = (int(address.get(name) or "0", 0) for name in ("bus", "slot", "function"))
            result.append(f"{bus:02x}:{slot:02x}.{function:x}")
        elif tag == "serial":
            result.append((target.get("type") if target is not None else None) or "isa-serial")
        elif tag == "console":
            kind = (target.get("type") if target is not None else None) or "serial"
            if kind != "serial":
                result.append(kind)
        elif tag == "channel":
            result.append(target.get("name") or "" if target is not None else "")
        elif tag == "redirdev":
            source = element.find("source")
            result.append(source.get("service") or "" if source is not None else "")
        elif tag == "lease":
            result.append(element.findtext("key") or "")
        else:
            result.append(element.get("type") or "")
    return result


@pytest.mark.parametrize(("machine", "base", "wanted", "expected"), [case[1:] for case in DETACHES],
                         ids=[case[0] for case in DETACHES])
def test_detach_matching(machine: str, base: str, wanted: str, expected: list[str] | str) -> None:
    xml = define(domain(machine, base))
    tag = str(etree.fromstring(wanted.encode()).tag)
    if isinstance(expected, str):
        with pytest.raises(LibvirtError) as caught:
            detach(xml, wanted)
        assert caught.value.message == expected
        return
    assert left_of_kind(detach(xml, wanted), tag) == expected


def test_detaching_a_pci_serial_frees_its_slot_for_the_next_attach() -> None:
    xml = define(domain("q35", MIN + PCI_SERIAL.format("", "") * 2))
    assert left_of_kind(xml, "serial") == ["02:01.0", "02:02.0"]
    detached = detach(xml, PCI_SERIAL.format(" port='0'", ""))
    reattached = attach(detached, nic("e1000"), live=False)
    assert addresses(reattached)["interface#0"] == "02:01.0"
    assert {key for key in addresses(reattached) if key.startswith("pci")} == {
        key for key in addresses(xml) if key.startswith("pci")}


ISA_SERIAL = "<serial type='{}'>{}<target type='isa-serial'{}/></serial>"
TCP = "<source mode='connect' host='localhost' service='{}'/>"

# (id, machine, base devices, steps: (attach?, device XML), the message of the step that fails or None).
# Each checked against libvirtd 9.0.0.
CHR_SEQUENCES: list[tuple[str, str, str, list[tuple[bool, str]], str | None]] = [
    ("ports-stay-after-a-detach", "pc", MIN + ISA_SERIAL.format("tcp", TCP.format(4000), " port='0'")
     + ISA_SERIAL.format("tcp", TCP.format(4001), ""),
     [(False, ISA_SERIAL.format("tcp", TCP.format(4000), " port='0'")),
      (False, ISA_SERIAL.format("tcp", TCP.format(4001), " port='1'"))], None),
    ("port-spelt-as-strtoul-reads-it", "pc", MIN + ISA_SERIAL.format("pty", "", "") * 2,
     [(False, ISA_SERIAL.format("pty", "", " port=' 0'")), (False, ISA_SERIAL.format("pty", "", " port='+1'"))],
     None),
    ("port-minus-one-is-no-port", "pc", MIN + ISA_SERIAL.format("pty", "", ""),
     [(False, ISA_SERIAL.format("pty", "", " port='-1'"))], CHR_MISSING),
    ("port-not-a-number", "pc", MIN + ISA_SERIAL.format("pty", "", ""),
     [(False, ISA_SERIAL.format("pty", "", " port='x'"))], "XML error: Invalid port number: x"),
    # define numbers the untyped serial after the typed ISA one took port 0: both hold port 0, and
    # re-reading the stored XML for any --config change refuses that
    ("isa-port-clash-stored-by-define", "pc",
     MIN + ISA_SERIAL.format("file", "<source path='/tmp/a'/>", "") + "<serial type='pty'><target port='0'/></serial>",
     [(False, "<serial type='pty'><target port='0'/></serial>")],
     "internal error: target port '0' already allocated"),
    ("attach-serial-console-refused", "pc", MIN + ISA_SERIAL.format("pty", "", ""), [(True, "<console type='pty'/>")],
     "Operation not supported: attaching serial console is not supported"),
    ("attach-same-serial-refused", "pc", MIN + ISA_SERIAL.format("pty", "", ""),
     [(True, ISA_SERIAL.format("pty", "", " port='0'"))], "Requested operation is not valid: chardev already exists"),
    ("attach-fifth-isa-serial-refused", "pc", MIN + ISA_SERIAL.format("pty", "", "") * 3,
     [(True, ISA_SERIAL.format("pty", "", " port='3'")), (True, ISA_SERIAL.format("pty", "", ""))],
     "internal error: Maximum supported number of ISA serial ports is '4'"),
]


@pytest.mark.parametrize(("machine", "base", "steps", "failure"), [case[1:] for case in CHR_SEQUENCES],
                         ids=[case[0] for case in CHR_SEQUENCES])
def test_character_device_sequences(machine: str, base: str, steps: list[tuple[bool, str]],
                                    failure: str | None) -> None:
    xml = define(domain(machine, base))
    failed = None
    for is_attach, device in steps:
        try:
            xml = attach(xml, device, live=False) if is_attach else detach(xml, device)
        except LibvirtError as exc:
            failed = exc.message
            break
    assert failed == failure
