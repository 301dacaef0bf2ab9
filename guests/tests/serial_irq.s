# serial_irq.s - COM1's interrupts through the 8259 PIC, from a multiboot kernel:
# the transmitter-empty interrupt (IIR 0x02) when IER.ETBEI is set, then a line
# sent by THRE interrupts, then two lines of host input taken by the receive
# interrupts: data available (IIR 0x04) with the FIFO trigger level at 1, the
# character timeout indication (IIR 0x0c) with it at 14.
#
#   qemu-system-x86_64 -accel tcg -display none -serial stdio -no-reboot \
#       -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
#       -kernel guests/tests/serial_irq.elf
#   pyvmm boot guests/tests/serial_irq.elf
#
# After each "ready: ..." line the guest waits in `sti; hlt` for one line of
# input on COM1 (type it, or pipe two lines). Each check prints "name=value ok"
# or "name=value FAIL want=expected"; the run ends through debug-exit with the
# number of failed checks (status 1 when all pass). How many receive
# interrupts a line takes depends on how the host hands its bytes over, so
# only whether any came of each kind is checked.
	.set	MB_MAGIC, 0x1badb002
	.set	MB_FLAGS, 0x3
	.set	IDT, 0x200000		# 256 gates, in RAM above the kernel
	.set	PIC_BASE, 0x20		# vectors 0x20-0x27 (master), 0x28-0x2f (slave)
	.set	COM1, 0x3f8
	.set	IER, COM1 + 1
	.set	IIR, COM1 + 2		# FCR when written
	.set	LCR, COM1 + 3
	.set	MCR, COM1 + 4
	.set	LSR, COM1 + 5
	.set	IER_RDI, 0x01		# ERBFI
	.set	IER_THRI, 0x02		# ETBEI
	.set	LSR_DR, 0x01
	.code32
	.text
	.globl	_start
	.align	4
	.long	MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

# CHECK name, want: compare %eax with want, print the line, count a failure.
.macro	CHECK name, want
	.pushsection .rodata
str\@:	.asciz	"\name"
	.popsection
	push	$\want
	push	$str\@
	call	check
	add	$8, %esp
.endm

# WAIT flag: sleep until the interrupt handler sets the byte `flag`.
.macro	WAIT flag
1:	sti
	hlt			# sti's shadow: no interrupt slips in before the hlt
	cli
	cmpb	$0, \flag
	je	1b
.endm

_start:
	mov	$0x80000, %esp		# the loader leaves ESP undefined
	cli
	call	setup_idt
	call	setup_pic
	# 8N1, 115200 baud, FIFOs on and cleared (trigger level 1), OUT2 on: the
	# UART's interrupt reaches IRQ 4 only through OUT2 on a PC.
	mov	$LCR, %dx
	mov	$0x80, %al
	out	%al, %dx
	mov	$COM1, %dx
	mov	$1, %al
	out	%al, %dx
	mov	$IER, %dx
	xor	%al, %al
	out	%al, %dx
	mov	$LCR, %dx
	mov	$0x03, %al
	out	%al, %dx
	mov	$IIR, %dx
	mov	$0x07, %al
	out	%al, %dx
	mov	$MCR, %dx
	mov	$0x0b, %al		# DTR, RTS, OUT2
	out	%al, %dx

	# --- 1: ETBEI set while THR is empty raises the THRE interrupt at once
	movl	$0, thre
	movb	$0, tx_done
	mov	$IER_THRI, %al
	call	set_ier
	WAIT	tx_done
	mov	thre, %eax
	CHECK	"thre interrupts on enable", 1

	# --- 2: a line sent one character per THRE interrupt
	movl	$message, tx_next
	movl	$0, thre
	movb	$0, tx_done
	mov	$IER_THRI, %al
	call	set_ier
	WAIT	tx_done
	mov	thre, %eax
	CHECK	"thre interrupts for the line", (message_end-message+1)

	# --- 3: a line of input, FIFO trigger level 1: data available
	mov	$ready_rda, %esi
	call	puts
	call	receive_line
	mov	rda, %eax
	test	%eax, %eax
	setnz	%al
	movzx	%al, %eax
	CHECK	"any data-available interrupts", 1
	mov	cti, %eax
	CHECK	"timeout interrupts", 0

	# --- 4: trigger level 14 and a shorter line: the character timeout
	mov	$IIR, %dx
	mov	$0xc7, %al		# FIFOs on and cleared, trigger level 14
	out	%al, %dx
	mov	$ready_cti, %esi
	call	puts
	call	receive_line
	mov	cti, %eax
	test	%eax, %eax
	setnz	%al
	movzx	%al, %eax
	CHECK	"any timeout interrupts", 1
	mov	rda, %eax
	CHECK	"data-available interrupts", 0

	mov	spurious, %eax
	CHECK	"other interrupts", 0
	mov	failures, %eax
	out	%eax, $0xf4
	hlt

