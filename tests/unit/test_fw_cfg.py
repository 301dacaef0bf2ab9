from __future__ import annotations

import struct
import threading

import pytest

from pyvmm.devices.fw_cfg import (
    FW_CFG_ARCH_LOCAL,
    FW_CFG_DATA_OFFSET,
    FW_CFG_FILE_DIR,
    FW_CFG_FILE_FIRST,
    FW_CFG_ID,
    FW_CFG_MAX_CPUS,
    FW_CFG_NB_CPUS,
    FW_CFG_PORT_SIZE,
    FW_CFG_RAM_SIZE,
    FW_CFG_SEL_OFFSET,
    FW_CFG_SIGNATURE,
    FW_CFG_WRITE_CHANNEL,
    FwCfg,
)

RAM_SIZE = 0x1_2345_6000
SEL = FW_CFG_SEL_OFFSET
DATA = FW_CFG_DATA_OFFSET


def make(files: dict[str, bytes] | None = None) -> FwCfg:
    return FwCfg(ram_size=RAM_SIZE, nb_cpus=2, max_cpus=4, files=files or {})


def select(device: FwCfg, key: int) -> None:
    """What a driver does: `outw key, 0x510`."""
    device.write(SEL, 2, key)


def read_bytes(device: FwCfg, count: int) -> bytes:
    """What a driver does: `count` times `inb 0x511`."""
    return bytes(device.read(DATA, 1) for _ in range(count))


def read_item(device: FwCfg, key: int, count: int) -> bytes:
    select(device, key)
    return read_bytes(device, count)


def test_ports() -> None:
    assert (SEL, DATA, FW_CFG_PORT_SIZE) == (0, 1, 2)


def test_signature_byte_by_byte() -> None:
    device = make()
    select(device, FW_CFG_SIGNATURE)
    assert [device.read(DATA, 1) for _ in range(4)] == [ord(c) for c in "QEMU"]
    assert device.read(DATA, 1) == 0  # past the end


def test_id_reports_the_traditional_interface_only() -> None:
    device = make()
    assert int.from_bytes(read_item(device, FW_CFG_ID, 4), "little") == 1


def test_numbers_decode() -> None:
    device = make()
    assert int.from_bytes(read_item(device, FW_CFG_RAM_SIZE, 8), "little") == RAM_SIZE
    assert int.from_bytes(read_item(device, FW_CFG_NB_CPUS, 2), "little") == 2
    assert int.from_bytes(read_item(device, FW_CFG_MAX_CPUS, 2), "little") == 4


def test_wide_reads_return_consecutive_bytes_little_endian() -> None:
    device = make()
    select(device, FW_CFG_RAM_SIZE)
    assert device.read(DATA, 4) == RAM_SIZE & 0xFFFF_FFFF
    assert device.read(DATA, 2) == (RAM_SIZE >> 32) & 0xFFFF
    assert device.read(DATA, 4) == 0  # 2 bytes left, both 0, then past the end
    select(device, FW_CFG_SIGNATURE)
    assert device.read(DATA, 4).to_bytes(4, "little") == b"QEMU"
    select(device, FW_CFG_SIGNATURE)
    assert device.read(DATA, 2) == int.from_bytes(b"QE", "little")
    assert device.read(DATA, 4) == int.from_bytes(b"MU", "little")  # short: high bytes 0
    assert device.read(DATA, 4) == 0


def test_empty_file_directory() -> None:
    device = make()
    assert device.file_dir_bytes() == b"\0\0\0\0"
    assert read_item(device, FW_CFG_FILE_DIR, 8) == b"\0" * 8


def test_file_directory_layout_is_big_endian_and_byte_exact() -> None:
    device = make({"etc/first": b"abc"})
    key = device.add_file("opt/org.example/second", bytes(range(256)) * 2)
    assert key == FW_CFG_FILE_FIRST + 1
    expected = (
        b"\x00\x00\x00\x02"  # count
        + b"\x00\x00\x00\x03"  # size 3
        + b"\x00\x20"  # select 0x0020
        + b"\x00\x00"  # reserved
        + b"etc/first".ljust(56, b"\0")
        + b"\x00\x00\x02\x00"  # size 512
        + b"\x00\x21"  # select 0x0021
        + b"\x00\x00"
        + b"opt/org.example/second".ljust(56, b"\0")
    )
    assert len(expected) == 4 + 2 * 64
    assert device.file_dir_bytes() == expected
    assert read_item(device, FW_CFG_FILE_DIR, len(expected) + 4) == expected + b"\0" * 4


def test_read_a_file_found_through_the_directory() -> None:
    payload = b"hello, firmware\n"
    device = make({"etc/a": b"x", "opt/test/hello": payload})
    select(device, FW_CFG_FILE_DIR)
    (count,) = struct.unpack(">I", read_bytes(device, 4))
    entries = {}
    for _ in range(count):
        size, key, _reserved, name = struct.unpack(">IHH56s", read_bytes(device, 64))
        entries[name.rstrip(b"\0").decode()] = (size, key)
    size, key = entries["opt/test/hello"]
    assert size == len(payload)
    assert read_item(device, key, size) == payload
    assert read_bytes(device, 3) == b"\0\0\0"


def test_auto_increment_and_reset_on_reselect() -> None:
    device = make({"opt/test/seq": b"0123456789"})
    select(device, FW_CFG_FILE_FIRST)
    assert read_bytes(device, 3) == b"012"
    assert read_bytes(device, 3) == b"345"
    select(device, FW_CFG_FILE_FIRST)
    assert read_bytes(device, 4) == b"0123"
    select(device, FW_CFG_SIGNATURE)
    assert read_bytes(device, 2) == b"QE"
    select(device, FW_CFG_FILE_FIRST)
    assert read_bytes(device, 12) == b"0123456789\0\0"


