"""The interrupt controllers' registers as text: the monitor's `info pic`.

The lines read as QEMU's HMP `info pic` prints them (hw/intc/i8259.c and
hw/intc/ioapic_common.c), so that the two monitors can be compared line by
line: one line per 8259A (`pic0` the master, `pic1` the slave), then, for
pyvmm's own IOAPIC (the split irqchip), its ID and IOREGSEL, one line per
redirection entry and the pins with a request pending (IRR) or a
level-triggered interrupt in service (Remote IRR).

Pure functions of register values: no machine, no KVM.
"""

from __future__ import annotations

from pyvmm.devices.ioapic import (
    DELIVERY_MODE_SHIFT,
    DEST_MODE_LOGICAL,
    DEST_SHIFT,
    MASKED,
    POLARITY_LOW,
    REMOTE_IRR,
    TRIGGER_LEVEL,
    VECTOR_MASK,
)

# Delivery modes, by value (82093AA datasheet, redirection table, bits 10:8).
DELIVERY_MODES = ("fixed", "lowest", "smi", "...", "nmi", "init", "...", "extint")
REDIRECTION_BASE = 0x10  # IOREGSEL of entry 0's low dword


def pic_line(index: int, registers: dict[str, int]) -> str:
    """One 8259A: `registers` as I8259.registers() gives them (or KVM's kvm_pic_state)."""
    return (
        f"pic{index}: irr={registers['irr']:02x} imr={registers['imr']:02x} "
        f"isr={registers['isr']:02x} hprio={registers['priority_add']} "
        f"irq_base={registers['irq_base']:02x} rr_sel={registers['read_reg_select']} "
        f"elcr={registers['elcr']:02x} fnm={registers['special_fully_nested_mode']}\n"
    )


def ioapic_lines(state: dict[str, int | list[int]]) -> str:
    """The IOAPIC: `state` as IoApic.state() gives it."""
    ioregsel = int(state["ioregsel"])  # type: ignore[arg-type]
    selected = ""
    if ioregsel >= REDIRECTION_BASE:
        selected = f" (redir[{(ioregsel - REDIRECTION_BASE) >> 1}])"
    lines = [
        f"ioapic0: ver=0x{state['version']:x} id=0x{state['id']:02x} "
        f"sel=0x{ioregsel:02x}{selected}\n"
    ]
    entries: list[int] = state["entries"]  # type: ignore[assignment]
    in_service = 0
    for pin, entry in enumerate(entries):
        logical = bool(entry & DEST_MODE_LOGICAL)
        destination = (entry >> DEST_SHIFT) & (0xFF if logical else 0xF)
        lines.append(
            f"  pin {pin:<2} 0x{entry:016x} dest={destination:x} "
            f"vec={entry & VECTOR_MASK:<3} "
            f"{'active-lo' if entry & POLARITY_LOW else 'active-hi'} "
            f"{'level' if entry & TRIGGER_LEVEL else 'edge':<5} "
            f"{'masked' if entry & MASKED else '':<6} "
            f"{DELIVERY_MODES[(entry >> DELIVERY_MODE_SHIFT) & 7]:<6} "
            f"{'logical' if logical else 'physical'}\n"
        )
        if entry & TRIGGER_LEVEL and entry & REMOTE_IRR:
            in_service |= 1 << pin
    lines.append(_pins("  IRR", int(state["irr"])))  # type: ignore[arg-type]
    lines.append(_pins("  Remote IRR", in_service))
    return "".join(lines)


def _pins(name: str, mask: int) -> str:
    pins = [str(pin) for pin in range(mask.bit_length()) if mask >> pin & 1]
    return f"{name}{'' if pins else ' (none)'}{''.join(' ' + pin for pin in pins)}\n"
