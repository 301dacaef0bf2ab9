# virtio.s - the entry of virtio.elf, a multiboot kernel whose driver is virtio.c.
#
# The Multiboot (v1) header asks for the memory information (flags bit 1:
# mem_lower, mem_upper) and carries no address fields, so the loader uses the
# ELF program headers (virtio.ld). The loader enters _start in 32-bit
# protected mode, paging off, interrupts off, EAX=0x2BADB002 and EBX=the
# multiboot information; ESP is undefined, so set up a stack first, then call
# the C code: kmain(magic, info) (cdecl: arguments on the stack). kmain ends
# the run through the debug-exit port and does not return.
	.set	MB_MAGIC, 0x1badb002
	.set	MB_FLAGS, 1 << 1		# memory information
	.set	STACK_SIZE, 16384

	.code32
	.section .text.entry, "ax"	# first in the image: the header must lie in its first 8 KiB
	.globl	_start
	.align	4
	.long	MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

_start:
	mov	$stack_top, %esp
	cld				# the C code assumes DF=0
	sub	$8, %esp		# ESP 16-byte aligned at the call, as the i386 ABI wants
	push	%ebx			# info
	push	%eax			# magic
	call	kmain
1:	cli				# not reached
	hlt
	jmp	1b

	.bss
	.align	16
	.skip	STACK_SIZE
stack_top:
