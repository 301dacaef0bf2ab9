# own_ivt.s - a boot sector that installs its own int 0x10 handler.
# Mode: "real" (16-bit, CS=DS=0, loaded and entered at 0x7c00).
# Its handler serves the teletype call (AH=0x0e) by writing AL to COM1, and
# hands every other call to the vector it replaced, as a TSR chains to the
# BIOS: pushf, then a far call through the saved vector. It sets the video
# mode (AH=0x00, chained) and prints "Hello from my own int 0x10\n" through
# int 0x10 AH=0x0e, then halts (exit status 0). Under pyvmm the saved vector is
# the no-BIOS stub: the chained call is counted and returns; the teletype
# calls never leave the guest.
	.code16
	.text
	.globl	_start
_start:
	cld
	xor	%ax, %ax
	mov	%ax, %ds
	mov	0x10 * 4, %ax		# save the old vector (offset, segment)
	mov	%ax, old_int10
	mov	0x10 * 4 + 2, %ax
	mov	%ax, old_int10 + 2
	movw	$handler, 0x10 * 4	# and install ours at 0000:handler
	movw	$0, 0x10 * 4 + 2

	mov	$0x0003, %ax		# AH=0x00 set video mode: chained
	int	$0x10
	mov	$msg, %si
1:	lodsb
	test	%al, %al
	jz	2f
	mov	$0x0e, %ah		# AH=0x0e teletype output: ours
	int	$0x10
	jmp	1b
2:	hlt

handler:
	cmp	$0x0e, %ah
	jne	chain
	push	%dx
	mov	$0x3f8, %dx
	out	%al, %dx
	pop	%dx
	iret
chain:
	pushf				# the old handler's iret pops these flags
	lcall	*%cs:old_int10
	iret

	.p2align 1
old_int10:
	.word	0, 0
msg:	.asciz	"Hello from my own int 0x10\n"
