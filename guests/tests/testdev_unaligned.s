# testdev_unaligned.s - port accesses to QEMU's pc-testdev that straddle its
# regions or are of a size a region does not take.  QEMU cuts such an access
# into pieces (its memory core) when KVM brings it, and does not when its own
# TCG runs the guest, so the reference is QEMU under KVM:
#
#   qemu-system-x86_64 -accel kvm -display none -serial stdio -no-reboot \
#       -device isa-debug-exit,iobase=0xf4,iosize=0x04 -device pc-testdev \
#       -kernel guests/tests/testdev_unaligned.elf
#   pyvmm boot --testdev guests/tests/testdev_unaligned.elf
#
# Prints one "access=value" line each, then ends through debug-exit with 0
# (status 1).  Values are for the scratch register at 0xe0 (0xe8 byte by
# byte), the flush-page port at 0xe4 (4-byte accesses only, reads 0), the
# IRQ-line ports at 0x2000 (1-byte only, read 0) and empty ports (0xff).
	.set	MB_MAGIC, 0x1badb002
	.set	MB_FLAGS, 0x3
	.code32
	.text
	.globl	_start
	.align	4
	.long	MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

# SHOW name: print "name=%eax".
.macro	SHOW name
	.pushsection .rodata
str\@:	.asciz	"\name="
	.popsection
	push	%eax
	mov	$str\@, %esi
	call	puts
	pop	%eax
	mov	$8, %ecx
	call	puthex
	mov	$'\n', %al
	call	putc
.endm

# READ width, port: read `port` (in %dx) with an access of `width` into %eax.
.macro	READ width, port
	mov	$\port, %dx
	xor	%eax, %eax
	in	%dx, \width
.endm

_start:
	mov	$0x80000, %esp
	mov	$0x11223344, %eax
	out	%eax, $0xe0
	READ	%ax, 0xe1
	SHOW	"inw 0xe1"
	READ	%eax, 0xe1
	SHOW	"inl 0xe1"
	READ	%eax, 0xe2
	SHOW	"inl 0xe2"
	READ	%eax, 0xe3
	SHOW	"inl 0xe3"
	READ	%al, 0xe4
	SHOW	"inb 0xe4"
	READ	%ax, 0xe6
	SHOW	"inw 0xe6"
	READ	%eax, 0xe5
	SHOW	"inl 0xe5"
	READ	%eax, 0xe9
	SHOW	"inl 0xe9"
	READ	%eax, 0xea
	SHOW	"inl 0xea"
	READ	%eax, 0xec
	SHOW	"inl 0xec"
	mov	$0xe1, %dx
	mov	$0xaabbccdd, %eax
	out	%eax, %dx
	in	$0xe0, %eax
	SHOW	"outl 0xe1 aabbccdd, then inl 0xe0"
	mov	$0xe6, %dx
	mov	$0x99887766, %eax
	out	%eax, %dx
	in	$0xe0, %eax
	SHOW	"outl 0xe6 99887766, then inl 0xe0"
	mov	$0x5a, %al
	out	%al, $0xe4		# a byte to the flush-page port: ignored
	mov	$0x5a5a, %ax
	out	%ax, $0xe4
	in	$0xe0, %eax
	SHOW	"outb/outw 0xe4, then inl 0xe0"
	READ	%ax, 0x2000
	SHOW	"inw 0x2000"
	READ	%eax, 0x2016
	SHOW	"inl 0x2016"
	READ	%al, 0x2018
	SHOW	"inb 0x2018"
	mov	$0, %al
	out	%al, $0xf4
	hlt

	.include "print32.inc"
