# sensitive.s - x86's sensitive but unprivileged instructions, run at CPL3.
# Mode: "user" (64-bit long mode at CPL3, entered at 0x100000); run by
# `pyvmm demo sensitive-instructions` (pyvmm/demos/sensitive.py).
#
# Robin and Irvine (USENIX Security 2000) list the instructions that made
# the x86 not virtualizable under Popek and Goldberg's theorem: they read or
# change privileged state, yet execute at CPL3 without trapping. A kernel
# deprivileged to ring 3 by a trap-and-emulate VMM would learn the truth
# from them, or have its request silently dropped. This guest executes each
# once and stores what it got in a 16-byte slot at RESULTS + 16 * i:
#
#   slot  instruction          stored
#   0     sgdt  [slot]         limit (2 bytes), base (8 bytes)
#   1     sidt  [slot]         limit, base
#   2     sldt  rax            the LDT selector
#   3     smsw  rax            CR0's low 16 bits
#   4     str   rax            the TR selector
#   5     pushf                RFLAGS (IF, IOPL)
#   6     popf                 RFLAGS before, RFLAGS after a popf that flips IF
#   7     mov   eax, cs        CS (its RPL bits are the CPL)
#   8     mov   eax, ss        SS
#   9     lar   eax, 0x08      access rights, RFLAGS (ZF: readable at this CPL)
#   10    lsl   eax, 0x10      segment limit, RFLAGS
#   11    verr  0x08           RFLAGS (ZF: readable)
#   12    verw  0x10           RFLAGS (ZF: writable)
#
# Registers are loaded with SENTINEL first: a slot still holding it means
# the instruction did not write. The VMM may trap and emulate any of them
# (CR4.UMIP, or its binary translator rewriting them); the guest cannot
# tell. It ends through the debug-exit port (status 1): `hlt` would fault.

	.set	RESULTS, 0x200000
	.set	SLOTS, 13
	.set	DEBUG_EXIT_PORT, 0xf4

	.code64
	.text
	.globl	_start
_start:
	mov	$RESULTS, %edi			# fill every slot with the sentinel
	mov	$SLOTS * 2, %ecx
	mov	sentinel(%rip), %rax
	rep stosq
	mov	$RESULTS, %ebx

	sgdt	0x00(%rbx)
	sidt	0x10(%rbx)

	mov	sentinel(%rip), %rax
	sldt	%rax
	mov	%rax, 0x20(%rbx)

	mov	sentinel(%rip), %rax
	smsw	%rax
	mov	%rax, 0x30(%rbx)

	mov	sentinel(%rip), %rax
	str	%rax
	mov	%rax, 0x40(%rbx)

	pushf
	pop	%rax
	mov	%rax, 0x50(%rbx)

	pushf					# flip IF with popf, read RFLAGS back
	pop	%rax
	mov	%rax, 0x60(%rbx)
	xor	$0x200, %rax
	push	%rax
	popf
	pushf
	pop	%rax
	mov	%rax, 0x68(%rbx)

	mov	sentinel(%rip), %rax
	mov	%cs, %eax
	mov	%rax, 0x70(%rbx)

	mov	sentinel(%rip), %rax
	mov	%ss, %eax
	mov	%rax, 0x80(%rbx)

	mov	$0x08, %ecx
	mov	sentinel(%rip), %rax
	lar	%cx, %eax
	mov	%rax, 0x90(%rbx)
	pushf
	pop	0x98(%rbx)

	mov	$0x10, %ecx
	mov	sentinel(%rip), %rax
	lsl	%cx, %eax
	mov	%rax, 0xa0(%rbx)
	pushf
	pop	0xa8(%rbx)

	mov	$0x08, %ecx
	verr	%cx
	pushf
	pop	0xb8(%rbx)

	mov	$0x10, %ecx
	verw	%cx
	pushf
	pop	0xc8(%rbx)

	xor	%eax, %eax
	out	%al, $DEBUG_EXIT_PORT
1:	jmp	1b				# not reached: the VMM ends the run

	.balign	8
sentinel:
	.quad	0x5a5a5a5a5a5a5a5a
