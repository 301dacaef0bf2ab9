"""benchmarks/kernels/kernels.bin: what its sources build, and what its kernels compute.

The kernels run natively here (in this process, no /dev/kvm) and are checked
against Python reimplementations of their definitions in kernels.c.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from benchmarks.suite_kernels import calibrate, round_down
from pyvmm.demos.kernels import (
    KERNELS,
    TABLE_ENTRY,
    TABLE_HEADER,
    TABLE_OFFSET,
    KernelImage,
    KernelRunError,
    ResultPort,
    buffer_size,
    guest_ram_size,
    load_kernel_image,
    run_native,
)

KERNELS_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "kernels"
KERNELS_BIN = KERNELS_DIR / "kernels.bin"  # the committed image, beside its sources
TOOLS = ("make", "gcc", "as", "ld", "objcopy")
needs_toolchain = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in TOOLS), reason="make/GCC/GNU binutils not installed"
)

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3


def build(out: Path, *variables: str) -> bytes:
    subprocess.run(
        ["make", "-s", "-C", str(KERNELS_DIR), f"OUT={out}", *variables],
        check=True,
        capture_output=True,
    )
    assert sorted(path.name for path in out.iterdir()) == ["kernels.bin"]
    return (out / "kernels.bin").read_bytes()


@needs_toolchain
def test_rebuild_gives_the_committed_bytes(tmp_path: Path) -> None:
    assert build(tmp_path) == KERNELS_BIN.read_bytes(), (
        "benchmarks/kernels/kernels.bin differs from what its sources build: "
        "run make -C benchmarks/kernels"
    )


@needs_toolchain
def test_image_does_not_depend_on_its_link_address(tmp_path: Path) -> None:
    # Position-independent: the same bytes run at 1 MiB in a guest and anywhere on the host.
    assert build(tmp_path, "LOAD_GPA=0x40000000") == KERNELS_BIN.read_bytes()


def test_table_lists_every_kernel_inside_the_image() -> None:
    image = load_kernel_image()
    assert list(image.offsets) == list(KERNELS)
    table_end = TABLE_OFFSET + TABLE_HEADER.size + len(KERNELS) * TABLE_ENTRY.size
    for name, offset in image.offsets.items():
        assert table_end <= offset < len(image.data), name
    assert [image.index(name) for name in KERNELS] == list(range(len(KERNELS)))
    with pytest.raises(KernelRunError, match="no kernel 'nope'"):
        image.index("nope")


def test_table_parser_rejects_bad_images() -> None:
    data = load_kernel_image().data
    with pytest.raises(KernelRunError, match="no table"):
        KernelImage.parse(data[:TABLE_OFFSET])
    with pytest.raises(KernelRunError, match="no version 1 table"):
        KernelImage.parse(data[:TABLE_OFFSET] + b"X" + data[TABLE_OFFSET + 1 :])
    with pytest.raises(KernelRunError, match="past the end"):
        KernelImage.parse(data[: TABLE_OFFSET + TABLE_HEADER.size + 4])
    bad_offset = bytearray(data)
    struct.pack_into("<Q", bad_offset, TABLE_OFFSET + TABLE_HEADER.size + 16, len(data))
    with pytest.raises(KernelRunError, match="past the end"):
        KernelImage.parse(bytes(bad_offset))


def python_int_loop(n: int) -> int:
    x = GOLDEN ^ n
    for i in range(n):
        x ^= (x << 13) & MASK
        x ^= x >> 7
        x ^= (x << 17) & MASK
        x = (x + i) & MASK
    return x


def python_mem_checksum(n: int) -> int:
    words = (((w * GOLDEN) & MASK) ^ (w >> 3) for w in range(n // 8 + 1))
    data = b"".join(word.to_bytes(8, "little") for word in words)[:n]
    h = FNV_OFFSET ^ n
    for start in range(0, n, 8):
        h = ((h ^ int.from_bytes(data[start : start + 8], "little")) * FNV_PRIME) & MASK
    return h


def python_prime_count(n: int) -> int:
    return sum(1 for k in range(2, n + 1) if all(k % d for d in range(2, int(k**0.5) + 1)))


@pytest.mark.parametrize("n", [0, 1, 2, 3, 1000, 4321])
def test_int_loop_matches_its_definition(n: int) -> None:
    assert run_native("int_loop", n).result == python_int_loop(n)


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 1003, 4096, 8191, 65536 + 5])
def test_mem_checksum_matches_its_definition(n: int) -> None:
    assert run_native("mem_checksum", n).result == python_mem_checksum(n)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 100, 101, 1000, 7919])
def test_sieve_counts_primes(n: int) -> None:
    assert run_native("sieve", n).result == python_prime_count(n)


def test_sieve_known_answers() -> None:
    assert run_native("sieve", 100).result == 25
    assert run_native("sieve", 1_000_000).result == 78498


def test_cpuid_loop_returns_its_count() -> None:
    for n in (0, 1, 50):
        assert run_native("cpuid_loop", n).result == n


def test_native_run_is_timed() -> None:
    run = run_native("int_loop", 10_000)
    assert run.seconds > 0
    assert run.exits is None


def test_buffers_and_guest_ram_fit_the_kernel() -> None:
    assert buffer_size("sieve", 100) == 101
    assert buffer_size("mem_checksum", 100) == 100
    assert buffer_size("int_loop", 100) == 0
    assert guest_ram_size("int_loop", 10**9) == 17 << 20
    assert guest_ram_size("mem_checksum", 64 << 20) == 80 << 20
    assert guest_ram_size("sieve", 64 << 20) == 81 << 20
    with pytest.raises(KernelRunError, match="MMIO hole"):
        guest_ram_size("mem_checksum", 4 << 30)


def test_result_port_assembles_two_halves() -> None:
    port = ResultPort()
    assert port.result is None
    port.write(0, 4, 0x89ABCDEF)
    assert port.result is None
    port.write(4, 4, 0x01234567)
    assert port.result == 0x0123456789ABCDEF
    assert port.read(0, 4) == 0


def test_round_down_keeps_two_significant_digits() -> None:
    assert [round_down(n) for n in (1, 99, 197_531, 1_000_000)] == [1, 99, 190_000, 1_000_000]


def test_calibrate_grows_then_extrapolates() -> None:
    probes: list[int] = []

    def run(n: int) -> float:  # 1 us per unit of work
        probes.append(n)
        return n * 1e-6

    chosen = calibrate(run, start_n=1000, max_n=10**9, target_seconds=1.0)
    assert probes == [1000, 8000, 64000, 512000]
    assert (chosen.n, chosen.probe_n) == (1_000_000, 512_000)
    probes.clear()
    assert calibrate(run, start_n=1000, max_n=5000, target_seconds=1.0).n == 5000
    assert probes == [1000, 5000]
