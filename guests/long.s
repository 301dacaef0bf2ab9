# long.s - proves 64-bit long-mode entry (EFER.LME/LMA, PAE paging).
# Mode: "long" (64-bit CS, identity-mapped low 4 GiB, entered at 0x100000).
# Prints "long mode: CR0=0x%016x CR4=0x%016x EFER=0x%016x LMA=%d\n" from the
# live registers (EFER via rdmsr 0xc0000080), then halts (exit status 0).
	.code64
	.text
	.globl	_start
_start:
	lea	msg_cr0(%rip), %rsi
	call	puts
	mov	%cr0, %rax
	mov	$16, %ecx
	call	puthex
	lea	msg_cr4(%rip), %rsi
	call	puts
	mov	%cr4, %rax
	mov	$16, %ecx
	call	puthex
	lea	msg_efer(%rip), %rsi
	call	puts
	mov	$0xc0000080, %ecx	# IA32_EFER
	rdmsr
	shl	$32, %rdx
	or	%rdx, %rax
	mov	%rax, %rbx
	mov	$16, %ecx
	call	puthex
	lea	msg_lma(%rip), %rsi
	call	puts
	mov	%rbx, %rax
	mov	$10, %cl		# EFER.LMA
	call	putbit
	mov	$'\n', %al
	call	putc
	hlt

msg_cr0: .asciz	"long mode: CR0=0x"
msg_cr4: .asciz	" CR4=0x"
msg_efer: .asciz " EFER=0x"
msg_lma: .asciz	" LMA="

	.include "print64.inc"
