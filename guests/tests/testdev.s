# testdev.s - QEMU's pc-testdev, as kvm-unit-tests uses it, from a multiboot
# kernel: the scratch register at port 0xe0 (and its byte-wise copy at 0xe8),
# the flush-page port 0xe4, the 64 KiB iomem at 0xff000000, and the IRQ-line
# ports 0x2000+n, pulsed with the IOAPIC and then the PIC programmed.
#
#   qemu-system-x86_64 -accel tcg -display none -serial stdio -no-reboot \
#       -device isa-debug-exit,iobase=0xf4,iosize=0x04 -device pc-testdev \
#       -kernel guests/tests/testdev.elf
#   pyvmm boot --testdev guests/tests/testdev.elf
#
# Each check prints "name=value ok" or "name=value FAIL want=expected"; the
# run ends through debug-exit with the number of failed checks (status 1
# when all pass).  Only aligned port accesses: QEMU cuts unaligned ones one
# way under KVM, another under TCG.  Interrupts arrive right after the OUT
# that raises them (KVM injects at the next entry, TCG ends the block), so a
# short spin is enough to see them, and a lost one fails instead of hanging.
	.set	MB_MAGIC, 0x1badb002
	.set	MB_FLAGS, 0x3
	.set	IOMEM, 0xff000000
	.set	IDT, 0x200000		# 256 gates, in RAM above the kernel
	.set	LAPIC, 0xfee00000
	.set	LAPIC_TPR, 0x80
	.set	LAPIC_EOI, 0xb0
	.set	LAPIC_SVR, 0xf0
	.set	LAPIC_LVT0, 0x350
	.set	IOAPIC, 0xfec00000	# IOREGSEL; IOWIN at +0x10
	.set	VEC_EDGE, 0x40
	.set	VEC_LEVEL, 0x41
	.set	VEC_PIC, 0x25		# PIC base 0x20, IRQ 5
	.set	GSI_TEST, 14		# free on both (QEMU's IDE line, no disks)
	.set	GSI_COM1, 4
	.set	IRQ_PIC, 5
	# Dword i of `pattern` is 0x03020100 + i * 0x04040404: their sum, mod 2**32.
	.set	PATTERN_SUM, (16 * 0x03020100 + 120 * 0x04040404) & 0xffffffff
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

# PULSE gsi: raise the line, then lower it (kvm-unit-tests' toggle_irq_line).
.macro	PULSE gsi
	mov	$0x2000 + \gsi, %dx
	mov	$1, %al
	out	%al, %dx
	mov	$0, %al
	out	%al, %dx
.endm

_start:
	mov	$0x80000, %esp		# the loader leaves ESP undefined

	# --- the scratch register: ports 0xe0-0xe3, and 0xe8-0xeb byte by byte
	mov	$0x11223344, %eax
	out	%eax, $0xe0
	in	$0xe0, %eax
	CHECK	"scratch outl/inl 0xe0", 0x11223344
	xor	%eax, %eax
	in	$0xe0, %al
	CHECK	"scratch inb 0xe0", 0x44
	xor	%eax, %eax
	in	$0xe1, %al
	CHECK	"scratch inb 0xe1", 0x33
	xor	%eax, %eax
	in	$0xe3, %al
	CHECK	"scratch inb 0xe3", 0x11
	xor	%eax, %eax
	in	$0xe2, %ax
	CHECK	"scratch inw 0xe2", 0x1122
	in	$0xe8, %eax
	CHECK	"scratch inl 0xe8", 0x11223344
	mov	$0x55, %al
	out	%al, $0xe9
	in	$0xe0, %eax
	CHECK	"scratch after outb 0xe9", 0x11225544
	mov	$0xbeef, %ax
	out	%ax, $0xe2
	in	$0xe8, %eax
	CHECK	"scratch after outw 0xe2", 0xbeef5544
	cld				# kvm-unit-tests' test_stringio
	mov	$letters, %esi
	mov	$16, %ecx
	mov	$0xe0, %dx
	rep outsb
	xor	%eax, %eax
	in	$0xe0, %al
	CHECK	"scratch after rep outsb", 'p'

	# --- ports that read 0: the flush-page port, the IRQ lines
	in	$0xe4, %eax
	CHECK	"flush-page inl 0xe4", 0
	mov	$0x2000 + GSI_TEST, %dx
	xor	%eax, %eax
	in	%dx, %al
	CHECK	"irq-line inb 0x200e", 0

	# --- the flush-page port: the page's contents stay
	mov	$flushed, %eax
	out	%eax, $0xe4		# the page of this data word
	mov	%esp, %eax
	out	%eax, $0xe4		# the stack's page
	mov	$_start, %eax
	out	%eax, $0xe4		# the code's page, while it runs
	mov	flushed, %eax
	CHECK	"word in a flushed page", 0x5a5aa5a5

	# --- iomem at 0xff000000: 64 KiB, zero at start
	mov	IOMEM, %eax
	CHECK	"iomem[0] at start", 0
	mov	IOMEM + 0xfffc, %eax
	CHECK	"iomem[0xfffc] at start", 0
	movl	$0x12345678, IOMEM
	mov	IOMEM, %eax
	CHECK	"iomem[0] after movl", 0x12345678
	movzbl	IOMEM + 1, %eax
	CHECK	"iomem byte 1", 0x56
	movzwl	IOMEM + 2, %eax
	CHECK	"iomem word 2", 0x1234
	movw	$0xbeef, IOMEM + 3	# unaligned, across two dwords
	mov	IOMEM, %eax
	CHECK	"iomem[0] after movw at 3", 0xef345678
	mov	IOMEM + 4, %eax
	CHECK	"iomem[4] after movw at 3", 0xbe
	movl	$0xcafef00d, IOMEM + 0xfffc
	mov	IOMEM + 0xfffc, %eax
	CHECK	"iomem[0xfffc] after movl", 0xcafef00d
	mov	$pattern, %esi		# 16 dwords to iomem and back with rep movsl
	mov	$IOMEM + 0x100, %edi
	mov	$16, %ecx
	rep movsl
	mov	$IOMEM + 0x100, %esi
	mov	$copy, %edi
	mov	$16, %ecx
	rep movsl
	xor	%eax, %eax		# sum of the copy's dwords
	mov	$copy, %esi
	mov	$16, %ecx
1:	add	(%esi), %eax
	add	$4, %esi
	loop	1b
	CHECK	"iomem rep movsl round trip (sum)", PATTERN_SUM
	mov	IOMEM + 0x104, %eax
	CHECK	"iomem[0x104] after rep movsl", 0x03020100 + 0x04040404

	# --- interrupts: an IDT, the LAPIC on, the PICs initialised and masked
	call	setup_idt
	mov	$0x11, %al		# ICW1: edge, cascade, ICW4 follows
	out	%al, $0x20
	out	%al, $0xa0
	mov	$0x20, %al		# ICW2: vectors 0x20-0x27 and 0x28-0x2f
	out	%al, $0x21
	mov	$0x28, %al
	out	%al, $0xa1
	mov	$0x04, %al		# ICW3: slave on IRQ 2
	out	%al, $0x21
	mov	$0x02, %al
	out	%al, $0xa1
	mov	$0x01, %al		# ICW4: 8086 mode
	out	%al, $0x21
	out	%al, $0xa1
	mov	$0xff, %al		# OCW1: every IRQ masked
	out	%al, $0x21
	out	%al, $0xa1
	movl	$0x1ff, LAPIC + LAPIC_SVR	# APIC software-enabled, spurious vector 0xff
	movl	$0, LAPIC + LAPIC_TPR
	movl	$0x700, LAPIC + LAPIC_LVT0	# LINT0: ExtINT, for the PIC
	sti

	# IOAPIC, edge-triggered: one pulse, one interrupt.
	mov	$GSI_TEST, %ecx
	mov	$VEC_EDGE, %eax
	call	set_redirection
	movl	$0, count
	PULSE	GSI_TEST
	call	settle
	mov	count, %eax
	CHECK	"ioapic edge GSI 14 pulse: interrupts", 1
	# The same, masked: none.
	mov	$GSI_TEST, %ecx
	mov	$0x10000 + VEC_EDGE, %eax
	call	set_redirection
	movl	$0, count
	PULSE	GSI_TEST
	call	settle
	mov	count, %eax
	CHECK	"ioapic masked GSI 14 pulse: interrupts", 0
	# Level-triggered: the handler lowers the line before its EOI; after that,
	# no more.  (Whether at least one, not how many: on a host whose KVM
	# emulates CPL0 code, kvm_pvm, the LAPIC shows no ISR bit in a handler and
	# a level interrupt still high when injected comes twice, under QEMU's
	# -accel kvm as under pyvmm; QEMU's TCG and VT-x give one.)
	mov	$GSI_TEST, %ecx
	mov	$0x8000 + VEC_LEVEL, %eax
	call	set_redirection
	movl	$0, count
	mov	$0x2000 + GSI_TEST, %dx
	mov	$1, %al
	out	%al, %dx
	call	settle
	xor	%eax, %eax
	cmpl	$0, count
	setne	%al
	CHECK	"ioapic level GSI 14 raised: interrupted", 1
	movl	$0, count
	call	settle
	mov	count, %eax
	CHECK	"ioapic level GSI 14 lowered: interrupts after", 0
	mov	$GSI_TEST, %ecx
	mov	$0x10000, %eax
	call	set_redirection
	# COM1's GSI (COM1 idle, its interrupts off): the guest's pulse gets through.
	mov	$GSI_COM1, %ecx
	mov	$VEC_EDGE, %eax
	call	set_redirection
	movl	$0, count
	PULSE	GSI_COM1
	call	settle
	mov	count, %eax
	CHECK	"ioapic edge GSI 4 (COM1's) pulse: interrupts", 1
	mov	$GSI_COM1, %ecx
	mov	$0x10000, %eax
	call	set_redirection

	# The PIC: IRQ 5 unmasked (its IOAPIC pin stays masked).
	mov	$~(1 << IRQ_PIC) & 0xff, %al
	out	%al, $0x21
	movl	$0, count
	PULSE	IRQ_PIC
	call	settle
	mov	count, %eax
	CHECK	"pic IRQ 5 pulse: interrupts", 1
	mov	$0xff, %al
	out	%al, $0x21
	cli

	mov	$done, %esi
	call	puts
	mov	failures, %eax
	mov	$2, %ecx
	call	puthex
	mov	$'\n', %al
	call	putc
	mov	failures, %eax
	out	%al, $0xf4
	hlt

