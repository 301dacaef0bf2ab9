# flood.s - a guest that floods the serial port (for the --console-rate test).
# Mode: "real" (16-bit, loaded and entered at 0x7c00).
# Writes 50,000 '#' to COM1 as fast as it can, without looking at the line
# status, then halts (exit status 0).
	.code16
	.text
	.globl	_start
_start:
	mov	$0x3f8, %dx
	mov	$'#', %al
	mov	$50000, %cx
1:	out	%al, %dx
	loop	1b
	hlt
