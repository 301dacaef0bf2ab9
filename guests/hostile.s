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
#   (c) reprograms legacy PC ports it was not given: the PIC (0x20/0x21), the
#       PIT (0x43/0x40), CMOS (0x70/0x71), and resets through the keyboard
#       controller (0x64 <- 0xfe), port 0x92 and port 0xcf9;
#   (d) floods the console with 20000 bytes (250 lines of 79 '#' + newline);
#   (e) spins forever without halting (`jmp .`).
#
# Every (c) line states how many port writes and reads it makes, so the VMM's
# counters of unassigned port accesses can be checked against the guest's own
# account: 14 writes and 3 reads in all.
#
# Expected output, with nothing assigned to those addresses and ports:
#   hostile: (a) write 0x5a5a5a5a to GPA 0xc0000000, beyond RAM
#   hostile: (a) read back 0xffffffff
#   hostile: (b) read GPA 0xfffff000: 0xffffffffffffffff
#   hostile: (b) map GPA 0x100000000 in its own page tables, read: 0xffffffffffffffff
#   hostile: (c) program the PIC 0x20/0x21 (5 writes, 1 read): mask 0xff
#   hostile: (c) program the PIT 0x43/0x40 to divisor 1 (3 writes)
#   hostile: (c) set CMOS 0x70/0x71 shutdown status (3 writes, 1 read): 0xff
#   hostile: (c) reset via keyboard controller 0x64, 0x92, 0xcf9 (3 writes, 1 read): 0xff
#   hostile: (c) still running after the resets
#   hostile: (d) flood the console with 20000 bytes
#   ... 250 lines of '#' ...
#   hostile: (d) flood done
#   hostile: (e) jmp . forever, no hlt
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

	# (c) reprogram ports the VMM did not assign.
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
	xor	%al, %al		# OCW1: unmask every IRQ
	out	%al, $0x21
	in	$0x21, %al		# read the mask back
	mov	$2, %ecx
	call	puthex
	call	newline

	lea	msg_c_pit(%rip), %rsi
	call	puts
	mov	$0x34, %al		# channel 0, lo/hi byte, mode 2 (rate generator)
	out	%al, $0x43
	mov	$0x01, %al		# divisor 1: the fastest timer interrupt there is
	out	%al, $0x40
	xor	%al, %al
	out	%al, $0x40

	lea	msg_c_cmos(%rip), %rsi
	call	puts
	mov	$0x8f, %al		# NMI off, select register 0x0f (shutdown status)
	out	%al, $0x70
	mov	$0x0a, %al		# "jump via 40:67 on reset"
	out	%al, $0x71
	mov	$0x8f, %al
	out	%al, $0x70
	in	$0x71, %al
	mov	$2, %ecx
	call	puthex
	call	newline

	lea	msg_c_reset(%rip), %rsi
	call	puts
	mov	$0xfe, %al		# keyboard controller: pulse the CPU reset line
	out	%al, $0x64
	mov	$0x01, %al		# port 0x92 (system control A): fast reset
	out	%al, $0x92
	mov	$0x06, %al		# port 0xcf9 (reset control): hard reset
	mov	$0xcf9, %dx
	out	%al, %dx
	in	$0x64, %al		# keyboard controller status
	mov	$2, %ecx
	call	puthex
	call	newline
	lea	msg_c_alive(%rip), %rsi
	call	puts

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

msg_a_write: .asciz "hostile: (a) write 0x5a5a5a5a to GPA 0xc0000000, beyond RAM\n"
msg_a_read:  .asciz "hostile: (a) read back 0x"
msg_b_top:   .asciz "hostile: (b) read GPA 0xfffff000: 0x"
msg_b_high:  .asciz "hostile: (b) map GPA 0x100000000 in its own page tables, read: 0x"
msg_c_pic:   .asciz "hostile: (c) program the PIC 0x20/0x21 (5 writes, 1 read): mask 0x"
msg_c_pit:   .asciz "hostile: (c) program the PIT 0x43/0x40 to divisor 1 (3 writes)\n"
msg_c_cmos:  .asciz "hostile: (c) set CMOS 0x70/0x71 shutdown status (3 writes, 1 read): 0x"
msg_c_reset: .asciz "hostile: (c) reset via keyboard controller 0x64, 0x92, 0xcf9 (3 writes, 1 read): 0x"
msg_c_alive: .asciz "hostile: (c) still running after the resets\n"
msg_d_flood: .asciz "hostile: (d) flood the console with 20000 bytes\n"
msg_d_done:  .asciz "hostile: (d) flood done\n"
msg_e_spin:  .asciz "hostile: (e) jmp . forever, no hlt\n"

	.include "print64.inc"
