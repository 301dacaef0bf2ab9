# reset_kbd.s - reboots as PC kernels do (Linux arch/x86/kernel/reboot.c,
# BOOT_KBD): waits until the keyboard controller's input buffer is empty
# (port 0x64 bit 1 clear; at most 0x10000 reads, as kb_wait), then writes
# command 0xfe, "pulse the reset line", to port 0x64.  A multiboot kernel:
#
#   qemu-system-x86_64 -accel tcg -display none -serial stdio -no-reboot \
#       -device isa-debug-exit,iobase=0xf4,iosize=0x04 -kernel guests/tests/reset_kbd.elf
#   pyvmm boot guests/tests/reset_kbd.elf
#
# Both print, then reset (QEMU with -no-reboot exits 0; pyvmm ends the run as
# "reset", status 0):
#   reset_kbd: boot 1
#   reset_kbd: input buffer empty: 0xfe to port 0x64
# A controller whose input buffer never empties prints "reset_kbd: input
# buffer still full after 65536 reads: 0xfe to port 0x64" instead; one that
# ignores the command, "reset_kbd: still running: the reset was ignored"
# (debug-exit 1, status 3).  Rebooted (qemu without -no-reboot, pyvmm boot
# --reboot), it prints its boot line again each time (see tests/reset.inc).
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
	call	kbc_wait_write
	mov	$m_empty, %esi
	jnc	1f
	mov	$m_full, %esi
1:	call	puts
	mov	$0xfe, %al		# pulse output port bit 0: the CPU's reset line
	out	%al, $KBC_STATUS
	mov	$name, %esi
	jmp	reset_ignored

name:		.asciz	"reset_kbd"
m_empty:	.asciz	"reset_kbd: input buffer empty: 0xfe to port 0x64\n"
m_full:		.asciz	"reset_kbd: input buffer still full after 65536 reads: 0xfe to port 0x64\n"

	.include "print32.inc"
	.include "tests/i8042.inc"
	.include "tests/reset.inc"

	.bss
	.align	16
	.skip	1024
stack_top:
