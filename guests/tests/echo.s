# echo.s - a guest that reads COM1 and echoes it (for the console input tests).
# Mode: "real" (16-bit, loaded and entered at 0x7c00).
# Prints "ready\n", then polls the line status register and writes every byte
# it receives back out, until it receives 'q': then it halts (exit status 0).
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

wait:	mov	$0x3fd, %dx		# LSR
	in	%dx, %al
	test	$1, %al			# DR: a byte is waiting
	jz	wait
	mov	$0x3f8, %dx		# RBR
	in	%dx, %al
	cmp	$'q', %al
	je	done
	out	%al, %dx		# THR
	jmp	wait
done:	hlt

msg:	.ascii	"ready\n"
	.equ	msg_len, . - msg