def test_unknown_keys_read_zero() -> None:
    device = make()
    for key in (0x0002, 0x0009, FW_CFG_FILE_FIRST, 0x3FFF, FW_CFG_ARCH_LOCAL | FW_CFG_SIGNATURE):
        select(device, key)
        assert device.selector == key
        assert read_bytes(device, 4) == b"\0\0\0\0"
        assert device.read(DATA, 4) == 0


def test_write_channel_bit_reads_the_same_item() -> None:
    device = make()
    assert read_item(device, FW_CFG_WRITE_CHANNEL | FW_CFG_SIGNATURE, 4) == b"QEMU"


def test_reads_past_the_end_stay_zero() -> None:
    device = make({"opt/test/one": b"\x7f"})
    select(device, FW_CFG_FILE_FIRST)
    assert device.read(DATA, 1) == 0x7F
    for size in (1, 2, 4, 1):
        assert device.read(DATA, size) == 0


def test_selector_widths() -> None:
    device = make()
    device.write(SEL, 2, FW_CFG_ID)  # 16-bit: the way drivers select
    assert device.selector == FW_CFG_ID
    device.write(SEL, 2, 0xAB00 | FW_CFG_RAM_SIZE)  # all 16 bits count
    assert device.selector == 0xAB03
    assert read_bytes(device, 1) == b"\0"  # arch-local key: empty
    device.write(SEL, 1, FW_CFG_SIGNATURE)  # 8-bit at the selector: zero-extended
    assert device.selector == FW_CFG_SIGNATURE
    assert read_bytes(device, 4) == b"QEMU"


def test_data_port_writes_are_ignored() -> None:
    device = make()
    select(device, FW_CFG_SIGNATURE)
    assert read_bytes(device, 1) == b"Q"
    device.write(DATA, 1, 0x00)  # data write: no effect on item, offset or selector
    device.write(SEL, 4, 0x0001)  # no 32-bit selector
    assert device.selector == FW_CFG_SIGNATURE
    assert read_bytes(device, 3) == b"EMU"


def test_reads_at_the_selector_offset_read_data_like_qemu() -> None:
    device = make()
    select(device, FW_CFG_SIGNATURE)
    assert device.read(SEL, 1) == ord("Q")
    assert device.read(DATA, 1) == ord("E")


@pytest.mark.parametrize(
    "name",
    ["", "a\0b", "x" * 56, "é" * 28],
)
def test_bad_file_names(name: str) -> None:
    device = make()
    with pytest.raises(ValueError):
        device.add_file(name, b"data")


def test_file_name_limits_and_uniqueness() -> None:
    device = make()
    longest = "n" * 55
    assert device.add_file(longest, b"") == FW_CFG_FILE_FIRST
    entry = device.file_dir_bytes()[4:]
    assert entry[8:] == longest.encode() + b"\0"
    with pytest.raises(ValueError):
        device.add_file(longest, b"again")
    with pytest.raises(ValueError):
        make({"a": b"1"}).add_file("a", b"2")


@pytest.mark.parametrize(
    ("ram_size", "nb_cpus", "max_cpus"),
    [(-1, 1, 1), (1 << 64, 1, 1), (0, 0x1_0000, 0x1_0000), (0, 2, 1), (0, -1, 1)],
)
def test_bad_machine_numbers(ram_size: int, nb_cpus: int, max_cpus: int) -> None:
    with pytest.raises(ValueError):
        FwCfg(ram_size, nb_cpus, max_cpus)


def test_files_are_optional() -> None:
    device = FwCfg(1 << 20, 1, 1)
    assert device.file_dir_bytes() == b"\0\0\0\0"


def test_concurrent_readers_with_external_lock_are_consistent() -> None:
    # The select-then-read protocol spans several exits and is racy across
    # vCPUs, as on QEMU; a guest serialises it (Linux's driver holds a mutex).
    # With that done, every reader sees its whole item.
    payloads = {f"opt/test/{i}": bytes([i]) * 100 + bytes(range(i)) for i in range(8)}
    device = make(payloads)
    keys = {name: FW_CFG_FILE_FIRST + i for i, name in enumerate(payloads)}
    guest_lock = threading.Lock()
    errors: list[str] = []

    def reader(name: str) -> None:
        for _ in range(50):
            with guest_lock:
                data = read_item(device, keys[name], len(payloads[name]))
                signature = read_item(device, FW_CFG_SIGNATURE, 4)
            if data != payloads[name] or signature != b"QEMU":
                errors.append(name)

    threads = [threading.Thread(target=reader, args=(name,)) for name in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_unserialised_readers_never_tear_or_corrupt_the_device() -> None:
    # Without a guest-side lock the readers disturb each other's offsets, but
    # each access is atomic: a 4-byte read comes whole from one item (all 0xAA,
    # all 0xBB or past the end), nothing raises, and the device still works.
    device = make({"opt/test/a": b"\xaa" * 400, "opt/test/b": b"\xbb" * 400})
    allowed = {0, 0xAAAA_AAAA, 0xBBBB_BBBB}
    seen: set[int] = set()
    failures: list[BaseException] = []

    def reader(key: int) -> None:
        try:
            for _ in range(200):
                select(device, key)
                seen.update(device.read(DATA, 4) for _ in range(20))
        except BaseException as exc:  # pragma: no cover - only on failure
            failures.append(exc)

    threads = [threading.Thread(target=reader, args=(FW_CFG_FILE_FIRST + i % 2,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert seen <= allowed
    assert read_item(device, FW_CFG_SIGNATURE, 4) == b"QEMU"
    assert read_item(device, FW_CFG_FILE_FIRST + 1, 4) == b"\xbb" * 4
