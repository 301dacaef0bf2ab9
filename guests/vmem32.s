# vmem32.s - memory virtualization demo, 32-bit paging: the guest enters with
# paging off, builds its own two-level (non-PAE) page tables with
# non-identity mappings, turns paging on, writes markers through virtual
# addresses and halts with the mappings still live, so the VMM can walk them
# after the halt.
# Mode: "protected" (flat segments, paging off, entered at 0x100000).
# (KVM's software backend kvm_pvm cannot run 32-bit paging at all: there the
# guest triple-faults when it sets CR0.PG.)
#
# Table pages (all zeroed first):
#
#   0x200000  page directory  [0]: 4 MiB identity page
#                             [0x200] -> 0x202000  [0x300] -> 0x201000
#   0x201000  PT high         [0x345] -> 0x300000
#   0x202000  PT alias        [0] -> 0x301000 (alias A), [1] -> 0x301000 (alias B)
#
# Mappings (indices PDE/PTE; flags of the leaf entry):
#
#   identity  GVA 0x0..0x3fffff -> GPA 0x0..0x3fffff, PDE 0, 4 MiB page
#             (CR4.PSE), P|RW|PS (code, stack, these tables, the data pages)
#   high      GVA 0xc0345000 -> GPA 0x300000, 0x300/0x345, 4 KiB, P|RW
#   alias A   GVA 0x80000000 -> GPA 0x301000, 0x200/0, 4 KiB, P|RW|US
#   alias B   GVA 0x80001000 -> GPA 0x301000, 0x200/1, 4 KiB, P only
#             (read-only, supervisor)
#
# The directory entries are P|RW|US for the alias table (so alias A is really
# user accessible) and P|RW for the high table.
#
# Prints:
#   vmem32: cr3=0x%08x                       (read back from CR3)
#   vmem32: wrote %8s at 0x%08x              (marker read back through the high GVA)
#   vmem32: alias 0x80000000 and 0x80001000 share a page: ok|BAD
#   vmem32: identity view of 0x300010: ok|BAD
# then halts (exit status 0) with paging and the new CR3 still on.
	.code32
	.text

	.equ	PD,        0x200000
	.equ	PT_HIGH,   0x201000
	.equ	PT_ALIAS,  0x202000
	.equ	TABLES_END, 0x203000

	.equ	HIGH_GPA,  0x300000	# physical page behind the high GVA
	.equ	ALIAS_GPA, 0x301000	# physical page behind both aliases
	.equ	DATA_END,  0x302000

	.equ	HIGH_GVA,  0xc0345000
	.equ	ALIAS_A,   0x80000000
	.equ	ALIAS_B,   0x80001000
	.equ	HIGH_OFF,  0x10		# where the markers go in their pages
	.equ	ALIAS_OFF, 0x20

	# Indices: bits 31:22 select the PDE, bits 21:12 the PTE.
	.equ	HIGH_PDE,  0x300
	.equ	HIGH_PTE,  0x345
	.equ	ALIAS_PDE, 0x200
	.if	((HIGH_GVA >> 22) != HIGH_PDE) || (((HIGH_GVA >> 12) & 0x3ff) != HIGH_PTE)
	.error	"HIGH_GVA: wrong PDE/PTE index"
	.endif
	.if	((ALIAS_A >> 22) != ALIAS_PDE) || ((ALIAS_B >> 22) != ALIAS_PDE)
	.error	"ALIAS_A/ALIAS_B: wrong PDE index"
	.endif

	.equ	P,  1 << 0
	.equ	RW, 1 << 1
	.equ	US, 1 << 2
	.equ	PS, 1 << 7

	.equ	CR0_PG,  1 << 31
	.equ	CR4_PSE, 1 << 4

	.globl	_start
