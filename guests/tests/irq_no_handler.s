# irq_no_handler.s - a hardware interrupt at a vector the guest never set.
# Mode: "real" (16-bit, loaded and entered at 0x7c00), with the in-kernel PICs
# as a BIOS leaves them (IRQ 0-7 at vectors 0x08-0x0f, all masked).
# It unmasks IRQ 4 at the master PIC and turns on COM1's transmitter-empty
# interrupt (IER.ETBEI, MCR.OUT2), without setting vector 0x0c, then `sti`:
# COM1's interrupt reaches pyvmm's no-BIOS stub for 0x0c, which on a PC is
# both IRQ 4 and the #SS exception. The PIC has IRQ 4 in service, so it is the
# IRQ: pyvmm sends the EOI a BIOS's default handler would and returns; the
# guest prints "survived the interrupt" and ends through debug-exit with 0x10
# (exit status 33). Taken for #SS, the run would end as unhandled-exception.
	.code16
	.text
	.globl	_start
_start:
	cli
	in	$0x21, %al
	and	$0xef, %al		# unmask IRQ 4 (COM1)
	out	%al, $0x21
	mov	$0x3fc, %dx		# MCR: DTR, RTS, OUT2 (routes INTR to IRQ 4)
	mov	$0x0b, %al
	out	%al, %dx
	mov	$0x3f9, %dx		# IER: transmitter holding register empty
	mov	$0x02, %al
	out	%al, %dx
	sti
	hlt				# the pending interrupt wakes it (and comes here)
	cli
	mov	$0x3f9, %dx		# IER off: no more interrupts
	xor	%al, %al
	out	%al, %dx
	cld
	mov	$msg, %si
	mov	$msg_len, %cx
	mov	$0x3f8, %dx
1:	lodsb
	out	%al, %dx
	loop	1b
	mov	$0x10, %al
	out	%al, $0xf4
	hlt

msg:	.ascii	"survived the interrupt\n"
	.equ	msg_len, . - msg
