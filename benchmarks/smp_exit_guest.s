# smp_exit_guest.s - the concurrent-exit benchmark guest: every vCPU makes
# `count` port writes at once.
# Mode: "protected" (32-bit, flat, paging off, CPL0, entered at 0x100000),
# run with N vCPUs. The boot CPU wakes the others with INIT/SIPI through its
# local APIC (as guests/smp.s does); each CPU waits at a barrier until all N
# have arrived, then writes `count` times to port 0x700 (`out %al, %dx`, one
# exit each). A CPU that is done decrements a counter: every CPU but the last
# then writes once to port 0x701 ("done", its VMM may stop running it) and
# halts; the last writes 0 to the debug-exit port 0xf4 (exit status 1 under
# pyvmm and QEMU). Exits per run: N * (count + 1).
# The VMM writes the parameter block at guest-physical 0x90000 before the run:
#   0x90000  u32 count   port writes per vCPU
#   0x90004  u32 cpus    vCPUs taking part (0 counts as 1; 1 sends no INIT/SIPI)
# and the guest keeps its counters after it:
#   0x90008  u32 arrived    CPUs at the barrier
#   0x9000c  u32 remaining  CPUs still writing
	.code32
	.text
	.globl	_start

	.equ	PARAMS, 0x90000
	.equ	COUNT, PARAMS
	.equ	CPUS, PARAMS + 4
	.equ	ARRIVED, PARAMS + 8
	.equ	REMAINING, PARAMS + 12
	.equ	PORT, 0x700
	.equ	DONE_PORT, 0x701
	.equ	DEBUG_EXIT, 0xf4
	.equ	LAPIC_ICR_LOW, 0xfee00300
	.equ	TRAMPOLINE, 0x10000		# SIPI vector 0x10 starts APs here

_start:
	mov	$trampoline, %esi
	mov	$TRAMPOLINE, %edi
	mov	$(trampoline_end - trampoline), %ecx
	rep movsb
	movl	$0, ARRIVED
	mov	CPUS, %eax
	test	%eax, %eax		# no parameters: one CPU
	jnz	1f
	inc	%eax
	mov	%eax, CPUS
1:	mov	%eax, REMAINING
	cmp	$1, %eax
	jbe	work
	# INIT, then SIPI twice, to all but self (SDM 10.6.1, 8.4.4.1).
	movl	$0x000c4500, LAPIC_ICR_LOW
	movl	$0x000c4610, LAPIC_ICR_LOW
	movl	$0x000c4610, LAPIC_ICR_LOW
	jmp	work

# The APs arrive here in 32-bit protected mode.
ap_main:
	mov	$0x10, %ax
	mov	%ax, %ds
	mov	%ax, %es
	mov	%ax, %ss

work:
	lock incl ARRIVED
1:	mov	ARRIVED, %eax
	cmp	CPUS, %eax
	jae	2f
	pause
	jmp	1b
2:	mov	COUNT, %ecx
	mov	$PORT, %edx
	xor	%eax, %eax
	test	%ecx, %ecx
	jz	4f
3:	out	%al, %dx
	dec	%ecx
	jnz	3b
4:	lock decl REMAINING
	jz	last
	mov	$DONE_PORT, %edx
	out	%al, %dx
5:	cli
	hlt
	jmp	5b
last:
	out	%al, $DEBUG_EXIT
	jmp	last			# a VMM that resumes anyway gets the same exit again

# Real mode, copied to TRAMPOLINE: load the VMM's flat GDT (at 0x500:
# code 0x08, data 0x10), enter protected mode, jump to ap_main.
	.code16
trampoline:
	cli
	mov	$(TRAMPOLINE >> 4), %ax
	mov	%ax, %ds
	lgdtl	gdt_pointer - trampoline
	mov	%cr0, %eax
	or	$1, %eax
	mov	%eax, %cr0
	ljmpl	$0x08, $ap_main
gdt_pointer:
	.word	23
	.long	0x500
trampoline_end:
