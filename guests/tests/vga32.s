# vga32.s - a 32-bit kernel that prints the way bare-bones kernels do: on the
# VGA text screen, never on a serial port.
# Mode: "protected" (flat segments, loaded and entered at 0x100000).
# Writes "Hello from 32-bit protected mode" in white on row 0 of the screen
# at 0xb8000 and "bye" on row 1, then writes 0 to the debug-exit port (exit
# status 1). `pyvmm boot` shows the screen on stderr when the run ends.
	.code32
	.text
	.globl	_start
_start:
	cld
	mov	$0xb8000, %edi		# row 0, column 0
	mov	$0x0f, %ah		# white on black
	mov	$hello, %esi
	call	puts
	mov	$0xb8000 + 160, %edi	# row 1
	mov	$0x07, %ah		# light grey on black
	mov	$bye, %esi
	call	puts
	xor	%al, %al
	out	%al, $0xf4		# debug-exit: status (0 << 1) | 1
	hlt

# Write the NUL-terminated string at %esi to %edi with attribute %ah.
puts:	lodsb
	test	%al, %al
	jz	1f
	stosw
	jmp	puts
1:	ret

hello:	.asciz	"Hello from 32-bit protected mode"
bye:	.asciz	"bye"
