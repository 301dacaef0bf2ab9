# boot_timer.s - a guest that writes the boot timer's byte and halts.
# Mode: "real" (16-bit, loaded and entered at 0x7c00).
# Writes 7 to port 0x3f0 (not the magic: ignored), then 123 twice
# (Firecracker's boot-complete value: the first is the boot time, the
# second a later write), prints "booted\n" on COM1 and halts with
# interrupts off. `pyvmm boot --stats` then prints the boot time.
	.code16
	.text
	.globl	_start
_start:
	cld
	mov	$0x3f0, %dx
	mov	$7, %al
	out	%al, %dx
	mov	$123, %al
	out	%al, %dx
	out	%al, %dx
	mov	$msg, %si
	mov	$msg_len, %cx
	mov	$0x3f8, %dx
1:	lodsb
	out	%al, %dx
	loop	1b
	cli
2:	hlt
	jmp	2b

msg:	.ascii	"booted\n"
	.equ	msg_len, . - msg
