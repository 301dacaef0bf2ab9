# mb_higher_half.s - a higher-half multiboot ELF kernel: linked at 0xc0100000
# (p_vaddr), loaded at 0x100000 (p_paddr), e_entry 0xc010000c, a virtual
# address (mb_higher_half.ld).  GRUB 2 and QEMU enter it at e_entry - p_vaddr
# + p_paddr = 0x10000c; with paging off it runs at its physical addresses
# (every address it uses is "symbol - VMA_OFFSET").
# Prints (see mb_layout.inc), the same under QEMU and pyvmm, status 33:
#   mb_higher_half: multiboot magic ok
#   mb_higher_half: entered at 0x0010000c
#   mb_higher_half: 0x00100000 holds 0x1badb002: ok   (its multiboot header, at p_paddr)
#   mb_higher_half: mem_lower=639KiB mmap[0]: base=0x00000000 len=0x0009fc00 type=1
# Under QEMU:
#   qemu-system-x86_64 -accel tcg -display none -serial stdio -no-reboot \
#     -device isa-debug-exit,iobase=0xf4,iosize=0x04 -kernel guests/tests/mb_higher_half.elf
	.set	VMA_OFFSET, 0xc0000000
	.set	CHECK_GPA, 0x100000
	.set	CHECK_VALUE, 0x1badb002
	.set	REPORT_MEM, 1
	.include "tests/mb_layout.inc"
	.text
name:	.asciz	"mb_higher_half"
