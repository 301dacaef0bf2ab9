# rep_io.s - exercises string port I/O of every size (and plain in).
# Mode: "real" (16-bit, DS=ES=0, loaded and entered at 0x7c00).
# A wide write to the UART at 0x3f8 behaves as on an ISA bus: the low byte
# goes to the data register (THR), the next bytes to the registers above it
# (IER, FCR, LCR).  So every word/dword written here holds one character in
# its low byte and zeros above it, which leaves IER, FCR and LCR at their
# power-on value of 0.
#   rep outsb "outsb\n"  to the UART: 6 byte writes
#   rep outsw "outsw\n"  to the UART: 6 word writes, one character each
#   rep outsl "outsd\n"  to the UART: 6 dword writes, one character each
#   rep insb/insw/insl, 4 units each, from the unassigned port 0x2f0 into a
#   zeroed buffer, plus single in %al/%ax/%eax from 0x2f0: every byte read
#   must be 0xff.  Then prints "ins ok\n" (or "ins BAD\n") and halts.
# Expected output: "outsb\noutsw\noutsd\nins ok\n", exit status 0.
	.code16
	.text
	.globl	_start
	.equ	UART, 0x3f8
	.equ	NOPORT, 0x2f0
	.equ	BUFLEN, 4 * 1 + 4 * 2 + 4 * 4
_start:
	cld
	mov	$UART, %dx
	mov	$s_outsb, %si
	mov	$6, %cx
	rep outsb
	mov	$s_outsw, %si
	mov	$6, %cx
	rep outsw
	mov	$s_outsd, %si
	mov	$6, %cx
	rep outsl

	mov	$buf, %di		# zero the buffer
	mov	$BUFLEN, %cx
	xor	%al, %al
	rep stosb

	mov	$NOPORT, %dx
	mov	$buf, %di
	mov	$4, %cx
	rep insb
	mov	$4, %cx
	rep insw
	mov	$4, %cx
	rep insl
	cmp	$buf + BUFLEN, %di	# all 28 bytes stored?
	jne	bad

	mov	$0xff, %bl		# AND of every byte read
	mov	$buf, %si
	mov	$BUFLEN, %cx
1:	lodsb
	and	%al, %bl
	loop	1b
	in	%dx, %al
	and	%al, %bl
	in	%dx, %ax
	and	%al, %bl
	and	%ah, %bl
	in	%dx, %eax
	cmp	$0xffffffff, %eax
	jne	bad
	cmp	$0xff, %bl
	jne	bad
	mov	$s_ok, %si
	mov	$s_ok_len, %cx
	jmp	2f
bad:	mov	$s_bad, %si
	mov	$s_bad_len, %cx
2:	mov	$UART, %dx
	rep outsb
	hlt

s_outsb: .ascii	"outsb\n"
s_outsw: .byte	'o',0, 'u',0, 't',0, 's',0, 'w',0, '\n',0
s_outsd: .byte	'o',0,0,0, 'u',0,0,0, 't',0,0,0, 's',0,0,0, 'd',0,0,0, '\n',0,0,0
s_ok:	.ascii	"ins ok\n"
	.equ	s_ok_len, . - s_ok
s_bad:	.ascii	"ins BAD\n"
	.equ	s_bad_len, . - s_bad
buf:					# BUFLEN bytes of scratch RAM past the image