_start:
	# Zero the table pages and the two data pages.
	cld
	xor	%eax, %eax
	mov	$PD, %edi
	mov	$(TABLES_END - PD) / 4, %ecx
	rep stosl
	mov	$HIGH_GPA, %edi
	mov	$(DATA_END - HIGH_GPA) / 4, %ecx
	rep stosl

	movl	$0x000000 | P | RW | PS, PD + 4 * 0
	movl	$PT_HIGH | P | RW, PD + 4 * HIGH_PDE
	movl	$PT_ALIAS | P | RW | US, PD + 4 * ALIAS_PDE
	movl	$HIGH_GPA | P | RW, PT_HIGH + 4 * HIGH_PTE
	movl	$ALIAS_GPA | P | RW | US, PT_ALIAS + 4 * 0	# alias A
	movl	$ALIAS_GPA | P, PT_ALIAS + 4 * 1		# alias B

	mov	%cr4, %eax
	or	$CR4_PSE, %eax
	mov	%eax, %cr4
	mov	$PD, %eax
	mov	%eax, %cr3
	mov	%cr0, %eax
	or	$CR0_PG, %eax		# PE stays set
	mov	%eax, %cr0
	jmp	1f			# flush the prefetch queue
1:
	# Write the markers through the virtual addresses.
	mov	marker_hi, %eax
	mov	%eax, HIGH_GVA + HIGH_OFF
	mov	marker_hi + 4, %eax
	mov	%eax, HIGH_GVA + HIGH_OFF + 4
	mov	marker_alias, %eax
	mov	%eax, ALIAS_A + ALIAS_OFF
	mov	marker_alias + 4, %eax
	mov	%eax, ALIAS_A + ALIAS_OFF + 4

	# vmem32: cr3=...
	mov	$msg_cr3, %esi
	call	puts
	mov	%cr3, %eax
	mov	$8, %ecx
	call	puthex
	mov	$'\n', %al
	call	putc

	# vmem32: wrote <marker read back through the high GVA> at ...
	mov	$msg_wrote, %esi
	call	puts
	mov	$HIGH_GVA + HIGH_OFF, %ebx
1:	mov	(%ebx), %al
	call	putc
	inc	%ebx
	cmp	$HIGH_GVA + HIGH_OFF + 8, %ebx
	jne	1b
	mov	$msg_at, %esi
	call	puts
	mov	$HIGH_GVA + HIGH_OFF, %eax
	mov	$8, %ecx
	call	puthex
	mov	$'\n', %al
	call	putc

	# Alias B (read-only view) must show what was written through alias A.
	mov	$msg_alias, %esi
	call	puts
	mov	$ALIAS_B + ALIAS_OFF, %ebx
	mov	$marker_alias, %edi
	call	put_verdict

	# The identity view of the high page's GPA must hold the high marker.
	mov	$msg_ident, %esi
	call	puts
	mov	$HIGH_GPA + HIGH_OFF, %ebx
	mov	$marker_hi, %edi
	call	put_verdict

	hlt				# paging and the new CR3 still on

# put_verdict: write "ok\n" if the 8 bytes at %ebx equal the 8 at %edi,
# else "BAD\n".  Clobbers %eax, %edx, %esi.
put_verdict:
	mov	$msg_bad, %esi
	mov	(%ebx), %eax
	cmp	(%edi), %eax
	jne	1f
	mov	4(%ebx), %eax
	cmp	4(%edi), %eax
	jne	1f
	mov	$msg_ok, %esi
1:	jmp	puts

marker_hi:	.ascii	"PYVMM-32"
marker_alias:	.ascii	"ALIAS-32"
msg_cr3:	.asciz	"vmem32: cr3=0x"
msg_wrote:	.asciz	"vmem32: wrote "
msg_at:		.asciz	" at 0x"
msg_alias:	.asciz	"vmem32: alias 0x80000000 and 0x80001000 share a page: "
msg_ident:	.asciz	"vmem32: identity view of 0x300010: "
msg_ok:		.asciz	"ok\n"
msg_bad:	.asciz	"BAD\n"

	.include "print32.inc"
