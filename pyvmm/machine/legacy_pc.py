"""Two things a PC guest may count on that pyvmm does not have, and how pyvmm notices.

- **A BIOS.** At a real-mode entry `attach_no_bios` points the empty IVT
  vectors at pyvmm's stubs and puts their trap on the port bus (see
  `pyvmm.arch.x86_64.no_bios`): calls are counted and return, an exception
  ends the run (OutcomeKind.UNHANDLED_EXCEPTION).
- **A screen.** The VGA text buffer at 0xb8000 stays RAM, as it is to the
  guest today, but its page gets a KVM memory slot of its own with dirty-page
  logging (KVM_MEM_LOG_DIRTY_PAGES, KVM API doc 4.35; read with
  KVM_GET_DIRTY_LOG, 4.8), the way QEMU and kvmtool track framebuffers: no
  exit per write, and at the end of the run one ioctl says whether the guest
  wrote there. A KVM that refuses the flag gets the slot without it, and the
  screen's contents are compared with what they were before the run instead.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from pyvmm._kvm import ffi, lib
from pyvmm.arch.x86_64 import layout, no_bios
from pyvmm.devices.bus import Bus
from pyvmm.devices.vga_text import SCREEN_SIZE
from pyvmm.errors import KvmError, Log
from pyvmm.kvm.vm import Vm
from pyvmm.machine.outcome import RunOutcome, unhandled_exception
from pyvmm.machine.vcpu_loop import running_vcpu
from pyvmm.memory.guest_memory import GuestMemory

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from typing import Any

log = Log(__name__)


def attach_no_bios(
    pio_bus: Bus,
    memory: GuestMemory,
    stop: Callable[[RunOutcome], None],
    current_vcpu: Callable[[], Any] = running_vcpu,
    acknowledge_irq: Callable[[int], int | None] | None = None,
) -> no_bios.NoBiosTrap | None:
    """Install the stubs and their trap for a real-mode entry; None if the image took the area.

    An exception that reaches a stub calls `stop` with an UNHANDLED_EXCEPTION
    outcome. `current_vcpu` gives the vCPU being served (tests pass their own);
    `acknowledge_irq(vector)`, with the in-kernel PICs, tells a hardware
    interrupt from an exception of the same vector (and ends it).
    """
    pointed = no_bios.install(memory)
    if not pointed:
        return None
    log.info(
        "no BIOS: %d empty IVT vectors point at pyvmm's stubs at %04x:0000 (trap port 0x%x)",
        pointed,
        layout.NO_BIOS_STUBS_SEGMENT,
        no_bios.NO_BIOS_PORT,
    )
    trap = no_bios.NoBiosTrap(
        memory,
        current_vcpu,
        lambda message, registers: stop(unhandled_exception(message, registers)),
        acknowledge_irq,
    )
    pio_bus.insert(trap, no_bios.NO_BIOS_PORT, 1, "no-BIOS trap")
    return trap


class VgaTextWatch:
    """Whether the guest wrote to the VGA text buffer, and the screen it holds.

    `slot` is the KVM slot with dirty-page logging over the buffer's page, or
    None where KVM refused it (then `written` compares contents). `kvm_slots`
    lists the (slot, start GPA, end GPA) that the RAM region holding the
    page was cut into, for the memory map.
    """

    def __init__(
        self,
        vm: Vm,
        memory: GuestMemory,
        slot: int | None,
        kvm_slots: tuple[tuple[int, int, int], ...] = (),
    ) -> None:
        self.vm = vm
        self.memory = memory
        self.slot = slot
        self.kvm_slots = kvm_slots
        self._bitmap = ffi.new("uint64_t[]", 1)  # one bit per page, in whole 64-bit words
        self._dirty = False
        self._before = self.screen()

    @property
    def method(self) -> str:
        """How `written` knows, for -v."""
        if self.slot is None:
            return "by its contents (this KVM refuses dirty-page logging)"
        return f"by KVM's dirty-page log of slot {self.slot}"

    def mark_start(self) -> None:
        """Remember the screen as the image left it, before the guest runs."""
        self._before = self.screen()

    def screen(self) -> bytes:
        """The SCREEN_SIZE bytes at 0xb8000 now."""
        return self.memory.read(layout.VGA_TEXT_GPA, SCREEN_SIZE)

    def written(self) -> bool:
        """Whether the guest wrote to the buffer's page since the start (call after the run)."""
        if self.slot is None:
            return self.screen() != self._before
        self.vm.get_dirty_log(self.slot, self._bitmap)  # reading clears it: keep what it said
        self._dirty = self._dirty or bool(self._bitmap[0] & 1)
        return self._dirty


def attach_memory_watching_vga(vm: Vm, memory: GuestMemory) -> VgaTextWatch | None:
    """Register guest RAM as KVM slots, the VGA text page in a slot of its own, logged.

    The region holding the page is cut in three KVM slots: the part below
    keeps the region's slot number, the page and the part above take the
    next free ones. The guest sees the same RAM as with one slot. None when
    no RAM region holds the page.
    """
    start = layout.VGA_TEXT_GPA
    end = start + layout.VGA_TEXT_WATCHED_SIZE
    next_slot = max(region.slot for region in memory) + 1
    watch: VgaTextWatch | None = None
    for region in memory:
        hva = memory.mapping.hva + region.host_offset
        if not region.contains(start, end - start):
            _set_slot(vm, region.slot, region.gpa, region.size, hva)
            continue
        pieces = [(region.slot, region.gpa, start), (next_slot, start, end)]
        pieces.append((next_slot + 1, end, region.end))
        pieces = [piece for piece in pieces if piece[1] < piece[2]]
        logged = False
        for slot, piece_start, piece_end in pieces:
            piece_hva = hva + piece_start - region.gpa
            if piece_start == start:
                logged = _set_logged_slot(vm, slot, start, end - start, piece_hva)
            else:
                _set_slot(vm, slot, piece_start, piece_end - piece_start, piece_hva)
        watch = VgaTextWatch(vm, memory, next_slot if logged else None, tuple(pieces))
    return watch


def attach_guest_memory(vm: Vm, memory: GuestMemory, vga_text: bool) -> VgaTextWatch | None:
    """Register guest RAM as KVM slots (KVM_SET_USER_MEMORY_REGION, KVM API doc 4.35).

    With `vga_text` the VGA text page gets a logged slot of its own (see
    `attach_memory_watching_vga`); otherwise each RAM region is one slot.
    """
    if vga_text:
        return attach_memory_watching_vga(vm, memory)
    for region in memory:
        _set_slot(vm, region.slot, region.gpa, region.size, memory.mapping.hva + region.host_offset)
    return None


def _set_slot(vm: Vm, slot: int, gpa: int, size: int, hva: int, flags: int = 0) -> None:
    vm.set_user_memory_region(slot, flags, gpa, size, hva)
    log.info("slot %d: guest 0x%x..0x%x -> host 0x%x", slot, gpa, gpa + size, hva)


def _set_logged_slot(vm: Vm, slot: int, gpa: int, size: int, hva: int) -> bool:
    """The VGA text page's slot, with dirty-page logging if KVM takes it; whether it did."""
    try:
        _set_slot(vm, slot, gpa, size, hva, lib.KVM_MEM_LOG_DIRTY_PAGES)
    except KvmError as error:
        if error.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTTY):
            raise
        log.info("KVM refuses KVM_MEM_LOG_DIRTY_PAGES (%s): VGA text watched by contents", error)
        _set_slot(vm, slot, gpa, size, hva)
        return False
    log.info("slot %d is the VGA text buffer, with dirty-page logging", slot)
    return True