# receive_line: count the receive interrupts of one line (to '\n'), print it.
receive_line:
	movl	$0, rda
	movl	$0, cti
	movl	$line, rx_next
	movb	$0, rx_done
	mov	$IER_RDI, %al
	call	set_ier
	WAIT	rx_done
	xor	%al, %al
	call	set_ier
	mov	rx_next, %edi
	movb	$0, (%edi)
	mov	$received, %esi
	call	puts
	mov	$line, %esi
	call	puts
	ret

# set_ier: IER = %al (the handler reads it back from `ier`). Clobbers %edx.
set_ier:
	mov	%al, ier
	mov	$IER, %dx
	out	%al, %dx
	ret

# --- interrupts ------------------------------------------------------------

# The handlers return with IRET_SAME_LEVEL, not iret: on a host whose KVM
# emulates CPL0 code (kvm_pvm), KVM's emulator has a real-mode IRET only.
.macro	IRET_SAME_LEVEL
	push	8(%esp)			# the frame's EFLAGS (no privilege change: EIP, CS, EFLAGS)
	popf
	ret	$8			# EIP; then drop CS and EFLAGS
.endm

com1_irq:
	push	%eax
	push	%edx
	push	%edi
1:	mov	$IIR, %dx
	in	%dx, %al
	and	$0x0f, %al
	cmp	$0x01, %al		# no interrupt pending (any more)
	je	9f
	cmp	$0x02, %al
	je	2f
	cmp	$0x04, %al
	je	3f
	cmp	$0x0c, %al
	je	4f
	incl	spurious		# line or modem status: not enabled here
	jmp	9f
2:	incl	thre			# reading IIR acknowledged it
	mov	tx_next, %edi
	test	%edi, %edi
	jz	5f
	mov	(%edi), %al
	test	%al, %al
	jz	5f
	incl	tx_next
	mov	$COM1, %dx
	out	%al, %dx		# THR empties again: the next THRE interrupt
	jmp	1b
5:	movl	$0, tx_next		# nothing left to send: ETBEI off
	movb	$1, tx_done
	mov	ier, %al
	and	$~IER_THRI, %al
	mov	%al, ier
	mov	$IER, %dx
	out	%al, %dx
	jmp	1b
3:	incl	rda
	jmp	6f
4:	incl	cti
6:	mov	$LSR, %dx		# take every character there is
	in	%dx, %al
	test	$LSR_DR, %al
	jz	1b
	mov	$COM1, %dx
	in	%dx, %al
	cmp	$'\r', %al
	je	6b
	mov	rx_next, %edi
	cmp	$line_end, %edi
	jae	7f
	mov	%al, (%edi)
	incl	rx_next
7:	cmp	$'\n', %al
	jne	6b
	movb	$1, rx_done
	jmp	6b
9:	mov	$0x20, %al		# non-specific EOI to the master
	out	%al, $0x20
	pop	%edi
	pop	%edx
	pop	%eax
	IRET_SAME_LEVEL

other_irq:
	push	%eax
	incl	spurious
	mov	$0x20, %al
	out	%al, $0xa0
	out	%al, $0x20
	pop	%eax
	IRET_SAME_LEVEL

