"""The PC's I/O APIC, an Intel 82093AA, run in the VMM for KVM's split irqchip.

With KVM_CAP_SPLIT_IRQCHIP the local APICs stay in the kernel and the I/O
APIC is the VMM's (QEMU's kernel-irqchip=split, Cloud Hypervisor): this
model decodes the guest's programming of the redirection table and turns
each interrupt it sends into one MSI message, `deliver(address, data)`,
which the VMM hands to KVM_SIGNAL_MSI. A pure state machine, no KVM.

Registers (82093AA datasheet, 3.0 "Register Description"): two direct
registers in a WINDOW_SIZE-byte MMIO window at firmware.area.IO_APIC_GPA,
IOREGSEL (offset 0x00, bits 7:0 select an indirect register) and IOWIN
(offset 0x10, the selected register's 32 bits), and the indirect ones:

    0x00        IOAPICID   the ID in bits 27:24 (read/write)
    0x01        IOAPICVER  0x00170011: version 0x11 in bits 7:0, the highest
                           redirection entry (23) in bits 23:16 (read-only)
    0x02        IOAPICARB  reads the ID, as KVM's does (read-only)
    0x10+2n     IOREDTBLn  bits 31:0 of redirection entry n (n = 0..23)
    0x11+2n     IOREDTBLn  bits 63:32 of redirection entry n

Any other indirect register reads 0 and ignores writes (KVM reads all ones
there). Version 0x11 has no EOI register (that came with version 0x20):
offset 0x40 reads 0 and ignores writes, like every offset but 0x00 and 0x10.

Access sizes, as KVM's ioapic_mmio_read/ioapic_mmio_write (linux
arch/x86/kvm/ioapic.c) treat them; 4 bytes at 0x00 or 0x10 is the
architected access:

- the register is chosen by the exact offset: 0x00 or 0x10, nothing else
  (a byte at 0x11 reads 0 and is not written);
- a read of 1 or 2 bytes returns the register's low 1 or 2 bytes, one of 8
  bytes its 32 bits zero-extended, any other size 0;
- a write of 1 or 2 bytes writes the whole 32-bit register with the value
  zero-extended (a byte written to IOWIN clears bits 31:8 of the selected
  register, e.g. unmasks an entry), one of 8 bytes its low 32 bits; writes
  of any other size are ignored.

Redirection entry (82093AA, 3.2.4 "IOREDTBL"):

    7:0   vector            12  delivery status (read-only)   16     mask
    10:8  delivery mode     13  polarity (1 = active low)     63:56  destination
    11    destination mode  14  remote IRR (read-only)
          (1 = logical)     15  trigger mode (1 = level)

Reset (82093AA, 3.2.4; KVM's kvm_ioapic_reset): every entry masked (0x10000),
IRR 0, IOREGSEL 0, ID IO_APIC_ID. The guest cannot write bits 12 and 14; all
other bits store what it writes (reserved ones included, as KVM and QEMU).
Writing an entry whose trigger mode is edge clears its remote IRR, as KVM
and QEMU do for the Linux and Xen habit of simulating an EOI that way on
I/O APICs without an EOI register (Linux's __eoi_ioapic_pin). Messages go
out at once, so delivery status always reads 0.

The message an entry sends (Intel SDM vol. 3A, 11.11.1 "Message Address
Register Format", 11.11.2 "Message Data Register Format"; QEMU's
ioapic_entry_parse, hw/intc/ioapic.c):

    address = 0xFEE00000 | destination << 12 | destination mode << 2
    data    = vector | delivery mode << 8 | level << 14 | trigger mode << 15

where level (bit 14, "assert") is set for a level-triggered entry and 0 for
an edge-triggered one. Delivery modes pass through unchanged, ExtINT (7)
included: the caller decides what to do with them.

Input pins (82093AA, 2.4 "Interrupt Signals"; QEMU's ioapic_set_irq, KVM's
ioapic_set_irq): `set_irq(pin, high)` takes `high` as "asserted" whatever the
entry's polarity bit says, as KVM and QEMU do for the PC's ISA and PCI
wiring (the firmware tables tell the guest how the pins are wired).

- Edge-triggered: a rising edge sets the pin's IRR bit; an unmasked entry
  sends its message and clears the bit. An edge on a masked pin is ignored,
  as the datasheet says (3.2.4, bit 16: "Edge-sensitive interrupts signaled
  on a masked interrupt pin are ignored (i.e., not delivered or held
  pending)") and QEMU does; with LATCH_MASKED_EDGES set, the IRR bit stays
  set instead and the message goes when the guest unmasks the entry.
- Level-triggered: the IRR bit follows the asserted pin. While it is
  asserted, the entry unmasked and its remote IRR 0, the entry sends its
  message and sets remote IRR; unmasking an entry whose pin is asserted
  sends it. `eoi(vector)`, the local APIC's EOI of a level-triggered vector
  (KVM_EXIT_IOAPIC_EOI; KVM's kvm_ioapic_update_eoi), clears remote IRR of
  every level-triggered entry with that vector and re-sends those whose pin
  is still asserted and which are unmasked.

`on_routes_changed()` is called after every write to a redirection entry
(either half), before any message the write causes is sent: the VMM then
reprograms KVM's MSI routes (GSI n = pin n, QEMU's ioapic_update_kvm_routes)
so that the in-kernel local APICs know which vectors are level-triggered
and exit on their EOI. No other write calls it.

Not modelled: the 82093AA's APIC bus and arbitration (messages are MSIs),
the extended destination ID in bits 55:49, interrupt remapping, and the
interrupt-storm delay KVM and QEMU put on re-delivery at EOI. Not thread
safe: the caller serializes every call (bus accesses, `set_irq`, `eoi`),
and the callbacks run inside them, after the state they report is updated.
"""

