# triple_fault.s - proves the VMM reports a CPU shutdown (triple fault).
# Mode: "real" (16-bit, loaded and entered at 0x7c00).
# Prints "about to triple fault\n", loads an IDT with limit 0, switches to
# 32-bit protected mode and executes ud2: #UD's gate lies outside the IDT
# (#GP), so does #GP's (double fault) and #DF's, so the CPU shuts down and
# KVM reports KVM_EXIT_SHUTDOWN.
# The fault is raised in protected mode, not real mode, on purpose: some KVM
# backends (kvm_pvm) deliver real-mode interrupts through the IVT at the IDT
# base without checking the limit, so a real-mode fault would not shut down.
	.code16
	.text
	.globl	_start
_start:
	cld
	mov	$msg, %si
	mov	$msg_len, %cx
	mov	$0x3f8, %dx
1:	lodsb
	out	%al, %dx
	loop	1b

	lidt	idt_empty
	lgdt	gdt_desc
	mov	%cr0, %eax
	or	$1, %al			# CR0.PE
	mov	%eax, %cr0
	ljmp	$0x08, $pm32

	.code32
pm32:	ud2				# no IDT entry: #UD -> #GP -> #DF -> shutdown
	hlt				# not reached

	.p2align 3
gdt:	.quad	0			# null descriptor
	.quad	0x00cf9a000000ffff	# 0x08: flat 4 GiB 32-bit code
gdt_desc:
	.word	. - gdt - 1		# limit
	.long	gdt			# base
idt_empty:
	.word	0			# limit
	.long	0			# base

msg:	.ascii	"about to triple fault\n"
	.equ	msg_len, . - msg
