"""The library's public API (`pyvmm/__init__.py`) and the pure code behind it.

`import pyvmm` must stay cheap: every `pyvmm` command imports it first, so it
loads its names lazily (PEP 562) and imports nothing else of the package.
The rest checks the pieces that need no KVM: the register snapshot, guest
memory through hand-written page tables, the device-range checks and what
`create_machine` makes of its arguments.
"""

from __future__ import annotations

import ast
import inspect
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import pyvmm
from pyvmm._kvm import ffi
from pyvmm.arch.x86_64.page_walk import PagingRegisters
from pyvmm.arch.x86_64.register_snapshot import Registers
from pyvmm.arch.x86_64.virtual_memory import physical_pieces, read_virtual, write_virtual
from pyvmm.errors import (
    BusError,
    GuestMemoryError,
    GuestPageFault,
    ImageTooLarge,
    KvmUnavailable,
    LoaderError,
    UsageError,
)
from pyvmm.loaders.entry import CpuMode
from pyvmm.machine.device_ranges import check_mmio_range, check_pio_range
from pyvmm.machine.facade import console_callback, create_machine
from pyvmm.memory.guest_memory import GuestMemory

REPO = Path(__file__).resolve().parents[2]
INIT = REPO / "pyvmm" / "__init__.py"

# --- import cost and names ---------------------------------------------------


