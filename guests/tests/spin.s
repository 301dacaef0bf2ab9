# spin.s - a guest that never exits on its own (for the --timeout test).
# Mode: "real" (16-bit, loaded and entered at 0x7c00).
# Prints "spinning\n" and then loops forever without halting.
	.code16
	.text
	.globl	_start
_start:
	cld
	mov	$msg, %si
	mov	$msg_len, %cx
	mov	$0x3f8, %dx
1:	lodsb
	out	%al, %dx
	loop	1b
2:	jmp	2b

msg:	.ascii	"spinning\n"
	.equ	msg_len, . - msg
