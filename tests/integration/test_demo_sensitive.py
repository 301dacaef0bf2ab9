"""`pyvmm demo sensitive-instructions`: what CPL3 reveals, what UMIP traps, what translation fixes.

The virtual CPU's answers are also checked against a real CPL0 run of the
same guest (`--mode long`): as far as this host's KVM can run it there
(kvm_pvm cannot emulate `lar` at CPL0; VT-x/AMD-V runs it all).
"""

from __future__ import annotations

import re
from pathlib import Path

from pyvmm.demos import sensitive
from pyvmm.loaders.entry import CpuMode
from pyvmm.machine.builder import MachineConfig, build_machine
from pyvmm.shipped import shipped_file
from tests.integration.test_demos import run_demo_in

UMIP_ROWS = ("sgdt [mem]", "sidt [mem]", "sldt eax", "smsw rax", "str eax")
ALWAYS_SILENT = ("popf (flip IF)", "mov eax, cs", "mov eax, ss", "lar eax, 0x08", "verw 0x10")


def table(out: str) -> tuple[list[str], dict[str, list[str]]]:
    """The header's columns and each row's cells (split on two or more spaces)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("instruction "))
    header = re.split(r"\s{2,}", lines[start].strip())
    rows = {}
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells[1:]
    return header, rows


def test_sensitive_instructions_before_and_after(tmp_path: Path) -> None:
    result = run_demo_in(tmp_path, "sensitive-instructions")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    header, rows = table(out)
    assert list(rows) == [row.text for row in sensitive.ROWS]
    columns = header[1:]
    assert columns[0] == "as it is" and columns[-2:] == ["translated", "its own CPU (CPL0)"]
    plain = {text: cells[0] for text, cells in rows.items()}
    translated = {text: cells[-2] for text, cells in rows.items()}
    virtual = {text: cells[-1] for text, cells in rows.items()}
    # The guest's own CPU: pyvmm's GDT at 0x500, no IDT, CPL0 selectors.
    assert virtual["sgdt [mem]"] == "base 0x500 limit 0x37"
    assert virtual["mov eax, cs"] == "0x8 (CPL0)" and virtual["popf (flip IF)"] == "IF 0->1"
    # Translated: every answer is the virtual one, each through a trap.
    for text, cell in translated.items():
        assert cell == f"{virtual[text]} [trap]", (text, cell)
    # As it is: no trap reached the monitor, and the CPL shows.
    assert all("[trap]" not in cell for cell in plain.values()), out
    for text in ALWAYS_SILENT:
        assert plain[text].endswith(" *"), (text, plain[text])
    assert re.fullmatch(r"0x[0-9a-f]+ \(CPL3\) \*", plain["mov eax, cs"])
    assert plain["sgdt [mem]"] == "base 0xc000 limit 0x37 *"  # the monitor's own GDT
    if "CR4.UMIP" in columns:
        umip = {text: cells[columns.index("CR4.UMIP")] for text, cells in rows.items()}
        for text in UMIP_ROWS:
            assert umip[text] == f"{virtual[text]} [trap]", (text, umip[text])
        for text in ALWAYS_SILENT:
            assert umip[text].endswith(" *") and "[trap]" not in umip[text]
    else:
        assert "no UMIP column" in out
    assert "The monitor took 19 traps, one per rewrite" in " ".join(out.split())
    assert re.search(r"^verdict: 1[12] of 13 instructions leak at CPL3 without a trap", out, re.M)


def test_virtual_answers_match_a_real_cpl0_run() -> None:
    """guests/sensitive.bin at CPL0 (--mode long) reads what the virtual CPU answers."""
    image = shipped_file("guests/sensitive.bin").read_bytes()
    config = MachineConfig(
        image=image, ram_size=sensitive.RAM_SIZE, console=lambda data: None, mode=CpuMode.LONG
    )
    with build_machine(config) as machine:
        sregs = machine.vcpu.get_sregs()
        machine.run(timeout=30)  # to its end, or where this host's KVM stops emulating
        data = machine.memory.read(sensitive.RESULTS_GPA, 16 * len(sensitive.ROWS))
    real = sensitive.answers(data)
    # --mode long's GDT has 3 entries, the user-mode machine's 7: compare with its own.
    virtual = sensitive.virtual_answers(sregs.gdt.base, sregs.gdt.limit, sregs.cr0)
    compared = []
    for row in sensitive.ROWS:
        flags = int.from_bytes(data[row.slot * 16 + 8 : row.slot * 16 + 16], "little")
        if row.slot >= 9 and flags == sensitive.SENTINEL:
            continue  # lar/lsl/verr/verw not reached on this host: nothing to compare
        assert real[row.text] == virtual[row.text], row.text
        compared.append(row.text)
    # Everything up to lar runs at CPL0 everywhere.
    assert compared[:9] == [row.text for row in sensitive.ROWS[:9]]


def test_monitor_steps_over_what_it_does_not_emulate() -> None:
    """int3 (a trap: resume after it) and ud2 (a fault: step over it) are recorded, not fatal."""
    from pyvmm.demos.trap_monitor import TrapMonitor

    image = bytes.fromhex(
        "cc"  # int3          #BP, a trap
        "0f0b"  # ud2         #UD, a fault
        "b8 2a000000".replace(" ", "")  # mov eax, 42
        + "e6f4"  # out 0xf4, al: debug-exit status 85
    )
    config = MachineConfig(
        image=image, ram_size=sensitive.RAM_SIZE, console=lambda data: None, mode=CpuMode.USER
    )
    with build_machine(config) as machine:
        run = TrapMonitor(machine).run(timeout=30)
    assert run.outcome.exit_status == 85, run.outcome.message
    assert [(trap.name, trap.emulated) for trap in run.traps] == [("#BP", False), ("#UD", False)]
    assert run.traps[1].instruction == "ud2"
