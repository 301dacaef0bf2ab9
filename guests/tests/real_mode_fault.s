# real_mode_fault.s - a CPU exception in real mode with no handler in the IVT.
# Mode: "real" (16-bit, loaded and entered at 0x7c00).
# Prints "about to execute ud2\n" on COM1, then executes ud2: #UD (vector 6)
# goes through the IVT. Under a BIOS the vector points at a bare iret, which
# returns to the ud2, forever; pyvmm's no-BIOS stub tells the exception from
# an `int 6` and ends the run (unhandled-exception, exit status 12).
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
	ud2
	hlt				# not reached

msg:	.ascii	"about to execute ud2\n"
	.equ	msg_len, . - msg