exception:
	mov	$fault, %esi
	call	puts
	mov	$0x7f, %al
	out	%al, $0xf4
	hlt

# setup_pic: ICW1-4 on both 8259As (bases 0x20/0x28, the slave on IRQ 2),
# then every IRQ masked but 4 (COM1).
setup_pic:
	mov	$0x11, %al		# ICW1: edge, cascade, ICW4 follows
	out	%al, $0x20
	out	%al, $0xa0
	mov	$PIC_BASE, %al		# ICW2: vector bases
	out	%al, $0x21
	mov	$PIC_BASE + 8, %al
	out	%al, $0xa1
	mov	$0x04, %al		# ICW3: the slave on IRQ 2
	out	%al, $0x21
	mov	$0x02, %al
	out	%al, $0xa1
	mov	$0x01, %al		# ICW4: 8086 mode, normal EOI
	out	%al, $0x21
	out	%al, $0xa1
	mov	$0xef, %al		# OCW1: IRQ 4 only
	out	%al, $0x21
	mov	$0xff, %al
	out	%al, $0xa1
	ret

# setup_idt: exceptions to `exception`, the PIC's vectors to `other_irq`,
# IRQ 4 to `com1_irq`; lidt.
setup_idt:
	mov	$IDT, %edi
	mov	$exception, %eax
	mov	$32, %ecx
1:	call	set_gate
	loop	1b
	mov	$other_irq, %eax
	mov	$16, %ecx
1:	call	set_gate
	loop	1b
	mov	$IDT + 8 * (PIC_BASE + 4), %edi
	mov	$com1_irq, %eax
	call	set_gate
	lidt	idtr
	ret

# set_gate: a 32-bit interrupt gate at %edi to handler %eax in the current
# CS; %edi moves to the next gate. Clobbers %edx.
set_gate:
	push	%eax
	mov	%ax, (%edi)
	mov	%cs, %dx
	mov	%dx, 2(%edi)
	shr	$16, %eax
	mov	%ax, 6(%edi)
	movw	$0x8e00, 4(%edi)	# present, DPL 0, 32-bit interrupt gate
	add	$8, %edi
	pop	%eax
	ret

# check: print "name=%eax ok" or "... FAIL want=W" for the pushed name and W.
check:
	push	%ebx
	mov	%eax, %ebx
	mov	8(%esp), %esi
	call	puts
	mov	$'=', %al
	call	putc
	mov	%ebx, %eax
	call	putdec
	cmp	12(%esp), %ebx
	jne	1f
	mov	$ok, %esi
	call	puts
	pop	%ebx
	ret
1:	incl	failures
	mov	$bad, %esi
	call	puts
	mov	12(%esp), %eax
	call	putdec
	mov	$'\n', %al
	call	putc
	pop	%ebx
	ret

# putdec: %eax in decimal. Clobbers %eax, %ecx, %edx.
putdec:
	push	%ebx
	mov	$10, %ebx
	xor	%ecx, %ecx
1:	xor	%edx, %edx
	div	%ebx
	push	%edx
	inc	%ecx
	test	%eax, %eax
	jnz	1b
2:	pop	%eax
	add	$'0', %al
	call	putc
	loop	2b
	pop	%ebx
	ret

	.include "print32.inc"

	.section .rodata
idtr:	.word	256 * 8 - 1
	.long	IDT
message: .ascii	"sent by THRE interrupts\n"
message_end:
	.byte	0
ready_rda: .asciz "ready: a line, FIFO trigger level 1\n"
ready_cti: .asciz "ready: a shorter line, FIFO trigger level 14\n"
received: .asciz "received: "
ok:	.asciz	" ok\n"
bad:	.asciz	" FAIL want="
fault:	.asciz	"serial_irq: unexpected exception\n"

	.data
failures: .long	0
thre:	.long	0
rda:	.long	0
cti:	.long	0
spurious: .long	0
tx_next: .long	0
rx_next: .long	0
tx_done: .byte	0
rx_done: .byte	0
ier:	.byte	0
line:	.fill	64, 1, 0
line_end:
	.byte	0
