"""Whether an instruction needs SSE while the guest has SSE off, and what to do about it.

pyvmm enters every mode with CR4.OSFXSR=0 (README, "No SSE at entry"), as a
CPU comes out of reset; then every SSE instruction raises #UD (Intel SDM vol.
3A, 13.1.3 "Initialization of the SSE Extensions"; 2.5 "Control Registers":
CR4.OSFXSR, and CR0.EM=1 makes them #UD too). A C guest compiled without
`-mgeneral-regs-only` meets this on its first `double` or structure copy.
Recognised from the decoded instruction's operands (an XMM register), not
guessed: VEX/EVEX forms (AVX, `v...`) depend on XSAVE state instead and get no hint.
"""

from __future__ import annotations

import re

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    from typing import Any

CR0_EM = 1 << 2  # x87 emulation: SSE instructions raise #UD (Intel SDM vol. 3A, 2.5)
CR4_OSFXSR = 1 << 9  # OS supports FXSAVE/FXRSTOR: SSE instructions allowed (vol. 3A, 2.5)

_XMM_REGISTER = re.compile(r"\bxmm\d+\b")


def uses_sse_registers(text: str) -> bool:
    """Whether `text`, a disassembled instruction (capstone), has a legacy-SSE XMM operand."""
    mnemonic, _, operands = text.partition(" ")
    return not mnemonic.startswith("v") and bool(_XMM_REGISTER.search(operands))


def sse_off_hint(text: str, sregs: Any) -> str | None:
    """Why `text` cannot run and what to do, when it uses SSE registers with SSE off; or None.

    `sregs` is a struct kvm_sregs (CR0, CR4 as the guest has them now).
    """
    if not uses_sse_registers(text):
        return None
    off = []
    if not sregs.cr4 & CR4_OSFXSR:
        off.append("CR4.OSFXSR=0")
    if sregs.cr0 & CR0_EM:
        off.append("CR0.EM=1")
    if not off:
        return None
    return (
        f"it uses SSE registers, and SSE is off ({', '.join(off)}; pyvmm starts every guest "
        "with SSE off): build C guests with -mgeneral-regs-only, or turn SSE on first (clear "
        "CR0.EM, set CR0.MP, CR4.OSFXSR and CR4.OSXMMEXCPT; README, 'No SSE at entry')"
    )
