# paged.s - proves 32-bit protected-mode entry with paging enabled
# (identity map, 4 MiB PSE pages): the code runs from 0x100000 through
# the page tables the VMM built.
# Mode: "paged" (flat segments, CR0.PG=1, CR4.PSE=1, entered at 0x100000).
# Prints "paged mode: CR0=0x%08x CR4=0x%08x PG=%d PSE=%d\n" from the live
# control registers, then halts (exit status 0).
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
	mov	$msg_cr4, %esi
	call	puts
	mov	%cr4, %eax
	mov	%eax, %edi
	mov	$8, %ecx
	call	puthex
	mov	$msg_pg, %esi
	call	puts
	mov	%ebx, %eax
	mov	$31, %cl		# CR0.PG
	call	putbit
	mov	$msg_pse, %esi
	call	puts
	mov	%edi, %eax
	mov	$4, %cl			# CR4.PSE
	call	putbit
	mov	$'\n', %al
	call	putc
	hlt

msg_cr0: .asciz	"paged mode: CR0=0x"
msg_cr4: .asciz	" CR4=0x"
msg_pg:	.asciz	" PG="
msg_pse: .asciz	" PSE="

	.include "print32.inc"
