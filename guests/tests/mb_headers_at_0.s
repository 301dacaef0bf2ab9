# mb_headers_at_0.s - a multiboot ELF kernel whose first PT_LOAD, at physical 0,
# holds its own ELF and program headers (a linker script that starts with
# `. = SIZEOF_HEADERS`); the kernel itself is at 0x20000 (mb_headers_at_0.ld).
# The headers segment lies below pyvmm's GDT, so nothing of pyvmm's moves.
# Prints (see mb_layout.inc), the same under QEMU and pyvmm, status 33:
#   mb_headers_at_0: multiboot magic ok
#   mb_headers_at_0: entered at 0x0002000c
#   mb_headers_at_0: 0x00000000 holds 0x464c457f: ok      ("\x7fELF")
# Under QEMU:
#   qemu-system-x86_64 -accel tcg -display none -serial stdio -no-reboot \
#     -device isa-debug-exit,iobase=0xf4,iosize=0x04 -kernel guests/tests/mb_headers_at_0.elf
# QEMU copies a multiboot ELF kernel as one block from its lowest to its
# highest address (hw/i386/multiboot.c), over its own multiboot information
# at 0x9000-0x9600 here, so this guest does not read the information; and a
# kernel at 1 MiB with its headers at 0 would be copied over QEMU's option
# ROM, which QEMU then does not survive: hence 0x20000.
	.set	VMA_OFFSET, 0
	.set	CHECK_GPA, 0
	.set	CHECK_VALUE, 0x464c457f
	.set	REPORT_MEM, 0
	.include "tests/mb_layout.inc"
	.text
name:	.asciz	"mb_headers_at_0"
