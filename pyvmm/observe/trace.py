"""`--trace`: one line per exit, with the guest instruction that caused it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any, TextIO

from pyvmm.arch.x86_64 import instruction as x86
from pyvmm.arch.x86_64.page_walk import PagingRegisters
from pyvmm.errors import UsageError
from pyvmm.kvm.exits import (
    FailEntry,
    Hlt,
    InternalError,
    IoapicEoi,
    IoIn,
    IoOut,
    IrqWindowOpen,
    MmioRead,
    MmioWrite,
    Shutdown,
    SystemEvent,
    Unknown,
    VcpuExit,
)
from pyvmm.kvm.vcpu import Vcpu
from pyvmm.memory.guest_memory import GuestMemory

CATEGORIES = (
    "io",
    "mmio",
    "hlt",
    "shutdown",
    "fail-entry",
    "internal-error",
    "system-event",
    "irq",
    "unknown",
)


def exit_category(exit: VcpuExit) -> str:
    match exit:
        case IoIn() | IoOut():
            return "io"
        case MmioRead() | MmioWrite():
            return "mmio"
        case Hlt():
            return "hlt"
        case Shutdown():
            return "shutdown"
        case FailEntry():
            return "fail-entry"
        case InternalError():
            return "internal-error"
        case SystemEvent():
            return "system-event"
        case IrqWindowOpen() | IoapicEoi():
            return "irq"
    return "unknown"


def exit_reason(exit: VcpuExit) -> str:
    """The header's name for the exit, e.g. KVM_EXIT_IO."""
    names = {
        "io": "KVM_EXIT_IO",
        "mmio": "KVM_EXIT_MMIO",
        "hlt": "KVM_EXIT_HLT",
        "shutdown": "KVM_EXIT_SHUTDOWN",
        "fail-entry": "KVM_EXIT_FAIL_ENTRY",
        "internal-error": "KVM_EXIT_INTERNAL_ERROR",
        "system-event": "KVM_EXIT_SYSTEM_EVENT",
    }
    if isinstance(exit, Unknown):
        return exit.name
    if isinstance(exit, IrqWindowOpen):
        return "KVM_EXIT_IRQ_WINDOW_OPEN"
    if isinstance(exit, IoapicEoi):
        return "KVM_EXIT_IOAPIC_EOI"
    # A category of its own for none of the others: KVM_EXIT_DEBUG (gdb, the SYSCALL repair).
    return names.get(exit_category(exit), f"KVM_EXIT_{type(exit).__name__.upper()}")


def parse_categories(text: str | None) -> frozenset[str]:
    """`io,mmio,hlt` -> those categories; None or "all" -> every one."""
    if text is None or text == "all":
        return frozenset(CATEGORIES)
    wanted = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = wanted - set(CATEGORIES)
    if unknown or not wanted:
        raise UsageError(
            f"--trace: unknown exit kind '{','.join(sorted(unknown)) or text}' "
            f"(choose from {', '.join(CATEGORIES)})"
        )
    return wanted


def exit_details(exit: VcpuExit) -> dict[str, Any]:
    """What the exit carried, decoded: port, size, direction, data; MMIO address..."""
    match exit:
        case IoOut(port=port, size=size, count=count, data=data):
            return {
                "port": port,
                "size": size,
                "direction": "out",
                "count": count,
                "data": _units(data, size),
            }
        case IoIn(port=port, size=size, count=count, buffer=buffer):
            return {
                "port": port,
                "size": size,
                "direction": "in",
                "count": count,
                "data": _units(bytes(buffer), size),
            }
        case MmioWrite(gpa=gpa, size=size, data=data):
            return {
                "gpa": gpa,
                "size": size,
                "direction": "write",
                "data": int.from_bytes(data, "little"),
            }
        case MmioRead(gpa=gpa, size=size, buffer=buffer):
            return {
                "gpa": gpa,
                "size": size,
                "direction": "read",
                "data": int.from_bytes(bytes(buffer), "little"),
            }
        case InternalError(suberror=suberror, insn_bytes=insn):
            return {"suberror": suberror, "failed_bytes": insn.hex()}
        case FailEntry(hardware_entry_failure_reason=reason):
            return {"hardware_entry_failure_reason": reason}
        case SystemEvent(type=event_type):
            return {"event": event_type}
        case IoapicEoi(vector=vector):
            return {"vector": vector}
    return {}


def _units(data: bytes, size: int) -> list[int]:
    return [int.from_bytes(data[at : at + size], "little") for at in range(0, len(data), size)]


