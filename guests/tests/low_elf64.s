# low_elf64.s - an ELF64 image whose one PT_LOAD, 0x1000-0x80000 with its bss
# (low_elf64.ld), covers the places where pyvmm's long-mode entry puts its
# page tables (0x1000-0x6fff) and boot stack (0x70000-0x7ffff) by default:
# pyvmm moves them to free RAM and enters the image anyway.
# Mode: "long" (its ELF class).  Prints the entry state it finds:
#   low_elf64: CR3=%016x RSP=%016x GDTR.BASE=%016x
#   low_elf64: stack ok
# (the last line after a call and a push on the entry stack have come back),
# then writes 0x10 to the debug-exit port (exit status 33).  `pyvmm memmap`
# shows where the tables and the stack went.  An ELF without a multiboot
# header: QEMU's -kernel does not boot it (no PVH note).
	.code64
	.text
	.globl	_start
_start:
	mov	%rsp, %rbx		# the entry RSP, before anything is pushed
	lea	name(%rip), %rsi
	call	puts
	lea	cr3(%rip), %rsi
	call	puts
	mov	%cr3, %rax
	mov	$16, %ecx
	call	puthex
	lea	rsp(%rip), %rsi
	call	puts
	mov	%rbx, %rax
	mov	$16, %ecx
	call	puthex
	lea	gdtr(%rip), %rsi
	call	puts
	sub	$16, %rsp
	sgdt	(%rsp)
	mov	2(%rsp), %rax
	add	$16, %rsp
	mov	$16, %ecx
	call	puthex
	mov	$'\n', %al
	call	putc
	push	$0x5a5a
	pop	%rax
	lea	name(%rip), %rsi
	call	puts
	lea	stack_ok(%rip), %rsi
	call	puts
	mov	$0x10, %al
	out	%al, $0xf4		# debug-exit: status 33
1:	hlt				# not reached
	jmp	1b

name:		.asciz	"low_elf64: "
cr3:		.asciz	"CR3="
rsp:		.asciz	" RSP="
gdtr:		.asciz	" GDTR.BASE="
stack_ok:	.asciz	"stack ok\n"

	.include "print64.inc"

	.bss
	.skip	0x7e000			# 0x2000-0x80000 (low_elf64.ld puts .bss at 0x2000)
