# reset_cf9.s - reboots through the Reset Control Register (port 0xcf9) as
# Linux does (arch/x86/kernel/reboot.c, BOOT_CF9_SAFE, a warm reboot): reads
# it, writes it with bit 1 (hard reset) set, then with bits 1 and 2 (reset
# the CPU) set.  A multiboot kernel:
#
#   qemu-system-x86_64 -accel tcg -display none -serial stdio -no-reboot \
#       -device isa-debug-exit,iobase=0xf4,iosize=0x04 -kernel guests/tests/reset_cf9.elf
#   pyvmm boot guests/tests/reset_cf9.elf
#
# Both print, then reset (QEMU with -no-reboot exits 0; pyvmm ends the run as
# "reset", status 0):
#   reset_cf9: boot 1
#   reset_cf9: port 0xcf9 reads 00: 02, then 06 to port 0xcf9
# A register that ignores it prints "reset_cf9: still running: the reset was
# ignored" (debug-exit 1, status 3).  Rebooted, it prints its boot line again
# each time (see tests/reset.inc).
	.set	MB_MAGIC, 0x1badb002
	.set	MB_FLAGS, 0x3
	.code32
	.text
	.globl	_start
	.align	4
	.long	MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

	.equ	RESET_CONTROL, 0xcf9
	.equ	WARM_REBOOT, 0x06	# SYS_RST | RST_CPU

_start:
	mov	$stack_top, %esp	# the loader leaves ESP undefined
	mov	$name, %esi
	call	count_boot
	mov	$m_reads, %esi
	call	puts
	mov	$RESET_CONTROL, %dx
	in	%dx, %al
	movzbl	%al, %ebx
	mov	%ebx, %eax
	mov	$2, %ecx
	call	puthex
	and	$~WARM_REBOOT, %bl
	mov	$m_writes, %esi
	call	puts
	mov	%ebx, %eax
	or	$0x02, %al		# request a hard reset
	mov	$RESET_CONTROL, %dx
	out	%al, %dx
	mov	$2, %ecx
	call	puthex
	mov	$m_then, %esi
	call	puts
	mov	%ebx, %eax
	or	$WARM_REBOOT, %al
	mov	%eax, %ebx
	mov	$2, %ecx
	call	puthex
	mov	$m_port, %esi
	call	puts
	mov	%ebx, %eax
	mov	$RESET_CONTROL, %dx
	out	%al, %dx		# bit 2: reset now
	mov	$name, %esi
	jmp	reset_ignored

name:		.asciz	"reset_cf9"
m_reads:	.asciz	"reset_cf9: port 0xcf9 reads "
m_writes:	.asciz	": "
m_then:		.asciz	", then "
m_port:		.asciz	" to port 0xcf9\n"

	.include "print32.inc"
	.include "tests/reset.inc"

	.bss
	.align	16
	.skip	1024
stack_top:
