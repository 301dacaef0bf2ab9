# bios_teletype.s - a boot sector written for a PC BIOS: it prints through int 0x10.
# Mode: "real" (16-bit, CS=DS=0, loaded and entered at 0x7c00).
# Sets 80x25 text mode (int 0x10 AH=0x00), prints "Hello from int 0x10\r\n" one
# character at a time with the teletype service (int 0x10 AH=0x0e), waits for a
# key (int 0x16 AH=0x00), then halts. It never touches COM1: under a BIOS the
# text appears on the screen; pyvmm has no BIOS, returns from each call at once
# and names every service it was asked for (exit status 0).
	.code16
	.text
	.globl	_start
_start:
	cld
	xor	%ax, %ax
	mov	%ax, %ds
	mov	$0x0003, %ax		# AH=0x00 set video mode, AL=3: 80x25 colour text
	int	$0x10
	mov	$msg, %si
1:	lodsb
	test	%al, %al
	jz	2f
	mov	$0x0e, %ah		# AH=0x0e teletype output: AL = character
	xor	%bx, %bx		# BH = page 0
	int	$0x10
	jmp	1b
2:	xor	%ah, %ah		# AH=0x00 read keystroke
	int	$0x16
	hlt

msg:	.asciz	"Hello from int 0x10\r\n"
