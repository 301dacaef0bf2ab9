# sse_at_entry.s - a long-mode guest that uses an SSE register with SSE off,
# as C compiled without -mgeneral-regs-only does (a double in %xmm0).
# Mode: "long" (64-bit CS at CPL0, entered at 0x100000).
# pyvmm enters with CR4.OSFXSR=0, so `movsd` raises #UD: with no IDT that is a
# triple fault on VT-x/AMD-V; a KVM that emulates CPL0 code (kvm_pvm) gives up
# on the instruction instead (KVM_EXIT_INTERNAL_ERROR).
# Prints "sse_at_entry: movsd with CR4.OSFXSR=0\n" first.
	.code64
	.text
	.globl	_start
_start:
	lea	msg(%rip), %rsi
	call	puts
	lea	one(%rip), %rax
	movsd	(%rax), %xmm0		# SSE is off: #UD
	hlt				# not reached

	.p2align 3
one:	.double	1.0
msg:	.asciz	"sse_at_entry: movsd with CR4.OSFXSR=0\n"

	.include "print64.inc"
