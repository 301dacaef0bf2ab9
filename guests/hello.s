# hello.s - smallest guest: proves real-mode entry and UART output.
# Mode: "real" (16-bit, CS=DS=0, loaded and entered at 0x7c00).
# Prints "Hello, world!\n" with exactly one `out %al, %dx` per character,
# then halts (exit status 0).
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
	hlt

msg:	.ascii	"Hello, world!\n"
	.equ	msg_len, . - msg
