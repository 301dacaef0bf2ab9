# ap_triple_fault.s - a secondary vCPU that triple-faults while the boot CPU
# spins: the whole run must end, with every vCPU thread joined.
# Mode: "protected" (entered at 0x100000), run with -smp 2.
	.code32
	.text
	.globl	_start
	.equ	TRAMPOLINE, 0x10000
_start:
	mov	$trampoline, %esi
	mov	$TRAMPOLINE, %edi
	mov	$(trampoline_end - trampoline), %ecx
	rep movsb
	mov	$0x3f8, %dx
	mov	$'B', %al
	out	%al, %dx
	movl	$0x000c4500, 0xfee00300		# INIT, then SIPI to 0x10000
	movl	$0x000c4610, 0xfee00300
1:	pause					# spin: only the AP's fault can end the run
	jmp	1b

# The AP: an empty IDT, protected mode, then an invalid opcode -> #UD, #GP,
# #DF, shutdown.
	.code16
trampoline:
	cli
	mov	$(TRAMPOLINE >> 4), %ax
	mov	%ax, %ds
	lidtl	idt_empty - trampoline
	lgdtl	gdt_pointer - trampoline
	mov	%cr0, %eax
	or	$1, %eax
	mov	%eax, %cr0
	ljmpl	$0x08, $ap32
idt_empty:
	.word	0
	.long	0
gdt_pointer:
	.word	23
	.long	0x500
trampoline_end:
	.code32
ap32:
	ud2
