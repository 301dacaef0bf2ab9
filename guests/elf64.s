# elf64.s - proves ELF64 loading: linked as an ELF64 executable at
# 0x100000 and entered at e_entry in the "long" state.
# Prints "ELF64 guest: long mode, EFER.LMA=%d\n" (LMA read from EFER at run
# time), then writes 0x2a to the debug-exit port 0xf4, so the VMM's exit
# status is (0x2a << 1) | 1 = 85.
	.code64
	.text
	.globl	_start
_start:
	lea	msg(%rip), %rsi
	call	puts
	mov	$0xc0000080, %ecx	# IA32_EFER
	rdmsr
	mov	$10, %cl		# EFER.LMA
	call	putbit
	mov	$'\n', %al
	call	putc
	mov	$0x2a, %al
	out	%al, $0xf4		# debug-exit: status 85
1:	hlt				# not reached
	jmp	1b

msg:	.asciz	"ELF64 guest: long mode, EFER.LMA="

	.include "print64.inc"
