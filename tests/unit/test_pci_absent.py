from __future__ import annotations

import pytest

from pyvmm.devices.pci_absent import (
    PCI_CONFIG_ADDRESS,
    PCI_CONFIG_DATA,
    PCI_CONFIG_ENABLE,
    PCI_CONFIG_PORT_SIZE,
    PciAbsent,
    pci_config_address,
)


def test_layout_constants() -> None:
    assert (PCI_CONFIG_ADDRESS, PCI_CONFIG_DATA, PCI_CONFIG_PORT_SIZE) == (0, 4, 8)
    assert pci_config_address(0, 0, 0, 0) == PCI_CONFIG_ENABLE
    assert pci_config_address(1, 2, 3, 0x10) == 0x8001_1310


def test_config_address_round_trip() -> None:
    pci = PciAbsent()
    assert pci.read(PCI_CONFIG_ADDRESS, 4) == 0
    pci.write(PCI_CONFIG_ADDRESS, 4, 0x8000_F8A4)
    assert pci.read(PCI_CONFIG_ADDRESS, 4) == 0x8000_F8A4
    assert pci.config_address == 0x8000_F8A4
    pci.write(PCI_CONFIG_ADDRESS, 4, 0)
    assert pci.read(PCI_CONFIG_ADDRESS, 4) == 0


def test_narrow_accesses_to_config_address_touch_their_bytes() -> None:
    pci = PciAbsent()
    pci.write(PCI_CONFIG_ADDRESS, 4, 0x1234_5678)
    assert [pci.read(offset, 1) for offset in range(4)] == [0x78, 0x56, 0x34, 0x12]
    assert pci.read(0, 2) == 0x5678
    assert pci.read(2, 2) == 0x1234
    pci.write(3, 1, 0x80)  # Linux's type-1 probe pokes 0x01 into 0xCFB the same way
    assert pci.read(0, 4) == 0x8034_5678
    pci.write(0, 2, 0xBEEF)
    assert pci.read(0, 4) == 0x8034_BEEF
    pci.write(1, 2, 0xAA55)
    assert pci.read(0, 4) == 0x80AA_55EF


@pytest.mark.parametrize("size", [1, 2, 4])
@pytest.mark.parametrize("offset", [4, 5, 6, 7])
def test_config_data_reads_all_ones(offset: int, size: int) -> None:
    pci = PciAbsent()
    pci.write(PCI_CONFIG_ADDRESS, 4, pci_config_address(0, 0, 0, 0))
    assert pci.read(offset, size) == (1 << (8 * size)) - 1


def test_vendor_id_scan_finds_no_device() -> None:
    pci = PciAbsent()
    for device in range(32):
        pci.write(PCI_CONFIG_ADDRESS, 4, pci_config_address(0, device, 0, 0))
        assert pci.read(PCI_CONFIG_DATA, 2) == 0xFFFF  # vendor ID: nobody home
        assert pci.read(PCI_CONFIG_DATA, 4) == 0xFFFF_FFFF


@pytest.mark.parametrize("size", [1, 2, 4])
def test_config_data_writes_are_ignored(size: int) -> None:
    pci = PciAbsent()
    pci.write(PCI_CONFIG_ADDRESS, 4, 0x8000_0004)
    pci.write(PCI_CONFIG_DATA, size, 0)
    pci.write(PCI_CONFIG_DATA + 2, min(size, 2), 0)
    assert pci.read(PCI_CONFIG_DATA, 4) == 0xFFFF_FFFF
    assert pci.read(PCI_CONFIG_ADDRESS, 4) == 0x8000_0004


def test_access_straddling_address_and_data() -> None:
    pci = PciAbsent()
    pci.write(2, 4, 0x0000_ABCD)  # bytes 2-3 reach the latch, 4-5 are dropped
    assert pci.read(0, 4) == 0xABCD_0000
    assert pci.read(2, 4) == 0xFFFF_ABCD
