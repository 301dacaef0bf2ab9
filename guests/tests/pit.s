# pit.s - the PC's 8254 PIT (ports 0x40-0x43) and port 0x61, driven as
# Linux's drivers/clocksource/i8253.c and arch/x86/kernel/tsc.c drive them.
# A multiboot kernel, so that QEMU and pyvmm boot the same bytes and print
# the same lines:
#
#   qemu-system-x86_64 -nodefaults -accel tcg -display none -serial stdio \
#       -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=0x04 -m 128M \
#       -kernel guests/tests/pit.elf
#   pyvmm boot -m 128M guests/tests/pit.elf                 (pyvmm's 8254)
#   pyvmm boot -m 128M --pit kernel guests/tests/pit.elf    (KVM's PIT)
#   pyvmm boot -m 128M --pit-scale 10 guests/tests/pit.elf  (ten times slower)
#
# It prints:
#   pit: status 34 36 1a              read-back status (OUT and NULL COUNT
#                                     masked) of counter 0 after 0x34 (LSB
#                                     then MSB, mode 2), counter 2 after 0xb6
#                                     (mode 3), counter 2 after 0x9a (LSB
#                                     only, mode 5 as 0x9a says it)
#   pit: latch holds                  a count latched, read 1 ms later, is
#                                     1193 or more above a second latch
#   pit: out2 rises                   counter 2 in mode 0 with its gate on
#                                     (port 0x61 bit 0): bit 5 of port 0x61
#                                     goes high at the terminal count, as
#                                     pit_calibrate_tsc polls it
#   pit: irq0 5 periodic              IRQ 0 at 100 Hz (mode 2, count 11932)
#                                     through the master PIC, vector 0x20
#   pit: irq0 1 one-shot              mode 4 (Linux's oneshot): one interrupt,
#                                     and none more in the next 50 ms
#   pit: done
# and ends through the debug-exit port with 0x10 (exit status 33). An
# unexpected interrupt or exception prints "pit: unexpected interrupt" and
# ends with 0x7f (status 255); a wait that never ends prints "pit: stuck"
# and ends with 0x7e (status 253). Its IRQ 0 needs an interrupt controller
# (under pyvmm, any --kernel-irqchip but off).
	.set	MB_MAGIC, 0x1badb002
	.set	MB_FLAGS, 0x3
	.set	PIT_CH0, 0x40
	.set	PIT_CH2, 0x42
	.set	PIT_MODE, 0x43
	.set	PORT_B, 0x61
	.set	PIT_VECTOR, 0x20
	.set	IDT_ENTRIES, 0x30
	.set	LATCH_100HZ, 11932
	.set	ONE_MS, 1193
	.set	IRQS, 5
	.set	SPIN, 100000000		# polls before a wait is declared stuck
	.code32
	.text
	.globl	_start
	.align	4
	.long	MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

_start:
	mov	$stack_top, %esp
	lgdt	gdt_desc
	ljmp	$0x08, $1f
1:	mov	$0x10, %ax
	mov	%ax, %ds
	mov	%ax, %es
	mov	%ax, %ss
	mov	%ax, %fs
	mov	%ax, %gs

	# Read-back status of three programs.
	mov	$s_status, %esi
	call	puts
	mov	$0x34, %al
	out	%al, $PIT_MODE
	mov	$0x34, %al
	out	%al, $PIT_CH0
	mov	$0x12, %al
	out	%al, $PIT_CH0
	mov	$0xe2, %al		# read-back: status of counter 0
	call	status
	mov	$' ', %al
	call	putc
	mov	$0xb6, %al
	out	%al, $PIT_MODE
	mov	$0xe8, %al		# read-back: status of counter 2
	call	status
	mov	$' ', %al
	call	putc
	mov	$0x9a, %al
	out	%al, $PIT_MODE
	mov	$0xe8, %al
	call	status
	call	newline

	# A count latched, read 1 ms later, is the count of then: a second
	# latch now is at least 1193 lower (counter 0, mode 2, count 65536).
	mov	$0x34, %al
	out	%al, $PIT_MODE
	xor	%al, %al
	out	%al, $PIT_CH0
	out	%al, $PIT_CH0
	mov	$0x00, %al		# counter latch command, counter 0
	out	%al, $PIT_MODE
	call	wait_1ms
	in	$PIT_CH0, %al
	mov	%al, %bl
	in	$PIT_CH0, %al
	mov	%al, %bh
	mov	$0x00, %al
	out	%al, $PIT_MODE
	in	$PIT_CH0, %al
	mov	%al, %cl
	in	$PIT_CH0, %al
	mov	%al, %ch
	sub	%cx, %bx		# the clocks between the two latches
	mov	$s_latch, %esi
	cmp	$ONE_MS, %bx
	jae	1f
	mov	$s_no_latch, %esi
1:	call	puts

	# Counter 2's OUT at port 0x61, as the TSC calibration waits for it.
	call	wait_1ms
	mov	$s_out2, %esi
	call	puts

	# IRQ 0 at 100 Hz through the master PIC.
	call	setup_idt
	call	setup_pics
	mov	$0x34, %al
	out	%al, $PIT_MODE
	mov	$LATCH_100HZ & 0xff, %al
	out	%al, $PIT_CH0
	mov	$LATCH_100HZ >> 8, %al
	out	%al, $PIT_CH0
1:	cli
	cmpl	$IRQS, irq_count
	jae	2f
	sti
	hlt
	jmp	1b
