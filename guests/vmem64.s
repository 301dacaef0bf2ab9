# vmem64.s - memory virtualization demo, long mode: the guest builds its own
# 4-level page tables with non-identity mappings, switches CR3 to them,
# writes markers through virtual addresses and halts with the mappings still
# live, so the VMM can walk them after the halt.
# Mode: "long" (64-bit CS, identity-mapped low 4 GiB, entered at 0x100000).
#
# Table pages (all zeroed first; the VMM's own tables at 0x1000..0x7000 are
# left alone):
#
#   0x200000  PML4        [0] -> 0x201000  [256] -> 0x204000
#   0x201000  PDPT low    [0] -> 0x202000  [1]   -> 0x207000
#   0x202000  PD low      [0], [1]: 2 MiB identity pages (0x0, 0x200000)
#   0x207000  PD alias    [0] -> 0x203000
#   0x203000  PT alias    [0] -> 0x301000 (alias A), [1] -> 0x301000 (alias B)
#   0x204000  PDPT high   [0] -> 0x205000
#   0x205000  PD high     [0x91] -> 0x206000
#   0x206000  PT high     [0x145] -> 0x300000
#
# Mappings (indices PML4/PDPT/PD/PT; flags of the leaf entry):
#
#   identity  GVA 0x0..0x3fffff    -> GPA 0x0..0x3fffff, 0/0/0 and 0/0/1,
#             2 MiB pages, P|RW|PS (code, stack, these tables, the data pages)
#   high      GVA 0xffff800012345000 -> GPA 0x300000, 256/0/0x91/0x145,
#             4 KiB, P|RW (supervisor), NX clear
#   alias A   GVA 0x40000000 -> GPA 0x301000, 0/1/0/0, 4 KiB, P|RW|US
#   alias B   GVA 0x40001000 -> GPA 0x301000, 0/1/0/1, 4 KiB, P only
#             (read-only, supervisor), NX (bit 63; needs EFER.NXE)
#
# Non-leaf entries are P|RW|US on the low path (so alias A is really user
# accessible) and P|RW on the high path.
#
# Prints:
#   vmem64: cr3=0x%016x                      (read back from CR3)
#   vmem64: wrote %8s at 0x%016x             (marker read back through the high GVA)
#   vmem64: alias 0x40000000 and 0x40001000 share a page: ok|BAD
#   vmem64: identity view of 0x300010: ok|BAD
# then halts (exit status 0) with the new CR3 still loaded.
	.code64
	.text

	.equ	PML4,      0x200000
	.equ	PDPT_LOW,  0x201000
	.equ	PD_LOW,    0x202000
	.equ	PT_ALIAS,  0x203000
	.equ	PDPT_HIGH, 0x204000
	.equ	PD_HIGH,   0x205000
	.equ	PT_HIGH,   0x206000
	.equ	PD_ALIAS,  0x207000
	.equ	TABLES_END, 0x208000

	.equ	HIGH_GPA,  0x300000	# physical page behind the high GVA
	.equ	ALIAS_GPA, 0x301000	# physical page behind both aliases
	.equ	DATA_END,  0x302000

	.equ	HIGH_GVA,  0xffff800012345000
	.equ	ALIAS_A,   0x40000000
	.equ	ALIAS_B,   0x40001000
	.equ	HIGH_OFF,  0x10		# where the markers go in their pages
	.equ	ALIAS_OFF, 0x20

	# Indices of HIGH_GVA: bits 47:39, 38:30, 29:21, 20:12.
	.equ	HIGH_L4,   256
	.equ	HIGH_L3,   0
	.equ	HIGH_L2,   0x91
	.equ	HIGH_L1,   0x145
	.if	(((HIGH_GVA >> 39) & 0x1ff) != HIGH_L4) || (((HIGH_GVA >> 30) & 0x1ff) != HIGH_L3)
	.error	"HIGH_GVA: wrong PML4/PDPT index"
	.endif
	.if	(((HIGH_GVA >> 21) & 0x1ff) != HIGH_L2) || (((HIGH_GVA >> 12) & 0x1ff) != HIGH_L1)
	.error	"HIGH_GVA: wrong PD/PT index"
	.endif

	.equ	P,  1 << 0
	.equ	RW, 1 << 1
	.equ	US, 1 << 2
	.equ	PS, 1 << 7
	.equ	NX, 1 << 63

	.equ	MSR_EFER, 0xc0000080
	.equ	EFER_NXE, 1 << 11

	.globl	_start
_start:
	# Zero the table pages and the two data pages.
	cld
	xor	%eax, %eax
	mov	$PML4, %edi
	mov	$(TABLES_END - PML4) / 8, %ecx
	rep stosq
	mov	$HIGH_GPA, %edi
	mov	$(DATA_END - HIGH_GPA) / 8, %ecx
	rep stosq

	# Low path: identity 2 MiB pages and the alias page table.
	movl	$PDPT_LOW | P | RW | US, PML4 + 8 * 0
	movl	$PD_LOW | P | RW | US, PDPT_LOW + 8 * 0
	movl	$PD_ALIAS | P | RW | US, PDPT_LOW + 8 * 1
	movl	$0x000000 | P | RW | PS, PD_LOW + 8 * 0
	movl	$0x200000 | P | RW | PS, PD_LOW + 8 * 1
	movl	$PT_ALIAS | P | RW | US, PD_ALIAS + 8 * 0
	movl	$ALIAS_GPA | P | RW | US, PT_ALIAS + 8 * 0	# alias A
	movabs	$ALIAS_GPA | P | NX, %rax
	mov	%rax, PT_ALIAS + 8 * 1				# alias B

	# High path.
	movl	$PDPT_HIGH | P | RW, PML4 + 8 * HIGH_L4
	movl	$PD_HIGH | P | RW, PDPT_HIGH + 8 * HIGH_L3
	movl	$PT_HIGH | P | RW, PD_HIGH + 8 * HIGH_L2
	movl	$HIGH_GPA | P | RW, PT_HIGH + 8 * HIGH_L1

	# NX is a reserved bit unless EFER.NXE is set: set it before the switch.
	mov	$MSR_EFER, %ecx
	rdmsr
	or	$EFER_NXE, %eax
	wrmsr

	mov	$PML4, %rax
	mov	%rax, %cr3

	# Write the markers through the virtual addresses.
	mov	marker_hi(%rip), %rax
	movabs	$HIGH_GVA + HIGH_OFF, %rdi
	mov	%rax, (%rdi)
	mov	marker_alias(%rip), %rax
	mov	%rax, ALIAS_A + ALIAS_OFF

	# vmem64: cr3=...
	lea	msg_cr3(%rip), %rsi
	call	puts
	mov	%cr3, %rax
	mov	$16, %ecx
	call	puthex
	mov	$'\n', %al
	call	putc

	# vmem64: wrote <marker read back through the high GVA> at ...
	lea	msg_wrote(%rip), %rsi
	call	puts
	movabs	$HIGH_GVA + HIGH_OFF, %rdi
	mov	(%rdi), %rbx
	mov	$8, %r12d
1:	mov	%bl, %al
	call	putc
	shr	$8, %rbx
	dec	%r12d
	jnz	1b
	lea	msg_at(%rip), %rsi
	call	puts
	movabs	$HIGH_GVA + HIGH_OFF, %rax
	mov	$16, %ecx
	call	puthex
	mov	$'\n', %al
	call	putc

	# Alias B (read-only view) must show what was written through alias A.
	lea	msg_alias(%rip), %rsi
	call	puts
	mov	ALIAS_B + ALIAS_OFF, %rax
	cmp	marker_alias(%rip), %rax
	call	put_verdict

	# The identity view of the high page's GPA must hold the high marker.
	lea	msg_ident(%rip), %rsi
	call	puts
	mov	HIGH_GPA + HIGH_OFF, %rax
	cmp	marker_hi(%rip), %rax
	call	put_verdict

	hlt				# new CR3 still loaded

# put_verdict: write "ok\n" if ZF is set, else "BAD\n".
put_verdict:
	lea	msg_ok(%rip), %rsi
	je	1f
	lea	msg_bad(%rip), %rsi
1:	jmp	puts

marker_hi:	.ascii	"PYVMM-HI"
marker_alias:	.ascii	"ALIAS-AB"
msg_cr3:	.asciz	"vmem64: cr3=0x"
msg_wrote:	.asciz	"vmem64: wrote "
msg_at:		.asciz	" at 0x"
msg_alias:	.asciz	"vmem64: alias 0x40000000 and 0x40001000 share a page: "
msg_ident:	.asciz	"vmem64: identity view of 0x300010: "
msg_ok:		.asciz	"ok\n"
msg_bad:	.asciz	"BAD\n"

	.include "print64.inc"
