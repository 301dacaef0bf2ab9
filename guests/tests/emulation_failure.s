# emulation_failure.s - makes KVM give up emulating (KVM_EXIT_INTERNAL_ERROR,
# suberror KVM_INTERNAL_ERROR_EMULATION), so pyvmm must report it and stop.
# Mode: "long" (64-bit CS at CPL0, identity-mapped low 4 GiB); position
# independent, so it runs at the default 0x100000 or wherever --load-addr puts it.
#
# Loaded at 0x100000 it prints "emulation_failure: fld from MMIO\n" and runs
# `flds` on the MMIO hole (0xd0000000, nothing mapped). KVM has to emulate any
# access to memory no slot backs, and its emulator has no x87 (the kernel's
# own selftests use this instruction for the purpose): on VT-x and AMD-V the
# access exits and KVM fails to emulate it; a backend that emulates CPL0 code
# (kvm_pvm) fails on the instruction itself. Either way at CPL0 KVM stops
# with the instruction's bytes (newer kernels) or without them (older ones).
#
# Loaded anywhere else (e.g. --load-addr 0x200000) it prints
# "emulation_failure: jump to MMIO\n" and jumps into the MMIO hole: KVM must
# fetch the code to emulate it, and cannot, since no slot backs it. This is
# also where the first case ends up on a KVM that does emulate `flds`.
	.code64
	.text
	.globl	_start
	.equ	HOLE, 0xd0000000
	.equ	DEFAULT_LOAD, 0x100000
_start:
	lea	_start(%rip), %rax
	cmp	$DEFAULT_LOAD, %rax
	jne	jump_to_mmio

	lea	msg_fld(%rip), %rsi
	call	puts
	mov	$HOLE, %eax
	flds	(%rax)			# x87 load from MMIO: not emulated
	# Only a KVM that emulates it gets here: fall through to the jump.

jump_to_mmio:
	lea	msg_jump(%rip), %rsi
	call	puts
	mov	$HOLE, %eax
	jmp	*%rax			# code outside RAM: cannot be fetched

msg_fld:  .asciz "emulation_failure: fld from MMIO\n"
msg_jump: .asciz "emulation_failure: jump to MMIO\n"

	.include "print64.inc"