2:	mov	$0x30, %al		# counter 0 to mode 0 with no count: no more ticks
	out	%al, $PIT_MODE
	mov	$s_periodic, %esi
	call	puts

	# Mode 4, one 10 ms count: one interrupt, then quiet.
	movl	$0, irq_count
	mov	$0x38, %al		# counter 0, LSB then MSB, mode 4
	out	%al, $PIT_MODE
	mov	$LATCH_100HZ & 0xff, %al
	out	%al, $PIT_CH0
	mov	$LATCH_100HZ >> 8, %al
	out	%al, $PIT_CH0
1:	cli
	cmpl	$1, irq_count
	jae	2f
	sti
	hlt
	jmp	1b
2:	sti
	mov	$50, %edi
3:	call	wait_1ms
	dec	%edi
	jnz	3b
	cli
	mov	$s_oneshot, %esi
	call	puts
	mov	irq_count, %eax
	mov	$1, %ecx
	call	puthex
	mov	$s_oneshot_end, %esi
	call	puts

	mov	$s_done, %esi
	call	puts
	mov	$0x10, %al
	out	%al, $0xf4
	hlt

# status: the read-back command %al to port 0x43, then counter 0's or 2's
# status byte (from the counter the command names), OUT and NULL COUNT masked.
status:
	out	%al, $PIT_MODE
	test	$0x08, %al
	jnz	1f
	in	$PIT_CH0, %al
	jmp	2f
1:	in	$PIT_CH2, %al
2:	and	$0x3f, %al
	movzbl	%al, %eax
	mov	$2, %ecx
	jmp	puthex

# wait_1ms: counter 2 in mode 0 for 1193 clocks with its gate on and the
# speaker off; poll port 0x61 bit 5 (OUT 2) until it rises.  Clobbers %eax, %ecx.
wait_1ms:
	in	$PORT_B, %al
	and	$0xfc, %al
	or	$0x01, %al
	out	%al, $PORT_B
	mov	$0xb0, %al		# counter 2, LSB then MSB, mode 0
	out	%al, $PIT_MODE
	mov	$ONE_MS & 0xff, %al
	out	%al, $PIT_CH2
	mov	$ONE_MS >> 8, %al
	out	%al, $PIT_CH2
	mov	$SPIN, %ecx
1:	in	$PORT_B, %al
	test	$0x20, %al
	jnz	2f
	dec	%ecx
	jnz	1b
	mov	$s_stuck, %esi
	call	puts
	mov	$0x7e, %al
	out	%al, $0xf4
	hlt
2:	ret

newline:
	mov	$'\n', %al
	jmp	putc

setup_idt:
	mov	$idt, %edi
	xor	%ecx, %ecx
1:	mov	$unexpected, %eax
	cmp	$PIT_VECTOR, %ecx
	jne	2f
	mov	$pit_irq, %eax
2:	mov	%eax, %edx
	and	$0xffff, %eax
	or	$0x08 << 16, %eax		# code selector 0x08
	and	$0xffff0000, %edx
	or	$0x8e00, %edx			# present, DPL 0, 32-bit interrupt gate
	mov	%eax, (%edi,%ecx,8)
	mov	%edx, 4(%edi,%ecx,8)
	inc	%ecx
	cmp	$IDT_ENTRIES, %ecx
	jb	1b
	lidt	idt_desc
	ret

# setup_pics: master at vector 0x20, slave at 0x28; everything masked but IRQ 0.
setup_pics:
	mov	$0x11, %al			# ICW1: edge, cascade, ICW4 follows
	out	%al, $0x20
	out	%al, $0xa0
	mov	$0x20, %al			# ICW2: vector bases
	out	%al, $0x21
	mov	$0x28, %al
	out	%al, $0xa1
	mov	$0x04, %al			# ICW3: the slave is on IRQ 2
	out	%al, $0x21
	mov	$0x02, %al
	out	%al, $0xa1
	mov	$0x01, %al			# ICW4: 8086 mode
	out	%al, $0x21
	out	%al, $0xa1
	mov	$0xfe, %al			# OCW1: only IRQ 0
	out	%al, $0x21
	mov	$0xff, %al
	out	%al, $0xa1
	ret

# pit_irq: IRQ 0: count it, end-of-interrupt to the master PIC.  It returns
# with popf and a far return instead of iret (see rtc.s: a software KVM
# backend's instruction emulator has no protected-mode iret).
pit_irq:
	push	%eax
	incl	irq_count
	mov	$0x20, %al
	out	%al, $0x20
	pop	%eax
	pushl	8(%esp)				# the frame: EIP, CS, EFLAGS
	popf
	lret	$4

unexpected:
	mov	$s_unexpected, %esi
	call	puts
	mov	$0x7f, %al
	out	%al, $0xf4
	hlt

	.include "print32.inc"

	.align	8
gdt:	.quad	0
	.quad	0x00cf9a000000ffff		# 0x08: code, flat 4 GiB, 32-bit
	.quad	0x00cf92000000ffff		# 0x10: data, flat 4 GiB
gdt_desc:
	.word	gdt_desc - gdt - 1
	.long	gdt
idt_desc:
	.word	IDT_ENTRIES * 8 - 1
	.long	idt

s_status: .asciz "pit: status "
s_latch: .asciz	"pit: latch holds\n"
s_no_latch: .asciz "pit: latch lost\n"
s_out2:	.asciz	"pit: out2 rises\n"
s_periodic: .asciz "pit: irq0 5 periodic\n"
s_oneshot: .asciz "pit: irq0 "
s_oneshot_end: .asciz " one-shot\n"
s_done:	.asciz	"pit: done\n"
s_stuck: .asciz	"pit: stuck\n"
s_unexpected: .asciz "pit: unexpected interrupt\n"

	.bss
	.align	16
irq_count: .long 0
idt:	.space	IDT_ENTRIES * 8
	.space	4096
stack_top:
