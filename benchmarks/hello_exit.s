# hello_exit.s - the start-up benchmark guest: hello.s that ends by itself.
# Mode: "real" (16-bit, loaded and entered at 0x7c00), as a boot sector under
# pyvmm or under QEMU+SeaBIOS (padded to 512 bytes with the 0x55aa signature
# at run time). Prints "Hello, world!\n" with one `out` per character to the
# UART at 0x3f8, then writes 0x2a to the debug-exit port 0xf4: exit status 85
# under pyvmm and under QEMU's isa-debug-exit, where `hlt` would never end.
	.code16
	.text
	.globl	_start
_start:
	cli
	cld
	xor	%ax, %ax		# a BIOS may jump here with any DS
	mov	%ax, %ds
	mov	$msg, %si
	mov	$msg_len, %cx
	mov	$0x3f8, %dx
1:	lodsb
	out	%al, %dx
	loop	1b
	mov	$0x2a, %al
2:	out	%al, $0xf4
	jmp	2b

msg:	.ascii	"Hello, world!\n"
	.equ	msg_len, . - msg
