# hostile.s - a guest that tries to take over the machine (for `pyvmm demo isolation`).
# Mode: "long" (64-bit CS at CPL0, identity-mapped low 4 GiB, entered at
# 0x100000); meant to run with -m 64M and --timeout.
#
# It announces each attempt on the console, then makes it:
#   (a) writes beyond its RAM (GPA 0xc0000000, in the unmapped gap below the
#       MMIO hole) and reads the value back;
#   (b) reads physical addresses with nothing behind them: 0xfffff000 (top of
#       the 32-bit space) and 0x100000000 (above 4 GiB; the VMM's identity map
#       stops at 4 GiB, so the guest maps it with its own page-directory entry);
#   (c) reprograms the legacy PC devices a PC kernel finds at fixed ports, and
#       reads each back: it initialises the PIC (0x20/0x21) with IRQ 0 alone
#       unmasked, sets the PIT's channel 0 (0x43/0x40) to its fastest rate
#       (mode 2, divisor 2: 596,591 Hz) and reads its status back (bits 5-0:
#       OUT and NULL COUNT change with time), reads the PIC's IRR until the
#       timer's IRQ 0 is pending there (IF stays 0, so it is never delivered),
#       and sets the year of its RTC (CMOS 0x70/0x71, register B's SET bit
#       held meanwhile) to 99;
#   (d) floods the console with 20000 bytes (250 lines of 79 '#' + newline);
#   (e) spins forever without halting (`jmp .`).
# Resetting the machine, the last thing a guest can do to its legacy devices,
# would end the run before (d) and (e): guests/hostile_reset.s does that.
#
# Every (c) line states how many port writes and reads it makes, so that the
# VMM's exit counts per port (--stats) can be checked against the guest's own
# account: 17 writes and N + 3 reads in all, N the IRR reads the tick took.
#
# Expected output on a machine with the PC's devices (pyvmm's default: the
# PIC and PIT in KVM, the RTC in pyvmm; N varies with the host's speed):
#   hostile: (a) write 0x5a5a5a5a to GPA 0xc0000000, beyond RAM
#   hostile: (a) read back 0xffffffff
#   hostile: (b) read GPA 0xfffff000: 0xffffffffffffffff
#   hostile: (b) map GPA 0x100000000 in its own page tables, read: 0xffffffffffffffff
#   hostile: (c) PIC 0x20/0x21: initialise it, unmask IRQ 0 only (5 writes, 1 read): mask 0xfe
#   hostile: (c) PIT 0x43/0x40: channel 0 at divisor 2, its fastest rate (4 writes, 1 read): status 0x34
#   hostile: (c) PIC 0x20: wait for IRQ 0 from the PIT (1 write, N reads): IRR 0x01
#   hostile: (c) CMOS 0x70/0x71: set its clock's year to 99 (7 writes, 1 read): year 0x99
#   hostile: (d) flood the console with 20000 bytes
#   ... 250 lines of '#' ...
#   hostile: (d) flood done
#   hostile: (e) jmp . forever, no hlt
# With no PIC and PIT (`--kernel-irqchip off`) their reads give 0xff (the
# status line shows 0x3f, its bits 5-0) and the IRR wait ends at its first
# read ("1 write, 1 read"); with a PIT that never ticks, after 1048576 reads.
	.code64
	.text
	.globl	_start

	.equ	BEYOND_RAM,  0xc0000000	# -m 64M: no RAM, below the MMIO hole
	.equ	TOP_4G_PAGE, 0xfffff000	# last page of the 32-bit space
	.equ	ABOVE_4G,    0x100000000	# GPA and (with our PDE) GVA
	.equ	OWN_PD,      0x200000	# a free RAM page for our page directory

	.equ	PTE_P,  1 << 0
	.equ	PTE_RW, 1 << 1
	.equ	PTE_PS, 1 << 7
	.equ	ADDR_MASK, 0x000ffffffffff000

	.equ	FLOOD_LINES, 250
	.equ	FLOOD_WIDTH, 79

	.equ	PIT_DIVISOR, 2		# mode 2's smallest count: 596,591 Hz
	.equ	IRR_READS_MAX, 0x100000