# check: print "name=%eax ok" (or FAIL want=...) for [esp+4] name, [esp+8] want.
check:
	push	%ebx
	mov	%eax, %ebx
	mov	8(%esp), %esi
	call	puts
	mov	$'=', %al
	call	putc
	mov	%ebx, %eax
	mov	$8, %ecx
	call	puthex
	cmp	12(%esp), %ebx
	jne	1f
	mov	$ok, %esi
	call	puts
	pop	%ebx
	ret
1:	incl	failures
	mov	$fail, %esi
	call	puts
	mov	12(%esp), %eax
	mov	$8, %ecx
	call	puthex
	mov	$'\n', %al
	call	putc
	pop	%ebx
	ret

# settle: spin a while, for an interrupt that should (or should not) come.
settle:
	push	%ecx
	mov	$2000, %ecx
1:	loop	1b
	pop	%ecx
	ret

# set_redirection: IOAPIC redirection entry %ecx = low dword %eax, to APIC ID 0.
set_redirection:
	lea	0x10(,%ecx,2), %edx
	movl	%edx, IOAPIC
	movl	%eax, IOAPIC + 0x10
	inc	%edx
	movl	%edx, IOAPIC
	movl	$0, IOAPIC + 0x10
	ret

# setup_idt: every vector to `unexpected`, then the three handlers; lidt.
setup_idt:
	mov	$IDT, %edi
	mov	$256, %ecx
	mov	$unexpected, %eax
1:	call	set_gate
	add	$8, %edi
	loop	1b
	mov	$IDT + 8 * VEC_EDGE, %edi
	mov	$on_edge, %eax
	call	set_gate
	mov	$IDT + 8 * VEC_LEVEL, %edi
	mov	$on_level, %eax
	call	set_gate
	mov	$IDT + 8 * VEC_PIC, %edi
	mov	$on_pic, %eax
	call	set_gate
	lidt	idtr
	ret

# set_gate: a 32-bit interrupt gate at %edi to handler %eax, in the current CS.
set_gate:
	push	%eax
	push	%edx
	mov	%cs, %dx
	shl	$16, %edx
	mov	%ax, %dx
	mov	%edx, (%edi)		# selector : offset 15..0
	mov	$0x8e00, %ax		# present, DPL 0, 32-bit interrupt gate
	mov	%eax, 4(%edi)		# offset 31..16 : flags
	pop	%edx
	pop	%eax
	ret

# The handlers return with IRET_SAME_LEVEL, not iret: on a host whose KVM
# emulates CPL0 code (kvm_pvm), KVM's emulator has a real-mode IRET only.
.macro	IRET_SAME_LEVEL
	push	8(%esp)			# the frame's EFLAGS (no privilege change: EIP, CS, EFLAGS)
	popf
	ret	$8			# EIP; then drop CS and EFLAGS
.endm

on_edge:				# IOAPIC, edge: count, EOI
	incl	count
	movl	$0, LAPIC + LAPIC_EOI
	IRET_SAME_LEVEL

on_level:				# IOAPIC, level: lower the line first
	push	%eax
	push	%edx
	incl	count
	mov	$0x2000 + GSI_TEST, %dx
	mov	$0, %al
	out	%al, %dx
	movl	$0, LAPIC + LAPIC_EOI
	pop	%edx
	pop	%eax
	IRET_SAME_LEVEL

on_pic:					# PIC: non-specific EOI
	push	%eax
	incl	count
	mov	$0x20, %al
	out	%al, $0x20
	pop	%eax
	IRET_SAME_LEVEL

unexpected:				# any other vector: say so, end (status 255)
	mov	$surprise, %esi
	call	puts
	mov	$0x7f, %al
	out	%al, $0xf4
	hlt

	.data
	.align	4
flushed:  .long	0x5a5aa5a5
count:	  .long	0
failures: .long	0
idtr:	  .word	256 * 8 - 1
	  .long	IDT
pattern:			# dword i = 0x03020100 + i * 0x04040404
	.irp	i, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
	.long	0x03020100 + \i * 0x04040404
	.endr
copy:	  .fill	16, 4, 0
letters:  .ascii "abcdefghijklmnop"
ok:	  .asciz " ok\n"
fail:	  .asciz " FAIL want="
done:	  .asciz "testdev: failed checks="
surprise: .asciz "testdev: unexpected interrupt or exception\n"

	.text
	.include "print32.inc"
