# mb_trampoline_8000.s - a multiboot ELF kernel with a small second PT_LOAD at
# 0x8000: a 16-bit trampoline, as an SMP kernel keeps for its application
# processors (their startup IPI starts them at vector * 0x1000).  The kernel
# is at 0x20000 (mb_trampoline_8000.ld).  pyvmm's protected-mode entry writes
# only its GDT (0x500-0x517) and uses its stack (0x70000-0x7ffff): the
# trampoline touches neither.
# Prints (see mb_layout.inc), the same under QEMU and pyvmm, status 33:
#   mb_trampoline_8000: multiboot magic ok
#   mb_trampoline_8000: entered at 0x0002000c
#   mb_trampoline_8000: 0x00008000 holds 0xebf4fcfa: ok   (the trampoline's code)
# Under QEMU:
#   qemu-system-x86_64 -accel tcg -display none -serial stdio -no-reboot \
#     -device isa-debug-exit,iobase=0xf4,iosize=0x04 -kernel guests/tests/mb_trampoline_8000.elf
# QEMU copies the kernel as one block from 0x8000 (hw/i386/multiboot.c), over
# its own multiboot information at 0x9000-0x9600, so the guest does not read it.
	.set	VMA_OFFSET, 0
	.set	CHECK_GPA, 0x8000
	.set	CHECK_VALUE, 0xebf4fcfa	# cli; cld; hlt; jmp (the first 4 bytes)
	.set	REPORT_MEM, 0
	.include "tests/mb_layout.inc"
	.text
name:	.asciz	"mb_trampoline_8000"

	.section .trampoline, "ax"
	.code16
trampoline:
	cli
	cld
1:	hlt
	jmp	1b