_start:
	cli
	# (a) write beyond RAM, then read it back.
	lea	msg_a_write(%rip), %rsi
	call	puts
	mov	$BEYOND_RAM, %ebx	# zero-extended: a disp32 would sign-extend
	movl	$0x5a5a5a5a, (%rbx)
	lea	msg_a_read(%rip), %rsi
	call	puts
	mov	(%rbx), %eax
	mov	$8, %ecx
	call	puthex
	call	newline

	# (b) probe physical addresses with no RAM behind them.
	lea	msg_b_top(%rip), %rsi
	call	puts
	mov	$TOP_4G_PAGE, %ebx
	mov	(%rbx), %rax
	mov	$16, %ecx
	call	puthex
	call	newline

	lea	msg_b_high(%rip), %rsi
	call	puts
	# PDPT[4] (the 1 GiB slot at 4 GiB) -> our PD, whose entry 0 is a 2 MiB page at 4 GiB.
	mov	$OWN_PD, %edi
	xor	%eax, %eax
	mov	$512, %ecx
	rep stosq			# clear the PD
	movabs	$ABOVE_4G | PTE_PS | PTE_RW | PTE_P, %rax
	mov	%rax, OWN_PD
	mov	%cr3, %rbx		# the VMM's PML4
	mov	(%rbx), %rbx		# PML4[0] -> PDPT
	movabs	$ADDR_MASK, %rax
	and	%rax, %rbx
	movq	$OWN_PD | PTE_RW | PTE_P, 4*8(%rbx)
	mov	%cr3, %rax		# flush the TLB
	mov	%rax, %cr3
	movabs	$ABOVE_4G, %rbx
	mov	(%rbx), %rax
	mov	$16, %ecx
	call	puthex
	call	newline

	# (c) reprogram its legacy PC devices: the PIC and PIT (KVM's, in the
	# kernel) and the RTC/CMOS (pyvmm's), then read each back.
	lea	msg_c_pic(%rip), %rsi
	call	puts
	mov	$0x11, %al		# ICW1: edge, cascade, ICW4 follows
	out	%al, $0x20
	mov	$0x20, %al		# ICW2: vectors 0x20..0x27
	out	%al, $0x21
	mov	$0x04, %al		# ICW3: slave on IRQ2
	out	%al, $0x21
	mov	$0x01, %al		# ICW4: 8086 mode
	out	%al, $0x21
	mov	$0xfe, %al		# OCW1: unmask IRQ 0, the timer, alone
	out	%al, $0x21
	in	$0x21, %al		# read the mask back
	mov	$2, %ecx
	call	puthex
	call	newline

	lea	msg_c_pit(%rip), %rsi
	call	puts
	mov	$0x34, %al		# channel 0, lo/hi byte, mode 2 (rate generator)
	out	%al, $0x43
	mov	$PIT_DIVISOR, %al
	out	%al, $0x40
	xor	%al, %al
	out	%al, $0x40
	mov	$0xe2, %al		# read-back: latch channel 0's status, not its count
	out	%al, $0x43
	in	$0x40, %al
	and	$0x3f, %al		# OUT and NULL COUNT change with time
	mov	$2, %ecx
	call	puthex
	call	newline

	# Wait for the timer's first tick in the PIC's IRR (IF=0: it stays pending).
	lea	msg_c_irr(%rip), %rsi
	call	puts
	mov	$0x0a, %al		# OCW3: reads of port 0x20 return the IRR
	out	%al, $0x20
	xor	%ebx, %ebx
1:	inc	%ebx
	in	$0x20, %al
	test	$0x01, %al
	jnz	2f
	cmp	$IRR_READS_MAX, %ebx
	jb	1b
2:	mov	%eax, %ebp
	mov	%ebx, %eax
	call	putdec
	lea	msg_c_irr_value(%rip), %rsi
	cmp	$1, %ebx
	jne	3f
	lea	msg_c_irr_value1(%rip), %rsi
3:	call	puts
	mov	%ebp, %eax
	mov	$2, %ecx
	call	puthex
	call	newline

	lea	msg_c_cmos(%rip), %rsi
	call	puts
	mov	$0x0b, %al		# register B
	out	%al, $0x70
	mov	$0x82, %al		# SET (hold the clock), 24-hour, BCD
	out	%al, $0x71
	mov	$0x09, %al		# the year
	out	%al, $0x70
	mov	$0x99, %al
	out	%al, $0x71
	mov	$0x0b, %al
	out	%al, $0x70
	mov	$0x02, %al		# let the clock run again
	out	%al, $0x71
	mov	$0x09, %al
	out	%al, $0x70
	in	$0x71, %al
	mov	$2, %ecx
	call	puthex
	call	newline

	# (d) flood the console.
	lea	msg_d_flood(%rip), %rsi
	call	puts
	mov	$FLOOD_LINES, %ebx
1:	mov	$FLOOD_WIDTH, %ebp
2:	mov	$'#', %al
	call	putc
	dec	%ebp
	jnz	2b
	call	newline
	dec	%ebx
	jnz	1b
	lea	msg_d_done(%rip), %rsi
	call	puts

	# (e) never halt.
	lea	msg_e_spin(%rip), %rsi
	call	puts
	jmp	.

newline:
	mov	$'\n', %al
	jmp	putc

# putdec: write %eax in decimal.  Clobbers %rax, %rcx, %rdx.
putdec:
	push	%rbx
	mov	$10, %ebx
	xor	%ecx, %ecx
1:	xor	%edx, %edx
	div	%ebx
	push	%rdx			# digits come out lowest first
	inc	%ecx
	test	%eax, %eax
	jnz	1b
2:	pop	%rax
	add	$'0', %al
	call	putc
	loop	2b
	pop	%rbx
	ret

msg_a_write: .asciz "hostile: (a) write 0x5a5a5a5a to GPA 0xc0000000, beyond RAM\n"
msg_a_read:  .asciz "hostile: (a) read back 0x"
msg_b_top:   .asciz "hostile: (b) read GPA 0xfffff000: 0x"
msg_b_high:  .asciz "hostile: (b) map GPA 0x100000000 in its own page tables, read: 0x"
msg_c_pic:   .asciz "hostile: (c) PIC 0x20/0x21: initialise it, unmask IRQ 0 only (5 writes, 1 read): mask 0x"
msg_c_pit:   .asciz "hostile: (c) PIT 0x43/0x40: channel 0 at divisor 2, its fastest rate (4 writes, 1 read): status 0x"
msg_c_irr:   .asciz "hostile: (c) PIC 0x20: wait for IRQ 0 from the PIT (1 write, "
msg_c_irr_value: .asciz " reads): IRR 0x"
msg_c_irr_value1: .asciz " read): IRR 0x"
msg_c_cmos:  .asciz "hostile: (c) CMOS 0x70/0x71: set its clock's year to 99 (7 writes, 1 read): year 0x"
msg_d_flood: .asciz "hostile: (d) flood the console with 20000 bytes\n"
msg_d_done:  .asciz "hostile: (d) flood done\n"
msg_e_spin:  .asciz "hostile: (e) jmp . forever, no hlt\n"

	.include "print64.inc"
