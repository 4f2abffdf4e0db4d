"""Every device kind the fuzzer can put in a domain, as a table.

A row is the device's XML with placeholders, plus what the generator must know to keep examples
runnable: whether a guest holding it can start on any host (no disk image, no vhost-vsock, no real
PCI device), whether libvirt 9.0.0 can hotplug it, and whether offline detach can find it again.
Adding a device model is one row.

Placeholders: ``{address}`` (a PCI ``<address>`` or nothing), ``{n}`` (the device's ordinal in
the example, unique), ``{mac}``, ``{vd}``/``{sd}`` (unique disk targets), ``{hd}`` (one of hda..hdd), ``{host_bus}``
(a host PCI bus that does not exist, so a hostdev never touches real hardware).
"""

from __future__ import annotations

from dataclasses import dataclass, field

X86 = frozenset({"pc", "q35"})
BOTH = X86  # the two x86 machines (the name predates the virt machines)
VIRT = frozenset({"aarch64-virt", "riscv64-virt"})
ALL = X86 | VIRT
# Every shmem device is named this plus its ordinal.  QEMU creates /dev/shm/<name> for it, which the
# runner removes afterwards (pytest_pcie.fuzz.shared_memory), recognising the fuzzer's own by this.
SHMEM_PREFIX = "pcie-fuzz-"
Q35 = frozenset({"q35"})
# virtio-iommu: q35 and aarch64 virt take it (without ACPI, as the suite's aarch64 guests are, libvirt
# refuses it there too); riscv64 virt is refused with the same message as pc.
IOMMU_MACHINES = Q35 | VIRT


@dataclass(frozen=True)
class Kind:
    """One device kind.

    ``startable``: a guest holding it starts on any host, so it may appear in live examples.
    ``hotplug``: libvirt can attach it to a running guest (others are still drawn now and then,
    to compare the refusal).  ``detachable``: the rendered XML identifies exactly one device
    (MAC, disk target, host address or name), so an offline detach of it is meaningful.
    ``addressable``: it takes a PCI ``<address>`` of its own.
    """

    name: str
    template: str
    startable: bool = True
    hotplug: bool = False
    detachable: bool = False
    addressable: bool = True
    machines: frozenset[str] = field(default=ALL)


def _net(model: str | None) -> str:
    model_xml = f"<model type='{model}'/>" if model else ""
    return f"<interface type='user'><mac address='{{mac}}'/>{model_xml}{{address}}</interface>"


def _vdisk(model: str | None) -> str:
    model_attr = f" model='{model}'" if model else ""
    return (
        f"<disk type='file' device='disk'{model_attr}><driver name='qemu' type='raw'/>"
        "<source file='/var/lib/pcie-fuzz/{vd}.img'/><target dev='{vd}' bus='virtio'/>{address}</disk>"
    )


def _virtio_rows(stem: str, template: str, *, startable: bool = True, hotplug: bool = False) -> list[Kind]:
    """A virtio device in its three spellings: plain, transitional and non-transitional."""
    return [
        Kind(f"{stem}{suffix}", template.replace("{model}", model), startable=startable, hotplug=hotplug)
        for suffix, model in (("", "virtio"), ("-transitional", "virtio-transitional"),
                              ("-non-transitional", "virtio-non-transitional"))
    ]  # fmt: skip


def _controller(kind: str, model: str | None, *, hotplug: bool = False, startable: bool = True) -> Kind:
    model_attr = f" model='{model}'" if model else ""
    name = f"{kind}-{model}" if model else kind
    template = f"<controller type='{kind}'{model_attr}>{{address}}</controller>"
    return Kind(name, template, startable=startable, hotplug=hotplug)


NETWORK = [
    Kind(f"net-{model or 'default'}", _net(model), hotplug=True, detachable=True)
    for model in ("virtio", "virtio-transitional", "virtio-non-transitional", "e1000", "e1000e", "rtl8139", None)
]

DISKS = [
    Kind(f"disk-{model or 'virtio'}", _vdisk(model), startable=False, hotplug=True, detachable=True)
    for model in (None, "virtio-transitional", "virtio-non-transitional")
] + [
    # cdroms need no image; their PCI footprint is the controller.  A scsi target past sdg lands on
    # a LUN > 0, which QEMU's emulated SCSI adapters refuse at start ("bad scsi device lun"): offline only.
    Kind("cdrom-scsi", "<disk type='file' device='cdrom'><target dev='{sd}' bus='scsi'/></disk>",
         startable=False, detachable=True, addressable=False),
    Kind("cdrom-sata", "<disk type='file' device='cdrom'><target dev='{sd}' bus='sata'/></disk>",
         detachable=True, addressable=False),
    # virt has no IDE: libvirt refuses it with a message of the QEMU capabilities, not modelled.
    Kind("cdrom-ide", "<disk type='file' device='cdrom'><target dev='{hd}' bus='ide'/></disk>",
         detachable=True, addressable=False, machines=X86),
]  # fmt: skip

