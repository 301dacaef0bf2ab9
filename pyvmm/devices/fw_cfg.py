"""QEMU's firmware configuration device (fw_cfg), legacy I/O port interface.

The guest writes a 16-bit key to the selector register and then reads the
chosen item's bytes one at a time from the data register. Keys, items and the
file directory layout follow QEMU's docs/specs/fw_cfg.rst ("QEMU Firmware
Configuration (fw_cfg) Device"); the key names are those of Linux's
include/uapi/linux/qemu_fw_cfg.h, which guest drivers are written against.

On x86 the selector is port 0x510 and the data register port 0x511, and QEMU
exposes both as one 2-byte region (the spec: the two "can not be mapped
separately"). The bus hands this device offsets 0 and 1 of that region:

- A 16-bit write anywhere in the region selects an item, as QEMU's combined
  port does. An 8-bit write to offset 0 also selects (the byte, zero-extended);
  QEMU treats every 8-bit write as a data write, which real guests never rely
  on since they select with a 16-bit `outw`. An 8-bit write to offset 1 is a
  data write and is ignored, as in QEMU since v2.4 (writes exist only through
  the DMA interface, which this model does not offer). Wider writes are
  ignored.
- Any read returns the next bytes of the selected item and advances the data
  offset by the access width. The spec gives the I/O data port a width of
  8 bits; a wider read returns the next `size` bytes in increasing order,
  assembled little-endian as an `inw`/`inl` would see them, like the
  "substring, similar to memcpy()" of the spec's wide MMIO data register.
  QEMU's combined port also reads data at offset 0, and so does this one.
- Past the end of an item, and for a key with no item, reads return 0.

Only the traditional interface exists: FW_CFG_ID reports no DMA, and port
0x514 (the DMA address) is not part of the device.

Concurrency: every access holds the device's lock, so the selector, the data
offset and the item table are never torn, and a multi-byte read returns
consecutive bytes of one item. The protocol itself (select, then read) spans
several exits and is racy across vCPUs, exactly as on QEMU: one vCPU's select
resets another's read. Guests serialise the sequence themselves (Linux's
qemu_fw_cfg driver holds a mutex from the select to the last read).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Mapping
from types import MappingProxyType

# Port numbers on x86 (fw_cfg.rst, "Register Locations"). The bus inserts the
# device once at FW_CFG_PORT_SEL with length FW_CFG_PORT_SIZE.
FW_CFG_PORT_SEL = 0x510
FW_CFG_PORT_DATA = 0x511
FW_CFG_PORT_SIZE = 2
FW_CFG_SEL_OFFSET = 0  # offsets within the device's region
FW_CFG_DATA_OFFSET = 1
# The selector register is 16 bits wide (fw_cfg.rst, "Selector (Control) Register").
FW_CFG_CTL_SIZE = 2

# Selector keys of the well-known items (fw_cfg.rst, "Firmware Configuration
# Items"; the values of qemu_fw_cfg.h).
FW_CFG_SIGNATURE = 0x0000
FW_CFG_ID = 0x0001
FW_CFG_RAM_SIZE = 0x0003
FW_CFG_NB_CPUS = 0x0005
FW_CFG_MAX_CPUS = 0x000F
FW_CFG_FILE_DIR = 0x0019
FW_CFG_FILE_FIRST = 0x0020  # the first key given to a file item

# Selector bits (fw_cfg.rst, "Selector (Control) Register" and "Ranges"). Bit 14
# asks for write access, which is ignored: the item read is the same. Bit 15
# selects the architecture-specific table, which holds nothing here.
FW_CFG_WRITE_CHANNEL = 0x4000
FW_CFG_ARCH_LOCAL = 0x8000
# Generic keys run 0x0000-0x3fff, so files may use 0x0020-0x3fff.
FW_CFG_MAX_ENTRY = 0x4000

# "QEMU", read from FW_CFG_SIGNATURE (fw_cfg.rst, "Signature").
FW_CFG_SIG = b"QEMU"
# FW_CFG_ID feature bits (fw_cfg.rst, "Revision / feature bitmap"), a
# little-endian u32. Bit 0, the traditional interface, is always set.
FW_CFG_VERSION = 0x01
FW_CFG_VERSION_DMA = 0x02

# struct FWCfgFiles / FWCfgFile (fw_cfg.rst, "File Directory"): a big-endian
# u32 count, then 64-byte entries {u32 size, u16 select, u16 reserved,
# char name[56]}, all big-endian, the name NUL-terminated.
FW_CFG_MAX_FILE_PATH = 56
FW_CFG_FILES_HEADER = struct.Struct(">I")
FW_CFG_FILE_ENTRY = struct.Struct(f">IHH{FW_CFG_MAX_FILE_PATH}s")

_U16_MAX = 0xFFFF
_U32_MAX = 0xFFFF_FFFF
_U64_MAX = 0xFFFF_FFFF_FFFF_FFFF

_NO_FILES: Mapping[str, bytes] = MappingProxyType({})


class FwCfg:
    """The fw_cfg selector and data ports, with the items a small x86 VM needs."""

    def __init__(
        self,
        ram_size: int,
        nb_cpus: int,
        max_cpus: int,
        files: Mapping[str, bytes] = _NO_FILES,
    ) -> None:
        _check_range("ram_size", ram_size, _U64_MAX)
        _check_range("nb_cpus", nb_cpus, _U16_MAX)
        _check_range("max_cpus", max_cpus, _U16_MAX)
        if nb_cpus > max_cpus:
            raise ValueError(f"nb_cpus ({nb_cpus}) exceeds max_cpus ({max_cpus})")
        self._lock = threading.Lock()
        # Items by key, as the guest reads them. File items also appear in
        # _files, in key order, to build the directory.
        self._items: dict[int, bytes] = {
            FW_CFG_SIGNATURE: FW_CFG_SIG,
            FW_CFG_ID: FW_CFG_VERSION.to_bytes(4, "little"),
            FW_CFG_RAM_SIZE: ram_size.to_bytes(8, "little"),
            FW_CFG_NB_CPUS: nb_cpus.to_bytes(2, "little"),
            FW_CFG_MAX_CPUS: max_cpus.to_bytes(2, "little"),
        }
        self._files: list[tuple[bytes, int]] = []  # (encoded name, key)
        self._items[FW_CFG_FILE_DIR] = self._build_file_dir()
        # The selected item, held by reference: a read in progress keeps the
        # bytes it selected even if add_file replaces the directory meanwhile.
        self._selector = FW_CFG_SIGNATURE
        self._current = self._items[FW_CFG_SIGNATURE]
        self._offset = 0
        for name, data in files.items():
            self.add_file(name, data)

    # -- the host side -----------------------------------------------------

    def add_file(self, name: str, data: bytes) -> int:
        """Add a file item and list it in the directory; returns its selector key.

        Keys are handed out from FW_CFG_FILE_FIRST in the order files are
        added. Call this before the guest runs: a guest that already read the
        directory does not see later files.
        """
        encoded = _encode_file_name(name)
        payload = bytes(data)
        if len(payload) > _U32_MAX:
            raise ValueError(f"fw_cfg file {name!r} is too large: {len(payload)} bytes")
        with self._lock:
            if any(existing == encoded for existing, _ in self._files):
                raise ValueError(f"fw_cfg file {name!r} already exists")
            key = FW_CFG_FILE_FIRST + len(self._files)
            if key >= FW_CFG_MAX_ENTRY:
                raise ValueError(f"no fw_cfg selector left for file {name!r}")
            self._files.append((encoded, key))
            self._items[key] = payload
            self._items[FW_CFG_FILE_DIR] = self._build_file_dir()
            return key

    def file_dir_bytes(self) -> bytes:
        """The FW_CFG_FILE_DIR item, as the guest reads it."""
        with self._lock:
            return self._items[FW_CFG_FILE_DIR]

    @property
    def selector(self) -> int:
        """The last key the guest selected (FW_CFG_SIGNATURE at reset)."""
        with self._lock:
            return self._selector

    # -- the bus interface -------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        """The next `size` bytes of the selected item, little-endian, 0 past its end."""
        with self._lock:
            start = self._offset
            chunk = self._current[start : start + size]
            self._offset = start + len(chunk)
        return int.from_bytes(chunk, "little")  # missing high bytes read as 0

    def write(self, offset: int, size: int, value: int) -> None:
        """Select an item (16-bit write, or 8-bit at offset 0); other writes are ignored."""
        if size == FW_CFG_CTL_SIZE or (size == 1 and offset == FW_CFG_SEL_OFFSET):
            self._select(value & _U16_MAX)
        # An 8-bit write to the data register, or a write of another width:
        # ignored, as QEMU does without the DMA interface.

    # -- internals ---------------------------------------------------------

    def _select(self, key: int) -> None:
        # The write-channel bit changes nothing for reads; arch-local keys
        # (bit 15) name an empty table, so they read 0 like unknown keys.
        with self._lock:
            if key & FW_CFG_ARCH_LOCAL:
                item = b""
            else:
                item = self._items.get(key & ~FW_CFG_WRITE_CHANNEL, b"")
            self._selector = key
            self._current = item
            self._offset = 0

    def _build_file_dir(self) -> bytes:
        parts = [FW_CFG_FILES_HEADER.pack(len(self._files))]
        for encoded, key in self._files:
            size = len(self._items[key])
            parts.append(FW_CFG_FILE_ENTRY.pack(size, key, 0, encoded))  # pack pads with NULs
        return b"".join(parts)


def _check_range(what: str, value: int, maximum: int) -> None:
    if not 0 <= value <= maximum:
        raise ValueError(f"{what} must be in 0..{maximum:#x}, not {value}")


def _encode_file_name(name: str) -> bytes:
    """The name as stored in FWCfgFile.name: at most 55 bytes, then a NUL."""
    encoded = name.encode("utf-8")
    if not encoded:
        raise ValueError("fw_cfg file name is empty")
    if b"\0" in encoded:
        raise ValueError(f"fw_cfg file name {name!r} contains a NUL")
    if len(encoded) >= FW_CFG_MAX_FILE_PATH:
        raise ValueError(
            f"fw_cfg file name {name!r} is {len(encoded)} bytes;"
            f" at most {FW_CFG_MAX_FILE_PATH - 1} fit"
        )
    return encoded
