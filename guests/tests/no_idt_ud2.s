# no_idt_ud2.s - a long-mode guest that faults before it has an IDT.
# Mode: "long" (64-bit CS at CPL0, identity-mapped low 4 GiB, entered at 0x100000).
# pyvmm enters long mode with IDTR.limit 0, so the #UD of `ud2` cannot be
# delivered (#GP), nor can that (#DF), nor that: the CPU shuts down and KVM
# reports KVM_EXIT_SHUTDOWN (a triple fault, exit status 4).
# Prints "no_idt_ud2: ud2 with no IDT\n" first.
	.code64
	.text
	.globl	_start
_start:
	lea	msg(%rip), %rsi
	call	puts
	ud2				# #UD -> #GP -> #DF -> shutdown
	hlt				# not reached

msg:	.asciz	"no_idt_ud2: ud2 with no IDT\n"

	.include "print64.inc"
