# elf32.s - proves ELF32 loading: linked as an ELF32 executable at
# 0x100000 and entered at e_entry in the "protected" state.
# Prints "ELF32 guest: protected mode, CR0.PE=%d\n" (PE read from CR0 at
# run time), then halts (exit status 0).
	.code32
	.text
	.globl	_start
_start:
	mov	$msg, %esi
	call	puts
	mov	%cr0, %eax
	mov	$0, %cl			# CR0.PE
	call	putbit
	mov	$'\n', %al
	call	putc
	hlt

msg:	.asciz	"ELF32 guest: protected mode, CR0.PE="

	.include "print32.inc"
