"""The target description gdb reads with ``qXfer:features:read:target.xml``.

Without it gdb guesses the register layout from the ELF it was given, and it
guesses wrong for a guest that starts in real mode or for registers it does not
know (cr0..efer). With it, gdb takes the architecture (``i386:x86-64``,
``i386``, or ``i8086`` for real mode) and every register's name, width and
order from us (GDB manual, "Target Descriptions").

The XML is rendered from a `RegisterFile`, so the description and the ``g``
packet layout always agree. gdb reads it in pieces: each request names an
offset and a length, and the reply is ``m`` + data (more follows) or ``l`` +
data (last piece).
"""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

from pyvmm.gdb.registers import FEATURE_CORE, RegisterFile

ANNEX = "target.xml"

# Bits of EFLAGS gdb names when it prints the register (Intel SDM vol. 1, 3.4.3).
EFLAGS_FLAGS: tuple[tuple[int, str], ...] = (
    (0, "CF"),
    (1, ""),
    (2, "PF"),
    (4, "AF"),
    (6, "ZF"),
    (7, "SF"),
    (8, "TF"),
    (9, "IF"),
    (10, "DF"),
    (11, "OF"),
    (14, "NT"),
    (16, "RF"),
    (17, "VM"),
    (18, "AC"),
    (19, "VIF"),
    (20, "VIP"),
    (21, "ID"),
)


def _eflags_type() -> list[str]:
    lines = ['    <flags id="i386_eflags" size="4">']
    for bit, name in EFLAGS_FLAGS:
        lines.append(f'      <field name={quoteattr(name)} start="{bit}" end="{bit}"/>')
    lines.append("    </flags>")
    return lines


def render_target_xml(layout: RegisterFile) -> bytes:
    """The whole target description for `layout`, as UTF-8 bytes."""
    lines = [
        '<?xml version="1.0"?>',
        '<!DOCTYPE target SYSTEM "gdb-target.dtd">',
        "<target>",
        f"  <architecture>{layout.architecture}</architecture>",
    ]
    for feature in layout.features:
        lines.append(f"  <feature name={quoteattr(feature.name)}>")
        if feature.name == FEATURE_CORE:
            lines.extend(_eflags_type())
        for reg in feature.registers:
            attributes = f'name={quoteattr(reg.name)} bitsize="{8 * reg.size}"'
            attributes += f" type={quoteattr(reg.type)}"
            if reg.group is not None:
                attributes += f" group={quoteattr(reg.group)}"
            lines.append(f"    <reg {attributes}/>")
        lines.append("  </feature>")
    lines.append("</target>")
    return ("\n".join(lines) + "\n").encode()


def read_chunk(document: bytes, offset: int, length: int) -> bytes:
    """One ``qXfer`` reply: ``m`` + a piece when more follows, else ``l`` + the rest."""
    piece = document[offset : offset + length]
    more = offset + length < len(document) and length > 0
    return (b"m" if more else b"l") + piece
