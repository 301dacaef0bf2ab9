# mb_low_kernel.s - a multiboot ELF kernel linked and loaded at 0x8000, in
# conventional memory (mb_low_kernel.ld).  pyvmm's protected-mode entry
# writes only its GDT (0x500-0x517) and uses its stack (0x70000-0x7ffff),
# so the kernel touches neither.
# Prints (see mb_layout.inc), the same under QEMU and pyvmm, status 33:
#   mb_low_kernel: multiboot magic ok
#   mb_low_kernel: entered at 0x0000800c
# Under QEMU:
#   qemu-system-x86_64 -accel tcg -display none -serial stdio -no-reboot \
#     -device isa-debug-exit,iobase=0xf4,iosize=0x04 -kernel guests/tests/mb_low_kernel.elf
# QEMU copies the kernel with its command lines, a page-rounded block from
# 0x8000 (hw/i386/multiboot.c), over its own multiboot information at
# 0x9000-0x9600, so the guest does not read it.
	.set	VMA_OFFSET, 0
	.set	REPORT_MEM, 0
	.include "tests/mb_layout.inc"
	.text
name:	.asciz	"mb_low_kernel"
