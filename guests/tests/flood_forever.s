# flood_forever.s - a guest that writes to the serial port forever (for the
# test of a console whose reader went away, e.g. `pyvmm boot ... | head -c 100`).
# Mode: "real" (16-bit, loaded and entered at 0x7c00).
# Writes '#' to COM1 in a loop, without looking at the line status; never halts.
	.code16
	.text
	.globl	_start
_start:
	mov	$0x3f8, %dx
	mov	$'#', %al
1:	out	%al, %dx
	jmp	1b
