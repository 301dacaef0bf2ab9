# boot.s - a real-mode guest for pyvmm: a 512-byte boot sector in GNU as.
#
# Build:  make -C guests/template            (gives guests/template/boot.bin)
# Boot:   pyvmm boot guests/template/boot.bin
#
# It prints its entry state on COM1, then ends the run through the
# debug-exit port with the value 0x10, so pyvmm exits with status
# (0x10 << 1) | 1 = 33.
#
# What pyvmm guarantees at entry (a flat binary with no --mode; see the
# "Writing your own guest" section of README.md):
#   - 16-bit real mode, CR0.PE=0, loaded and entered at 0x7c00 with
#     CS=DS=ES=FS=GS=SS=0 (selectors and bases), IP=0x7c00, SP=0x7c00;
#   - FLAGS=0x0002: interrupts off (IF=0), DF=0;
#   - general registers zero (a BIOS would leave the boot drive in DL);
#   - no BIOS: no video, disk or keyboard service answers `int $0x10`,
#     `int $0x13` or `int $0x16` (INT10 below shows what the vector holds).
#     Talk to the devices directly: COM1 (16550A) at 0x3f8, debug-exit at
#     0xf4, QEMU's fw_cfg at 0x510/0x511.
#   - RAM is all of the first megabyte (no VGA window, no ROM at 0xa0000-
#     0xfffff). Nothing checks the 0xaa55 signature, and the file may be
#     longer than 512 bytes: pyvmm copies all of it to 0x7c00 (it must end
#     below 1 MiB; code past 0xffff needs another CS).
#
# The 0xaa55 signature and the far jump below make the same sector boot on
# a PC BIOS too (e.g. `qemu-system-x86_64 -drive file=boot.bin,format=raw
# -serial stdio -display none -device isa-debug-exit,iobase=0xf4,iosize=4`),
# where the entry values it prints differ: that is the point of printing them.

	.code16
	.text
	.globl	_start

	.equ	COM1, 0x3f8
	.equ	COM1_LSR, COM1 + 5	# line status register
	.equ	LSR_THRE, 0x20		# transmitter holding register empty
	.equ	DEBUG_EXIT, 0xf4
	.equ	EXIT_VALUE, 0x10	# exit status (0x10 << 1) | 1 = 33

_start:
	# Save what we were entered with before changing anything.
	pushf
	push	%ss
	push	%ds
	push	%cs
	# A BIOS may enter at 07c0:0000 instead of 0000:7c00; make CS=0 either way.
	ljmp	$0, $1f
1:	xor	%ax, %ax
	mov	%ax, %ds
	mov	%ax, %es
	cld

	mov	$msg_hello, %si
	call	puts

	mov	$msg_cs, %si
	call	puts
	pop	%ax			# CS
	call	puthex16
	mov	$msg_ds, %si
	call	puts
	pop	%ax			# DS
	call	puthex16
	mov	$msg_ss, %si
	call	puts
	pop	%ax			# SS
	call	puthex16
	mov	$msg_flags, %si
	call	puts
	pop	%ax			# FLAGS
	call	puthex16
	mov	$msg_sp, %si
	call	puts
	mov	%sp, %ax		# everything pushed is popped: SP as entered
	call	puthex16
	mov	$msg_cr0, %si
	call	puts
	mov	%cr0, %eax		# readable in real mode: we run at privilege level 0
	ror	$16, %eax
	call	puthex16
	ror	$16, %eax
	call	puthex16
	mov	$msg_ivt, %si
	call	puts
	mov	0x10 * 4 + 2, %ax	# the IVT entry of int 0x10 (a BIOS's video service)
	call	puthex16
	mov	$':', %al
	call	putc
	mov	0x10 * 4, %ax
	call	puthex16
	mov	$'\n', %al
	call	putc

	# End the run: pyvmm exits with status (EXIT_VALUE << 1) | 1.
	mov	$EXIT_VALUE, %al
	out	%al, $DEBUG_EXIT
	# Not reached under pyvmm. Without a debug-exit device, stop here.
2:	cli
	hlt
	jmp	2b

# putc: write %al to COM1 once the transmitter can take it. Keeps all registers.
putc:
	push	%dx
	push	%ax
	mov	$COM1_LSR, %dx
1:	in	%dx, %al
	test	$LSR_THRE, %al
	jz	1b
	pop	%ax
	mov	$COM1, %dx
	out	%al, %dx
	pop	%dx
	ret

# puts: write the NUL-terminated string at %ds:%si. Clobbers %si.
puts:
	push	%ax
1:	lodsb
	test	%al, %al
	jz	2f
	call	putc
	jmp	1b
2:	pop	%ax
	ret

# puthex16: write %ax as four lowercase hex digits. Keeps all registers.
puthex16:
	push	%ax
	push	%bx
	push	%cx
	mov	%ax, %bx
	mov	$4, %cx
1:	rol	$4, %bx
	mov	%bl, %al
	and	$0x0f, %al
	add	$'0', %al
	cmp	$'9', %al
	jbe	2f
	add	$'a' - '9' - 1, %al
2:	call	putc
	loop	1b
	pop	%cx
	pop	%bx
	pop	%ax
	ret

msg_hello:	.asciz	"boot: hello from real mode\n"
msg_cs:		.asciz	"boot: CS="
msg_ds:		.asciz	" DS="
msg_ss:		.asciz	" SS="
msg_flags:	.asciz	" FLAGS="
msg_sp:		.asciz	" SP="
msg_cr0:	.asciz	" CR0="
msg_ivt:	.asciz	" INT10="

	.org	510
	.word	0xaa55			# the boot signature a BIOS looks for