from __future__ import annotations

# The PC's I/O APIC as KVM's in-kernel one is (linux arch/x86/kvm/ioapic.h), so that
# a guest finds the same device with either irqchip: at its power-on address (82093AA
# datasheet, 3.0 "Register Description"), ID 0 at reset, version 0x11, 24 pins.
IO_APIC_GPA = 0xFEC0_0000
IO_APIC_ID = 0
IO_APIC_VERSION = 0x11
IO_APIC_PINS = 24

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from collections.abc import Callable

WINDOW_SIZE = 0x100  # bytes of MMIO at IO_APIC_GPA the model decodes

# Direct registers (offsets in the window).
IOREGSEL = 0x00
IOWIN = 0x10
# Indirect registers (IOREGSEL values).
REG_ID = 0x00
REG_VERSION = 0x01
REG_ARBITRATION = 0x02
REG_REDIRECTION = 0x10  # entry n: 0x10 + 2n (bits 31:0), 0x11 + 2n (bits 63:32)

ID_SHIFT = 24
ID_MASK = 0xF  # IOAPICID bits 27:24
VERSION_REGISTER = (IO_APIC_PINS - 1) << 16 | IO_APIC_VERSION  # 0x00170011

# Redirection entry fields.
VECTOR_MASK = 0xFF
DELIVERY_MODE_SHIFT = 8
DELIVERY_MODE_MASK = 0x7
DEST_MODE_LOGICAL = 1 << 11
DELIVERY_STATUS = 1 << 12
POLARITY_LOW = 1 << 13
REMOTE_IRR = 1 << 14
TRIGGER_LEVEL = 1 << 15
MASKED = 1 << 16
DEST_SHIFT = 56
READ_ONLY_BITS = DELIVERY_STATUS | REMOTE_IRR
RESET_ENTRY = MASKED

# Delivery modes (bits 10:8; the same codes in MSI data bits 10:8).
FIXED, LOWEST_PRIORITY, SMI, NMI, INIT, EXTINT = 0, 1, 2, 4, 5, 7

# MSI message (SDM vol. 3A, 11.11.1 and 11.11.2).
MSI_ADDRESS_BASE = 0xFEE0_0000
MSI_DEST_SHIFT = 12
MSI_DEST_MODE_LOGICAL = 1 << 2
MSI_DATA_ASSERT = 1 << 14
MSI_DATA_TRIGGER_LEVEL = 1 << 15

_LOW_DWORD = 0xFFFF_FFFF


def _check_pin(pin: int) -> None:
    if not 0 <= pin < IO_APIC_PINS:
        raise ValueError(f"I/O APIC pin {pin} out of range 0-{IO_APIC_PINS - 1}")


class IoApic:
    """One 82093AA-style I/O APIC (version 0x11, 24 pins) and its MMIO window.

    `deliver(address, data)` sends one MSI: a 32-bit address in
    0xFEE00000-0xFEEFFFFF and 32-bit data (SDM vol. 3A, 11.11).
    `on_routes_changed()`, optional, follows every redirection-entry write.
    See the module docstring for the registers, access sizes and pin rules.
    """

    # The datasheet drops edges on masked pins; True keeps them pending until unmask.
    LATCH_MASKED_EDGES = False

    __slots__ = ("_asserted", "_deliver", "_entries", "_id", "_ioregsel", "_irr", "_on_routes")

    def __init__(
        self,
        deliver: Callable[[int, int], None],
        on_routes_changed: Callable[[], None] | None = None,
    ) -> None:
        self._deliver = deliver
        self._on_routes = on_routes_changed
        self._entries = [RESET_ENTRY] * IO_APIC_PINS
        self._id = IO_APIC_ID
        self._ioregsel = 0
        self._irr = 0  # bit n: pin n's pending request (82093AA's IRR)
        self._asserted = 0  # bit n: pin n's input level as last set

    # -- the MMIO window ------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        """The guest's `size`-byte read at `offset` in the window (little-endian, unsigned)."""
        if offset == IOREGSEL:
            value = self._ioregsel
        elif offset == IOWIN:
            value = self._read_indirect()
        else:
            return 0
        if size in (1, 2):
            return value & ((1 << (8 * size)) - 1)
        if size in (4, 8):
            return value
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        """The guest's `size`-byte write of `value` at `offset` in the window."""
        if size in (4, 8):
            value &= _LOW_DWORD
        elif size in (1, 2):
            value &= (1 << (8 * size)) - 1
        else:
            return
        if offset == IOREGSEL:
            self._ioregsel = value & 0xFF
        elif offset == IOWIN:
            self._write_indirect(value)

    def _read_indirect(self) -> int:
        select = self._ioregsel
        if select == REG_VERSION:
            return VERSION_REGISTER
        if select in (REG_ID, REG_ARBITRATION):
            return self._id << ID_SHIFT
        pin = (select - REG_REDIRECTION) >> 1
        if not 0 <= pin < IO_APIC_PINS:
            return 0
        entry = self._entries[pin]
        return entry >> 32 if select & 1 else entry & _LOW_DWORD

    def _write_indirect(self, value: int) -> None:
        select = self._ioregsel
        if select == REG_ID:
            self._id = (value >> ID_SHIFT) & ID_MASK
            return
        pin = (select - REG_REDIRECTION) >> 1
        if not 0 <= pin < IO_APIC_PINS:
            return  # IOAPICVER, IOAPICARB and unknown registers are read-only
        old = self._entries[pin]
        shift = 32 if select & 1 else 0  # the high or the low dword
        new = (old & ~(_LOW_DWORD << shift)) | value << shift
        new = (new & ~READ_ONLY_BITS) | (old & READ_ONLY_BITS)
        bit = 1 << pin
        if new & TRIGGER_LEVEL:
            # Level: the request follows the input.
            self._irr = (self._irr & ~bit) | (self._asserted & bit)
        else:
            new &= ~REMOTE_IRR
            if old & TRIGGER_LEVEL:
                self._irr &= ~bit  # a level request is no edge
        self._entries[pin] = new
        if self._on_routes is not None:
            self._on_routes()
        self._service(pin)

    # -- the interrupt side ---------------------------------------------------

    def set_irq(self, pin: int, high: bool) -> None:
        """Set input pin `pin` (0-23) to asserted (`high`) or not; polarity is not applied.

        ValueError for a pin outside 0-23. May call `deliver` (module docstring,
        "Input pins").
        """
        _check_pin(pin)
        bit = 1 << pin
        was_high = self._asserted & bit
        if high:
            self._asserted |= bit
        else:
            self._asserted &= ~bit
        entry = self._entries[pin]
        if entry & TRIGGER_LEVEL:
            if high:
                self._irr |= bit
                self._service(pin)
            else:
                self._irr &= ~bit
        elif high and not was_high and (not entry & MASKED or self.LATCH_MASKED_EDGES):
            self._irr |= bit
            self._service(pin)

    def eoi(self, vector: int) -> None:
        """The local APIC's EOI of level-triggered `vector` (0-255; KVM_EXIT_IOAPIC_EOI).

        Clears remote IRR of every level-triggered entry with that vector and
        re-sends those still asserted and unmasked (KVM's kvm_ioapic_update_eoi).
        """
        for pin in range(IO_APIC_PINS):
            entry = self._entries[pin]
            if (entry & VECTOR_MASK) == vector and entry & TRIGGER_LEVEL and entry & REMOTE_IRR:
                self._entries[pin] = entry & ~REMOTE_IRR
                self._service(pin)

    def _service(self, pin: int) -> None:
        """Send pin's message if its entry lets a pending request through."""
        bit = 1 << pin
        entry = self._entries[pin]
        if not self._irr & bit or entry & MASKED:
            return
        if entry & TRIGGER_LEVEL:
            if entry & REMOTE_IRR:
                return
            self._entries[pin] = entry | REMOTE_IRR
        else:
            self._irr &= ~bit
        address, data = self.msi_message(pin)
        self._deliver(address, data)

    # -- inspection -----------------------------------------------------------

    def msi_message(self, pin: int) -> tuple[int, int]:
        """(address, data), two 32-bit ints: the MSI pin's entry would send now (SDM 11.11).

        Whether the entry is masked does not matter. ValueError outside 0-23.
        """
        _check_pin(pin)
        entry = self._entries[pin]
        address = MSI_ADDRESS_BASE | (entry >> DEST_SHIFT) << MSI_DEST_SHIFT
        if entry & DEST_MODE_LOGICAL:
            address |= MSI_DEST_MODE_LOGICAL
        data = (entry & VECTOR_MASK) | (
            ((entry >> DELIVERY_MODE_SHIFT) & DELIVERY_MODE_MASK) << DELIVERY_MODE_SHIFT
        )
        if entry & TRIGGER_LEVEL:
            data |= MSI_DATA_TRIGGER_LEVEL | MSI_DATA_ASSERT
        return address, data

    def entry(self, pin: int) -> int:
        """Redirection entry `pin` (0-23), 64 bits as IOREDTBL (82093AA 3.2.4).

        ValueError outside 0-23.
        """
        _check_pin(pin)
        return self._entries[pin]

    def state(self) -> dict[str, int | list[int]]:
        """A snapshot for a monitor's "info ioapic".

        {"id": 4-bit ID, "version": 0x11, "ioregsel": 8 bits, "irr": 24-bit
        pending-request mask (bit n = pin n), "entries": 24 64-bit entries}.
        """
        return {
            "id": self._id,
            "version": IO_APIC_VERSION,
            "ioregsel": self._ioregsel,
            "irr": self._irr,
            "entries": list(self._entries),
        }
