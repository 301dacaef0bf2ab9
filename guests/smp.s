# smp.s - proves several vCPUs: the boot CPU wakes every other one with
# INIT/SIPI through its local APIC, and each prints its APIC ID.
# Mode: "protected" (32-bit, flat, paging off, entered at 0x100000), run with
# `-smp N`. The number of CPUs comes from QEMU's fw_cfg (NB_CPUS, key 5).
# The console is shared: every line is printed under a spinlock. The run ends
# through the debug-exit port with the CPU count N (exit status 2N+1).
	.code32
	.text
	.globl	_start

	.equ	LAPIC_ID, 0xfee00020
	.equ	LAPIC_ICR_LOW, 0xfee00300
	.equ	TRAMPOLINE, 0x10000		# SIPI vector 0x10 starts APs here
	.equ	CONSOLE_LOCK, 0x11000
	.equ	APS_UP, 0x11004
	.equ	AP_STACKS, 0x20000		# AP n uses the page below 0x20000 + n * 0x1000

_start:
	movl	$0, CONSOLE_LOCK
	movl	$0, APS_UP
	# Copy the real-mode trampoline below 1 MiB, where a SIPI can start it.
	mov	$trampoline, %esi
	mov	$TRAMPOLINE, %edi
	mov	$(trampoline_end - trampoline), %ecx
	rep movsb

	call	lock_console
	lea	msg_bsp, %esi
	call	puts
	call	print_apic_id
	call	unlock_console

	# Number of CPUs from fw_cfg: select key 5, read two bytes.
	mov	$0x510, %dx
	mov	$5, %ax
	out	%ax, %dx
	inc	%dx
	in	%dx, %al
	movzbl	%al, %ebx
	in	%dx, %al
	movzbl	%al, %eax
	shl	$8, %eax
	or	%eax, %ebx			# %ebx = CPU count

	# INIT, then SIPI twice, to all but self (SDM 10.6.1, 8.4.4.1).
	movl	$0x000c4500, LAPIC_ICR_LOW
	movl	$0x000c4610, LAPIC_ICR_LOW
	movl	$0x000c4610, LAPIC_ICR_LOW

	lea	-1(%ebx), %ecx
1:	pause
	cmp	APS_UP, %ecx
	jne	1b

	call	lock_console
	lea	msg_all, %esi
	call	puts
	mov	%ebx, %eax
	mov	$2, %ecx
	call	puthex
	mov	$'\n', %al
	call	putc
	call	unlock_console
	mov	%ebx, %eax
	out	%al, $0xf4

# The APs arrive here in 32-bit protected mode.
ap_main:
	mov	$0x10, %ax
	mov	%ax, %ds
	mov	%ax, %es
	mov	%ax, %ss
	mov	LAPIC_ID, %eax
	shr	$24, %eax
	inc	%eax
	shl	$12, %eax
	lea	AP_STACKS(%eax), %esp
	call	lock_console
	lea	msg_ap, %esi
	call	puts
	call	print_apic_id
	call	unlock_console
	lock incl APS_UP
2:	cli
	hlt
	jmp	2b

print_apic_id:
	mov	LAPIC_ID, %eax
	shr	$24, %eax
	mov	$2, %ecx
	call	puthex
	mov	$'\n', %al
	jmp	putc

lock_console:
	mov	$1, %eax
1:	xchg	%eax, CONSOLE_LOCK
	test	%eax, %eax
	jz	2f
	pause
	mov	$1, %eax
	jmp	1b
2:	ret

unlock_console:
	movl	$0, CONSOLE_LOCK
	ret

msg_bsp: .asciz	"BSP APIC ID "
msg_ap:	 .asciz	"AP APIC ID "
msg_all: .asciz	"CPUs up: "

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
	.code32

	.include "print32.inc"
