# mb_trampoline_10000.s - a multiboot ELF kernel with a small second PT_LOAD at
# 0x10000, a 16-bit trampoline for application processors (startup IPI vector
# 0x10), and the kernel at 0x80000 (mb_trampoline_10000.ld).  Between the two
# lies pyvmm's boot stack (0x70000-0x7ffff), which neither segment touches.
# Prints (see mb_layout.inc), the same under QEMU and pyvmm, status 33:
#   mb_trampoline_10000: multiboot magic ok
#   mb_trampoline_10000: entered at 0x0008000c
#   mb_trampoline_10000: 0x00010000 holds 0xebf4fcfa: ok   (the trampoline's code)
#   mb_trampoline_10000: mem_lower=639KiB mmap[0]: base=0x00000000 len=0x0009fc00 type=1
# Under QEMU:
#   qemu-system-x86_64 -accel tcg -display none -serial stdio -no-reboot \
#     -device isa-debug-exit,iobase=0xf4,iosize=0x04 -kernel guests/tests/mb_trampoline_10000.elf
	.set	VMA_OFFSET, 0
	.set	CHECK_GPA, 0x10000
	.set	CHECK_VALUE, 0xebf4fcfa	# cli; cld; hlt; jmp (the first 4 bytes)
	.set	REPORT_MEM, 1
	.include "tests/mb_layout.inc"
	.text
name:	.asciz	"mb_trampoline_10000"

	.section .trampoline, "ax"
	.code16
trampoline:
	cli
	cld
1:	hlt
	jmp	1b