class ExitTracer:
    """An ExitObserver that writes one line (text or JSON) per exit to `stream`."""

    def __init__(
        self,
        vcpu: Vcpu,
        memory: GuestMemory,
        stream: TextIO,
        categories: Iterable[str] = CATEGORIES,
        json_lines: bool = False,
        max_phys_bits: int = 52,
    ) -> None:
        self.vcpu = vcpu
        self.memory = memory
        self.stream = stream
        self.categories = frozenset(categories)
        self.json_lines = json_lines
        self.max_phys_bits = max_phys_bits
        self.started = time.perf_counter_ns()
        self.lines = 0

    def on_interrupted(self, run_ns: int) -> None:
        return None

    def on_exit(self, exit: VcpuExit, run_ns: int, handle_ns: int) -> None:
        category = exit_category(exit)
        if category not in self.categories:
            return
        record = self.record(exit, category)
        self.stream.write(json.dumps(record) + "\n" if self.json_lines else format_record(record))
        self.lines += 1

    def record(self, exit: VcpuExit, category: str) -> dict[str, Any]:
        regs = self.vcpu.get_regs()
        sregs = self.vcpu.get_sregs()
        paging = PagingRegisters(sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer)
        bits = x86.code_bits(sregs)
        found = x86.exit_instruction(
            self.memory, paging, sregs, regs.rip, category, self.max_phys_bits
        )
        if isinstance(exit, InternalError) and exit.insn_bytes:
            linear = x86.linear_address(sregs, regs.rip)
            failed = _failed_instruction(
                exit.insn_bytes, bits, linear, self.memory, paging, self.max_phys_bits
            )
            found = failed or found
        return {
            "time": (time.perf_counter_ns() - self.started) / 1e9,
            "vcpu": self.vcpu.vcpu_id,
            "reason": exit_reason(exit),
            "bits": bits,
            "cs": sregs.cs.selector,
            "cs_base": sregs.cs.base,
            "rip": regs.rip,
            "insn_address": None if found is None else found.linear,
            "insn": None if found is None else found.text,
            "insn_bytes": None if found is None else found.code.hex(),
            **exit_details(exit),
        }


def _failed_instruction(
    code: bytes,
    bits: int,
    linear: int,
    memory: GuestMemory | None,
    paging: PagingRegisters,
    max_phys_bits: int,
) -> x86.Instruction | None:
    """The instruction KVM could not emulate (its bytes are the exit's): just before RIP
    when pyvmm's assist layer performed it (RIP is then past it), else at RIP."""
    failed = x86.disassemble_one(code, bits, linear)
    if failed is None or memory is None:
        return failed
    before = linear - failed.size
    if x86.fetch(memory, paging, before, failed.size, max_phys_bits) == failed.code:
        return x86.disassemble_one(failed.code, bits, before)
    return failed


def format_record(record: dict[str, Any]) -> str:
    # Show where the instruction is: RIP may already point past it.
    linear = record["insn_address"]
    base = record["cs_base"] if record["bits"] != 64 else 0
    offset = record["rip"] if linear is None else linear - base
    if record["bits"] == 16:
        where = f"{record['cs']:04x}:{offset & 0xFFFF:04x}"
    elif record["bits"] == 32:
        where = f"{offset & 0xFFFF_FFFF:08x}"
    else:
        where = f"{offset:016x}"
    insn = record["insn"] or "(instruction not readable)"
    detail = _format_details(record)
    reason = record["reason"].removeprefix("KVM_EXIT_")
    return (
        f"{record['time']:10.6f} cpu{record['vcpu']} {reason:<14} {where}  "
        f"{record['bits']}-bit  {insn:<28} {detail}\n"
    )


def _format_details(record: dict[str, Any]) -> str:
    if "port" in record:
        size = record["size"]
        data = " ".join(f"0x{value:0{2 * size}x}" for value in record["data"][:8])
        more = " ..." if len(record["data"]) > 8 else ""
        text = f"port=0x{record['port']:x} size={size} {record['direction']} data={data}{more}"
        if record["count"] > 1:
            text += f" count={record['count']}"
        return text
    if "gpa" in record:
        return (
            f"gpa=0x{record['gpa']:x} size={record['size']} {record['direction']} "
            f"data=0x{record['data']:x}"
        )
    if "vector" in record:  # KVM_EXIT_IOAPIC_EOI
        return f"vector=0x{record['vector']:02x}"
    return " ".join(
        f"{key}={value}"
        for key, value in record.items()
        if key in ("suberror", "failed_bytes", "hardware_entry_failure_reason", "event")
    )
