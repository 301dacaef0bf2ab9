# protected.s - proves 32-bit protected-mode entry with paging off.
# Mode: "protected" (flat segments, loaded and entered at 0x100000).
# Prints "protected mode: CR0=0x%08x PE=%d PG=%d\n" from the live CR0,
# then halts (exit status 0).
	.code32
	.text
	.globl	_start
_start:
	mov	$msg_cr0, %esi
	call	puts
	mov	%cr0, %eax
	mov	%eax, %ebx
	mov	$8, %ecx
	call	puthex
	mov	$msg_pe, %esi
	call	puts
	mov	%ebx, %eax
	mov	$0, %cl			# CR0.PE
	call	putbit
	mov	$msg_pg, %esi
	call	puts
	mov	%ebx, %eax
	mov	$31, %cl		# CR0.PG
	call	putbit
	mov	$'\n', %al
	call	putc
	hlt

msg_cr0: .asciz	"protected mode: CR0=0x"
msg_pe:	.asciz	" PE="
msg_pg:	.asciz	" PG="

	.include "print32.inc"
