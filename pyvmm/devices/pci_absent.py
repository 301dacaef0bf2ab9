"""PCI configuration mechanism #1 with nothing behind it: an empty PCI bus.

The PC's configuration ports (PCI Local Bus Specification 3.0, section 3.2.2.3.2,
"Configuration Mechanism #1") are CONFIG_ADDRESS at 0xCF8, a 32-bit register
holding the enable bit (31), bus, device, function and register number, and
CONFIG_DATA at 0xCFC-0xCFF, a window onto the addressed function's
configuration space. A read of a function that does not exist ends in a
master abort and returns all ones, so the vendor ID reads 0xFFFF: "no device
here" (section 6.1). This model answers every configuration read that way, so
a guest that scans the bus finds it empty instead of finding no bus at all.

The bus inserts the device at 0xCF8 with length 8; offsets 0-3 are
CONFIG_ADDRESS and 4-7 CONFIG_DATA. Simplifications:

- CONFIG_ADDRESS keeps every bit written and reads it back; the reserved
  bits are not masked (QEMU keeps them too).
- Byte and word accesses to offsets 0-3 read and write those bytes of the
  latch. On a real chipset only a 32-bit access reaches CONFIG_ADDRESS and
  narrower ones go to other registers (on PIIX and ICH, 0xCF9 is the reset
  control register); none of that is modelled.
- Writes to CONFIG_DATA are ignored: there is nothing to configure.

The latch is the device's only state and is guarded by a lock, so accesses
from several vCPU threads never tear it. As on hardware, the address-then-data
protocol itself is racy across CPUs; guests serialise it (Linux holds
pci_config_lock).
"""

from __future__ import annotations

import threading

# Port numbers (PCI Local Bus Specification 3.0, 3.2.2.3.2).
PCI_CONFIG_ADDRESS_PORT = 0xCF8
PCI_CONFIG_DATA_PORT = 0xCFC
PCI_CONFIG_PORT_SIZE = 8  # 0xCF8-0xCFF, the length the bus maps
# Offsets within the device's region.
PCI_CONFIG_ADDRESS = 0  # 0xCF8
PCI_CONFIG_DATA = 4  # 0xCFC
PCI_CONFIG_ADDRESS_SIZE = 4

# CONFIG_ADDRESS fields (3.2.2.3.2): bit 31 enables the configuration cycle,
# then bus 23:16, device 15:11, function 10:8 and dword register 7:2.
PCI_CONFIG_ENABLE = 0x8000_0000

# What a configuration read of an absent function returns (6.1: the vendor ID
# of a missing function reads 0xFFFF), and what a floating bus reads.
PCI_ABSENT_BYTE = 0xFF


def pci_config_address(bus: int, device: int, function: int, register: int) -> int:
    """The CONFIG_ADDRESS value a driver writes to reach a dword of config space."""
    return (
        PCI_CONFIG_ENABLE
        | (bus & 0xFF) << 16
        | (device & 0x1F) << 11
        | (function & 0x07) << 8
        | (register & 0xFC)
    )


def _in_address_latch(offset: int) -> bool:
    return PCI_CONFIG_ADDRESS <= offset < PCI_CONFIG_ADDRESS + PCI_CONFIG_ADDRESS_SIZE


class PciAbsent:
    """CONFIG_ADDRESS as a plain latch, CONFIG_DATA as an empty bus reading all ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._address = 0

    @property
    def config_address(self) -> int:
        """The CONFIG_ADDRESS latch, as last written."""
        with self._lock:
            return self._address

    def read(self, offset: int, size: int) -> int:
        """Bytes of the latch at offsets 0-3, all ones at 4-7 (and past the device)."""
        value = 0
        with self._lock:
            address = self._address
        for index in range(size):
            byte_offset = offset + index
            if _in_address_latch(byte_offset):
                byte = (address >> (8 * (byte_offset - PCI_CONFIG_ADDRESS))) & 0xFF
            else:
                byte = PCI_ABSENT_BYTE
            value |= byte << (8 * index)
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        """Update the latch bytes the access covers; CONFIG_DATA writes are dropped."""
        with self._lock:
            address = self._address
            for index in range(size):
                byte_offset = offset + index
                if _in_address_latch(byte_offset):
                    shift = 8 * (byte_offset - PCI_CONFIG_ADDRESS)
                    byte = (value >> (8 * index)) & 0xFF
                    address = (address & ~(0xFF << shift)) | (byte << shift)
            self._address = address