def run_python(code: str) -> str:
    """Run `code` in a fresh interpreter that imports this checkout's pyvmm."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    return result.stdout


def test_import_pyvmm_loads_no_other_module_of_the_package() -> None:
    out = run_python(
        "import sys, pyvmm\n"
        "print(pyvmm.__file__)\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] == 'pyvmm')))"
    )
    imported, loaded = out.splitlines()
    assert Path(imported) == INIT  # this checkout's, not another installation's
    assert loaded.split() == ["pyvmm"]


def test_a_name_imports_only_what_it_needs() -> None:
    loaded = run_python(
        "import sys, pyvmm\n"
        "pyvmm.PyvmmError\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] == 'pyvmm')))"
    )
    assert loaded.split() == ["pyvmm", "pyvmm.errors"]


def test_every_public_name_resolves_in_a_fresh_interpreter() -> None:
    out = run_python(
        "import pyvmm\n"
        "missing = [n for n in pyvmm.__all__ if getattr(pyvmm, n, None) is None]\n"
        "print(len(pyvmm.__all__), missing)"
    )
    count, missing = out.split(maxsplit=1)
    assert int(count) > 20
    assert missing.strip() == "[]"


def test_star_import_gives_every_public_name() -> None:
    namespace: dict[str, object] = {}
    exec("from pyvmm import *", namespace)
    assert set(pyvmm.__all__) <= set(namespace)


def test_dir_lists_the_public_names_and_unknown_names_raise() -> None:
    assert set(pyvmm.__all__) <= set(dir(pyvmm))
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        pyvmm.not_a_name  # noqa: B018


def _type_checking_imports() -> dict[str, str]:
    """{name: module} of the `if TYPE_CHECKING:` block of pyvmm/__init__.py."""
    tree = ast.parse(INIT.read_text())
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
    )
    names: dict[str, str] = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names:
            assert alias.asname == alias.name  # `X as X`: an explicit re-export
            if node.module == "pyvmm":  # `from pyvmm import errors`: a submodule
                names[alias.name] = f"pyvmm.{alias.name}"
            else:
                names[alias.name] = node.module
    return names


def test_type_checkers_see_the_same_names_as_run_time() -> None:
    assert _type_checking_imports() == pyvmm._EXPORTS
    assert pyvmm.__all__ == ["__version__", *pyvmm._EXPORTS]


def test_every_exit_status_is_public() -> None:
    from pyvmm.machine import outcome

    statuses = {name for name in vars(outcome) if name.startswith("EXIT_")}
    assert statuses == {name for name in pyvmm.__all__ if name.startswith("EXIT_")}


PUBLIC_OBJECTS = [
    name
    for name in pyvmm.__all__
    if inspect.isclass(getattr(pyvmm, name)) or inspect.isfunction(getattr(pyvmm, name))
]


@pytest.mark.parametrize("name", PUBLIC_OBJECTS)
def test_public_objects_have_docstrings(name: str) -> None:
    value = getattr(pyvmm, name)
    assert inspect.getdoc(value), f"pyvmm.{name} has no docstring"
    if name == "Machine":
        methods = [
            member
            for member_name, member in inspect.getmembers(value, inspect.isfunction)
            if not member_name.startswith("_")
        ]
        undocumented = [m.__name__ for m in methods if not inspect.getdoc(m)]
        assert not undocumented, undocumented


# --- Registers ---------------------------------------------------------------


def test_registers_from_kvm_structs() -> None:
    regs = ffi.new("struct kvm_regs *")
    sregs = ffi.new("struct kvm_sregs *")
    regs.rax, regs.r15, regs.rip, regs.rflags = 0x1122, 0xFFFF_FFFF_FFFF_FFFF, 0x10001E, 0x46
    sregs.cs.selector, sregs.ss.selector = 0x08, 0x10
    sregs.fs.base = 0x7000
    sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer = 0x8000_0011, 0x1000, 0x20, 0x500
    registers = Registers.from_kvm(regs, sregs)
    assert registers.rax == 0x1122 and registers.r15 == 0xFFFF_FFFF_FFFF_FFFF
    assert registers.rip == 0x10001E and registers.rflags == 0x46
    assert (registers.cs, registers.ss, registers.ds) == (0x08, 0x10, 0)
    assert registers.fs_base == 0x7000
    assert (registers.cr0, registers.cr3, registers.cr4, registers.efer) == (
        0x8000_0011,
        0x1000,
        0x20,
        0x500,
    )
    assert registers.protected_mode and registers.paging and registers.long_mode
    assert all(type(getattr(registers, name)) is int for name in vars(registers))
    with pytest.raises(AttributeError):
        registers.rax = 0  # type: ignore[misc]
    text = str(registers)
    assert "RAX=0000000000001122" in text and "RIP=000000000010001e" in text
    assert "CS=0008" in text and "EFER=500" in text


def test_registers_mode_flags_in_real_mode() -> None:
    registers = Registers.from_kvm(ffi.new("struct kvm_regs *"), ffi.new("struct kvm_sregs *"))
    assert not (registers.protected_mode or registers.paging or registers.long_mode)


def test_registers_py_gives_the_snapshot_class_on_first_use() -> None:
    """`pyvmm boot` imports registers.py for its bits, without the dataclass behind `Registers`."""
    code = (
        "import sys\n"
        "from pyvmm.arch.x86_64 import registers\n"
        "assert 'dataclasses' not in sys.modules\n"
        "from pyvmm.arch.x86_64.register_snapshot import Registers\n"
        "assert registers.Registers is Registers\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
    from pyvmm.arch.x86_64 import registers

    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        registers.not_a_name  # noqa: B018


# --- RunOutcome ---------------------------------------------------------------


def test_an_outcome_is_copied_with_changes() -> None:
    outcome = pyvmm.RunOutcome(pyvmm.OutcomeKind.TIMEOUT, pyvmm.EXIT_TIMEOUT, "timed out")
    with_registers = outcome.replace(registers="RIP=...")
    assert (with_registers.kind, with_registers.exit_status) == (outcome.kind, outcome.exit_status)
    assert (with_registers.message, with_registers.registers) == ("timed out", "RIP=...")
    assert outcome.registers is None  # the original is unchanged
    assert outcome.with_message("later").message == "later"
    with pytest.raises(TypeError, match="no field colour"):
        outcome.replace(colour="red")
    assert repr(outcome).startswith("RunOutcome(kind=<OutcomeKind.TIMEOUT: 'timeout'>, ")


# --- guest memory through page tables ----------------------------------------

P_RW = 0b11  # present, writable
CR0_PE_PG = 0x8000_0001
CR4_PAE = 1 << 5
EFER_LME_LMA = 0x500


@pytest.fixture
def paged() -> Iterator[tuple[GuestMemory, PagingRegisters]]:
    """4-level tables at 0x1000: GVA 0x400000 -> GPA 0x9000, GVA 0x401000 -> GPA 0x5000.

    The two virtual pages are contiguous, the physical ones are not and run
    backwards, so an access across the boundary must be split and reordered.
    GVA 0x402000 is not mapped (PTE 2 not present).
    """
    with GuestMemory.from_ranges([(0, 0x10000)]) as memory:
        memory.write_u64(0x1000, 0x2000 | P_RW)  # PML4E[0] -> PDPT
        memory.write_u64(0x2000, 0x3000 | P_RW)  # PDPTE[0] -> PD
        memory.write_u64(0x3000 + 8 * 2, 0x4000 | P_RW)  # PDE[2] (GVA 0x400000) -> PT
        memory.write_u64(0x4000 + 8 * 0, 0x9000 | P_RW)  # PTE[0]: 0x400000 -> 0x9000
        memory.write_u64(0x4000 + 8 * 1, 0x5000 | P_RW)  # PTE[1]: 0x401000 -> 0x5000
        yield memory, PagingRegisters(cr0=CR0_PE_PG, cr3=0x1000, cr4=CR4_PAE, efer=EFER_LME_LMA)


def test_virtual_read_crosses_pages_onto_scattered_frames(
    paged: tuple[GuestMemory, PagingRegisters],
) -> None:
    memory, regs = paged
    memory.write(0x9FFC, b"left")
    memory.write(0x5000, b"right")
    assert physical_pieces(memory, regs, 0x400FFC, 9) == [(0x9FFC, 4), (0x5000, 5)]
    assert read_virtual(memory, regs, 0x400FFC, 9) == b"leftright"


def test_virtual_write_lands_on_the_mapped_frames(
    paged: tuple[GuestMemory, PagingRegisters],
) -> None:
    memory, regs = paged
    write_virtual(memory, regs, 0x400FFE, b"ABCD")
    assert memory.read(0x9FFE, 2) == b"AB"
    assert memory.read(0x5000, 2) == b"CD"


def test_fault_names_the_first_unmapped_address_and_writes_nothing(
    paged: tuple[GuestMemory, PagingRegisters],
) -> None:
    memory, regs = paged
    with pytest.raises(GuestPageFault) as fault:
        write_virtual(memory, regs, 0x401FFC, b"12345678")
    assert fault.value.gva == 0x401FFC and fault.value.size == 8
    assert fault.value.address == 0x402000
    assert "PTE 2 is not present" in fault.value.reason
    assert memory.read(0x5FFC, 4) == bytes(4)  # the mapped half was not written either


def test_non_canonical_address_faults(paged: tuple[GuestMemory, PagingRegisters]) -> None:
    memory, regs = paged
    with pytest.raises(GuestPageFault, match="not a canonical address"):
        read_virtual(memory, regs, 0x0000_8000_0000_0000, 1)


def test_page_mapped_outside_ram_is_a_guest_memory_error(
    paged: tuple[GuestMemory, PagingRegisters],
) -> None:
    memory, regs = paged
    memory.write_u64(0x4000 + 8 * 2, 0xD000_0000 | P_RW)  # PTE[2] -> MMIO hole
    with pytest.raises(GuestMemoryError):
        read_virtual(memory, regs, 0x402000, 4)
    with pytest.raises(GuestMemoryError):
        write_virtual(memory, regs, 0x401FFE, b"XXXX")
    assert memory.read(0x5FFE, 2) == bytes(2)


def test_paging_off_reads_physical_memory() -> None:
    with GuestMemory.from_ranges([(0, 0x10000)]) as memory:
        memory.write(0x7C00, b"\xfa\xf4")
        off = PagingRegisters(cr0=0, cr3=0, cr4=0, efer=0)
        assert read_virtual(memory, off, 0x7C00, 2) == b"\xfa\xf4"
        assert read_virtual(memory, off, 0x7C00, 0) == b""
        with pytest.raises(ValueError):
            read_virtual(memory, off, 0x7C00, -1)
        with pytest.raises(ValueError):
            read_virtual(memory, off, -1, 1)


# --- where devices may go ----------------------------------------------------


def test_port_ranges_stay_in_the_64k_io_space() -> None:
    check_pio_range(0xFFFC, 4, "dev")
    with pytest.raises(BusError, match="outside the x86 I/O address space"):
        check_pio_range(0xFFFE, 4, "dev")
    with pytest.raises(BusError, match="empty range"):
        check_pio_range(0x700, 0, "dev")


def test_mmio_ranges_must_be_where_accesses_exit() -> None:
    with GuestMemory.from_ranges([(0, 0x20_0000)]) as memory:
        check_mmio_range(memory, 0xD000_0000, 0x1000, 46, "dev")
        check_mmio_range(memory, 0x20_0000, 0x1000, 46, "dev")  # right above RAM
        with pytest.raises(BusError, match="overlaps guest RAM"):
            check_mmio_range(memory, 0x1F_F000, 0x2000, 46, "dev")
        with pytest.raises(BusError, match="given to KVM"):
            check_mmio_range(memory, 0xFFFB_F000, 0x1000, 46, "dev")
        with pytest.raises(BusError, match="46-bit physical address space"):
            check_mmio_range(memory, (1 << 46) - 0x10, 0x20, 46, "dev")


# --- create_machine's arguments ------------------------------------------------


def test_console_text_stream_gets_utf8_split_across_chunks() -> None:
    stream = io.StringIO()
    write = console_callback(stream)
    for chunk in (b"caf", b"\xc3", b"\xa9\n", b"\xff"):
        write(chunk)
    assert stream.getvalue() == "café\n\ufffd"


def test_console_binary_file_callable_and_none() -> None:
    binary = io.BytesIO()
    console_callback(binary)(b"\x00\xff")
    assert binary.getvalue() == b"\x00\xff"
    collected = bytearray()
    assert console_callback(collected.extend) == collected.extend
    console_callback(None)(b"dropped")  # accepted, goes nowhere
    with pytest.raises(TypeError, match="console must be"):
        console_callback(42)  # type: ignore[arg-type]


def test_bad_arguments_raise_before_kvm_is_opened(tmp_path: Path) -> None:
    no_kvm = str(tmp_path / "kvm")  # never opened: each call fails before that
    with pytest.raises(UsageError, match="invalid memory size"):
        create_machine(b"\xf4", ram_size="lots", kvm_path=no_kvm)
    with pytest.raises(UsageError, match="too small"):
        create_machine(b"\xf4", ram_size="1K", kvm_path=no_kvm)
    with pytest.raises(UsageError, match="unknown CPU mode 'turbo'"):
        create_machine(b"\xf4", mode="turbo", kvm_path=no_kvm)
    with pytest.raises(LoaderError, match="empty"):
        create_machine(b"", kvm_path=no_kvm)
    with pytest.raises(LoaderError, match="cannot read image"):
        create_machine(tmp_path / "missing.bin", kvm_path=no_kvm)


def test_the_library_quotes_ram_size_as_it_was_given(tmp_path: Path) -> None:
    """create_machine(ram_size='1K') said `memory size 4 KiB is too small` (the rounded size)."""
    no_kvm = str(tmp_path / "kvm")
    with pytest.raises(UsageError) as error:
        create_machine(b"\xf4", ram_size="1K", kvm_path=no_kvm)
    assert str(error.value) == "ram_size '1K' is too small: pyvmm needs at least 2 MiB of guest RAM"
    with pytest.raises(UsageError) as error:
        create_machine(b"\xf4", ram_size=1000, kvm_path=no_kvm)  # bytes, rounded up to a page
    assert str(error.value).startswith("ram_size 1000 (4 KiB) is too small:")


def test_the_library_judges_files_before_reading_them(tmp_path: Path) -> None:
    """A flat image larger than RAM, a device, a missing module: refused before KVM, unread."""
    no_kvm = str(tmp_path / "kvm")
    big = tmp_path / "big.bin"
    with big.open("wb") as sparse:
        sparse.truncate(64 << 20)
    too_large = r"^image '.*big\.bin' is 64 MiB, larger than the 16 MiB of guest RAM"
    with pytest.raises(ImageTooLarge, match=too_large):
        create_machine(big, ram_size="16M", kvm_path=no_kvm)
    with pytest.raises(LoaderError, match=r"^image '/dev/zero' is a character device, not a file$"):
        create_machine("/dev/zero", kvm_path=no_kvm)
    kernel = str(REPO / "guests" / "multiboot.elf")
    missing = str(tmp_path / "initrd")
    with pytest.raises(LoaderError) as error:
        create_machine(kernel, modules=[missing], kvm_path=no_kvm)
    assert str(error.value) == f"cannot read module '{missing}': No such file or directory"


def test_missing_kvm_device_is_kvm_unavailable(tmp_path: Path) -> None:
    image = tmp_path / "guest.bin"
    image.write_bytes(b"\xf4")
    with pytest.raises(KvmUnavailable, match="cannot open"):
        create_machine(image, ram_size="2M", mode=CpuMode.REAL, kvm_path=str(tmp_path / "kvm"))
