# reset_port92.s - reboots through System Control Port A (port 0x92, "fast
# reset"): reads it, then writes it back with bit 0 set.  A multiboot kernel:
#
#   qemu-system-x86_64 -accel tcg -display none -serial stdio -no-reboot \
#       -device isa-debug-exit,iobase=0xf4,iosize=0x04 -kernel guests/tests/reset_port92.elf
#   pyvmm boot guests/tests/reset_port92.elf
#
# Both print, then reset (QEMU with -no-reboot exits 0; pyvmm ends the run as
# "reset", status 0):
#   reset_port92: boot 1
#   reset_port92: port 0x92 reads 02: 03 to port 0x92
# A port that ignores it prints "reset_port92: still running: the reset was
# ignored" (debug-exit 1, status 3).  Rebooted, it prints its boot line again
# each time (see tests/reset.inc).
	.set	MB_MAGIC, 0x1badb002
	.set	MB_FLAGS, 0x3
	.code32
	.text
	.globl	_start
	.align	4
	.long	MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

_start:
	mov	$stack_top, %esp	# the loader leaves ESP undefined
	mov	$name, %esi
	call	count_boot
	mov	$m_reads, %esi
	call	puts
	in	$0x92, %al
	movzbl	%al, %ebx
	mov	%ebx, %eax
	mov	$2, %ecx
	call	puthex
	mov	$m_writes, %esi
	call	puts
	mov	%ebx, %eax
	and	$0xfe, %al		# bit 0 must go from 0 to 1
	out	%al, $0x92
	or	$0x01, %al
	mov	%eax, %ebx
	mov	$2, %ecx
	call	puthex
	mov	$m_port, %esi
	call	puts
	mov	%ebx, %eax
	out	%al, $0x92		# bit 0: reset
	mov	$name, %esi
	jmp	reset_ignored

name:		.asciz	"reset_port92"
m_reads:	.asciz	"reset_port92: port 0x92 reads "
m_writes:	.asciz	": "
m_port:		.asciz	" to port 0x92\n"

	.include "print32.inc"
	.include "tests/reset.inc"

	.bss
	.align	16
	.skip	1024
stack_top:
