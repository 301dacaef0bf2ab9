# assist_mmio.s - popcnt, an instruction of pyvmm's assist table, reads its
# operand from the MMIO hole, where no device is: pyvmm does not perform it.
# Mode: "long" (64-bit CS at CPL0, identity-mapped low 4 GiB).
#
#   pyvmm boot --mode long guests/tests/assist_mmio.bin
#
# Prints "assist_mmio: popcnt from MMIO\n", then runs `popcnt (0xd0000000),
# %rax`. KVM has to emulate it either way: on VT-x/AMD-V because the access
# exits as MMIO, on a KVM that emulates CPL0 code because that is how it runs
# all of it; its emulator has no popcnt and gives up. pyvmm's assist layer
# has popcnt but reads memory operands from RAM only, so the run ends as
# internal-error (status 6) naming popcnt and why it was not performed.
	.code64
	.text
	.globl	_start
	.equ	HOLE, 0xd0000000
_start:
	lea	msg(%rip), %rsi
	call	puts
	mov	$HOLE, %ebx
	popcnt	(%rbx), %rax
	mov	$0x2a, %al		# only if KVM or pyvmm performed it
	out	%al, $0xf4
	hlt

msg:	.asciz	"assist_mmio: popcnt from MMIO\n"

	.include "print64.inc"
