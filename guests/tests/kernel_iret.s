# kernel_iret.s - a protected-mode kernel returns from a handler at CPL 0,
# first without iret (the sequence pyvmm's hint suggests), then with iret.
#
#   pyvmm boot --mode protected guests/tests/kernel_iret.bin
#
# Prints "kernel_iret: popf; ret $8: back" and then, where the host runs
# CPL 0 iret (VT-x, AMD-V), "kernel_iret: iret: back" and ends through
# debug-exit 0x21 (status 67).  A host whose KVM emulates kernel code and
# cannot emulate iret ends the run as internal-error (status 6), and pyvmm's
# line names iret and the replacement.
	.code32
	.text
	.globl	_start
_start:
	mov	$0x90000, %esp
	# The frame a same-privilege interrupt pushes: EFLAGS, CS, EIP.
	pushf
	push	%cs
	push	$1f
	push	8(%esp)			# EFLAGS from the frame
	popf
	ret	$8			# EIP; drop CS and EFLAGS
1:	mov	$m_replacement, %esi
	call	puts
	pushf
	push	%cs
	push	$2f
	iret
2:	mov	$m_iret, %esi
	call	puts
	mov	$0x21, %al
	out	%al, $0xf4
	hlt

m_replacement:	.asciz	"kernel_iret: popf; ret $8: back\n"
m_iret:		.asciz	"kernel_iret: iret: back\n"

	.include "print32.inc"