CONTROLLERS = [
    *(_controller("scsi", model, hotplug=True) for model in (
        "virtio-scsi", "virtio-transitional", "virtio-non-transitional", "lsilogic", "lsisas1068", "lsisas1078",
        "vmpvscsi", "am53c974", None)),
    # libvirt 9.0.0 asks QEMU for device 'dc-390', which QEMU 7.2 calls 'dc390': defines, never starts.
    _controller("scsi", "dc390", hotplug=True, startable=False),
    *(_controller("virtio-serial", model) for model in ("virtio", "virtio-transitional", "virtio-non-transitional")),
    *(_controller("usb", model) for model in (
        "qemu-xhci", "nec-xhci", "piix3-uhci", "piix4-uhci", "ehci", "ich9-ehci1", "pci-ohci")),
    # A companion without its ich9-ehci1 master: refused at define when alone, and at start
    # ("masterbus not found") beside another USB controller.  Drawn alone, so offline only.
    _controller("usb", "ich9-uhci1", startable=False),
    _controller("sata", None),
]  # fmt: skip

OTHERS = [
    *_virtio_rows("fs-9p", "<filesystem type='mount' accessmode='passthrough' model='{model}'>"
                  "<source dir='/tmp'/><target dir='fuzz{n}'/>{address}</filesystem>"),
    Kind("fs-virtiofs", "<filesystem type='mount'><driver type='virtiofs'/><source dir='/tmp'/>"
         "<target dir='fuzz{n}'/>{address}</filesystem>", startable=False),
    *(Kind(f"sound-{model}", f"<sound model='{model}'>{{address}}</sound>")
      for model in ("ich6", "ich9", "ac97", "es1370")),
    # QEMU builds qxl for x86 only, and QEMU 11.1 (libvirt 12.8.0) no longer vmware-svga for
    # aarch64 and riscv64 ("domain configuration does not support video model 'vmvga'").
    *(Kind(f"video-{model}", f"<video><model type='{model}'/>{{address}}</video>",
           machines=X86 if model in ("qxl", "vmvga") else ALL)
      for model in ("cirrus", "vga", "qxl", "virtio", "bochs", "vmvga")),
    Kind("watchdog-i6300esb", "<watchdog model='i6300esb' action='reset'>{address}</watchdog>", hotplug=True),
    Kind("shmem-ivshmem-plain", f"<shmem name='{SHMEM_PREFIX}{{n}}'><model type='ivshmem-plain'/>"
         "<size unit='M'>4</size>{address}</shmem>", hotplug=True, detachable=True),
    *_virtio_rows("rng", "<rng model='{model}'><backend model='random'>/dev/urandom</backend>{address}</rng>",
                  hotplug=True),
    # libvirt 9.0.0 takes the (non-)transitional models only for input type='passthrough'.
    *(Kind(f"input-{kind}", f"<input type='{kind}' bus='virtio'>{{address}}</input>", hotplug=True)
      for kind in ("tablet", "keyboard", "mouse")),
    *_virtio_rows("vsock", "<vsock model='{model}'><cid auto='yes'/>{address}</vsock>", startable=False),
    Kind("hostdev-absent", "<hostdev mode='subsystem' type='pci' managed='no'><source><address domain='0x0000' "
         "bus='{host_bus}' slot='0x00' function='0x0'/></source>{address}</hostdev>",
         startable=False, hotplug=True, detachable=True),
    Kind("serial-pci", "<serial type='pty'><target type='pci-serial' port='{n}'><model name='pci-serial'/></target>"
         "{address}</serial>", detachable=True),
    Kind("iommu-virtio", "<iommu model='virtio'>{address}</iommu>", machines=IOMMU_MACHINES),
    *_virtio_rows("balloon", "<memballoon model='{model}'>{address}</memballoon>"),
    Kind("balloon-none", "<memballoon model='none'/>", addressable=False),
    Kind("usb-none", "<controller type='usb' model='none'/>", addressable=False),
]  # fmt: skip

# Every kind by name.  PCI controllers are not rows: they have models, indexes and targets of their
# own (see :class:`pytest_pcie.fuzz.example.Device`).
KINDS: dict[str, Kind] = {kind.name: kind for kind in (*NETWORK, *DISKS, *CONTROLLERS, *OTHERS)}

# The PCI controller models a user can write, and which of them take <target hotplug>.
PCI_CONTROLLER_MODELS = (
    "pci-bridge", "pcie-root-port", "pcie-switch-upstream-port", "pcie-switch-downstream-port",
    "pcie-to-pci-bridge", "dmi-to-pci-bridge", "pci-expander-bus", "pcie-expander-bus",
)  # fmt: skip
HOTPLUG_TARGET_MODELS = frozenset({"pcie-root-port", "pcie-switch-downstream-port"})
ROOT_MODELS = {"pc": "pci-root", "q35": "pcie-root", "aarch64-virt": "pcie-root", "riscv64-virt": "pcie-root"}


def disk_target(prefix: str, n: int) -> str:
    """A unique disk target for ordinal ``n``: vda..vdz, then vdaa, vdab, ..."""
    letters = ""
    n += 1
    while n:
        n, rest = divmod(n - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return prefix + letters


def render(kind: Kind, n: int, address: str) -> str:
    """The device XML of ``kind`` with ordinal ``n`` and ``address`` (already rendered, may be empty)."""
    return kind.template.format(
        address=address,
        n=n,
        mac=f"52:54:00:fa:{n // 256:02x}:{n % 256:02x}",
        vd=disk_target("vd", n),
        sd=disk_target("sd", n),
        hd="hd" + "abcd"[n % 4],  # IDE has one controller of four units; hde would ask for a second
        host_bus=f"0x{0x80 + n % 0x70:02x}",
    )
