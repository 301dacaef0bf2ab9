# bios_pic.s - a boot sector that relies on the 8259 PICs as a BIOS leaves
# them: it reads their masks, then unmasks IRQ 4 alone and takes COM1's
# transmitter-empty interrupt through the IVT, at whatever vector the master
# PIC's base makes it. Every vector of the PC's IRQs (0x08-0x0f, 0x70-0x77)
# gets a handler that records its number.
#
#   qemu-system-x86_64 -accel tcg -display none -serial stdio -no-reboot \
#       -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
#       -drive file=guests/tests/bios_pic.bin,format=raw,if=floppy
#   pyvmm boot guests/tests/bios_pic.bin
#
# Prints the masks ("pic masks: master=fb slave=ff": SeaBIOS's pic_setup;
# under QEMU its drivers have unmasked more by the time the sector runs),
# then "irq 4 at vector 0c", and ends through debug-exit with 0 (status 1),
# or 1 if no interrupt came within a while (status 3).
	.code16
	.text
	.globl	_start
_start:
	cli
	xor	%ax, %ax
	mov	%ax, %ds
	mov	%ax, %es
	mov	%ax, %ss
	mov	$0x7c00, %sp

	mov	$masks, %si
	call	puts
	in	$0x21, %al
	call	puthex2
	mov	$slave, %si
	call	puts
	in	$0xa1, %al
	call	puthex2
	mov	$newline, %si
	call	puts

	# IVT entries 0x08-0x0f and 0x70-0x77 -> stubs that push their vector.
	mov	$0x08 * 4, %di
	mov	$stubs, %ax
	mov	$8, %cx
1:	stosw				# offset
	movw	$0, (%di)		# segment 0
	add	$2, %di
	add	$stub_size, %ax
	loop	1b
	mov	$0x70 * 4, %di
	mov	$8, %cx
1:	stosw
	movw	$0, (%di)
	add	$2, %di
	add	$stub_size, %ax
	loop	1b

	mov	$0xef, %al		# OCW1: IRQ 4 alone (the timer stays masked)
	out	%al, $0x21
	mov	$0xff, %al
	out	%al, $0xa1
	mov	$0x3fc, %dx		# MCR: DTR, RTS, OUT2 (OUT2 routes INTR to IRQ 4)
	mov	$0x0b, %al
	out	%al, %dx
	mov	$0x3f9, %dx		# IER.ETBEI with THR empty: THRE pending at once
	mov	$0x02, %al
	out	%al, %dx

	mov	$0xffff, %cx		# a lost interrupt fails instead of hanging
2:	sti
	nop
	cli
	cmpb	$0, seen
	jne	3f
	loop	2b
	mov	$none, %si
	call	puts
	mov	$1, %al
	out	%al, $0xf4
	hlt

3:	mov	$irq4, %si
	call	puts
	mov	seen, %al
	call	puthex2
	mov	$newline, %si
	call	puts
	xor	%al, %al
	out	%al, $0xf4
	hlt

# The stubs: `push $vector; jmp common`, 4 bytes each.
	.set	stub_size, 4
stubs:
	.irp	vector, 0x08,0x09,0x0a,0x0b,0x0c,0x0d,0x0e,0x0f,0x70,0x71,0x72,0x73,0x74,0x75,0x76,0x77
	.byte	0x6a, \vector		# push imm8
	jmp	common
	.endr

common:
	push	%ax
	push	%bp
	mov	%sp, %bp
	mov	4(%bp), %al		# the vector
	mov	%al, seen
	push	%dx
	mov	$0x3f9, %dx		# IER = 0: no more interrupts from COM1
	xor	%al, %al
	out	%al, %dx
	mov	$0x3fa, %dx		# reading IIR acknowledges THRE
	in	%dx, %al
	pop	%dx
	mov	$0x20, %al		# EOI to both PICs
	out	%al, $0xa0
	out	%al, $0x20
	pop	%bp
	pop	%ax
	add	$2, %sp			# the pushed vector
	iret

# puts: the NUL-terminated string at %si on COM1. Clobbers %al, %dx, %si.
puts:
	mov	$0x3f8, %dx
1:	lodsb
	test	%al, %al
	jz	2f
	out	%al, %dx
	jmp	1b
2:	ret

# puthex2: %al as two hex digits. Clobbers %ax, %dx.
puthex2:
	mov	$0x3f8, %dx
	mov	%al, %ah
	shr	$4, %al
	call	1f
	mov	%ah, %al
	and	$0x0f, %al
1:	add	$'0', %al
	cmp	$'9', %al
	jbe	2f
	add	$'a' - '9' - 1, %al
2:	out	%al, %dx
	ret

masks:	.asciz	"pic masks: master="
slave:	.asciz	" slave="
irq4:	.asciz	"irq 4 at vector "
none:	.asciz	"no interrupt came\n"
newline: .asciz	"\n"
seen:	.byte	0

	.org	510
	.byte	0x55, 0xaa
