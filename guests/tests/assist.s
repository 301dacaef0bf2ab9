# assist.s - a long-mode kernel (CPL 0) runs the instructions of pyvmm's
# emulation assist table (pyvmm/arch/x86_64/assist/table.py) and prints what
# they did.
#
#   pyvmm boot --mode long --stats guests/tests/assist.bin
#
# On VT-x/AMD-V the CPU runs them all. A KVM that emulates CPL 0 code
# (kvm_pvm) gives up on some of them (KVM_EXIT_INTERNAL_ERROR) and pyvmm
# performs them; --stats counts those. Either way the output is the same:
#
#   assist: start
#   int3: #BP handler ran once, returned after int3
#   popcnt r64: 20 flags 0000
#   popcnt m32: 02
#   popcnt r16: 1234567890ab0010
#   popcnt zero: 00 flags 0040
#   stac: AC=1
#   clac: AC=0
#   fwait: nothing pending, went on
#   ldmxcsr/stmxcsr: 7f80
#   movq/movd: 0000000055667788 1122334455667788
#   pxor: 00ff00ff00ff00ff
#   fnstsw after fninit, fnclex: 0000
#   crc32c of 123456789: e3069283
#   cmpxchg16b: ZF=1 0000000022222222 ZF=0 0000000022222222
#   assist: done
#
# (`popcnt: not in CPUID`, `clac/stac: no SMAP in CPUID`, `crc32: no SSE4.2
# in CPUID` or `cmpxchg16b: no CX16 in CPUID` instead of their lines where
# the guest's CPUID lacks them) and the run ends through debug-exit 0x15
# (status 43).  int3 runs once, popcnt 4 times, stac, clac, fwait, ldmxcsr,
# stmxcsr, movd, fnstsw and fnclex once each, movq 4 times, pxor and
# cmpxchg16b twice, crc32 9 times (the SSE ones after the guest turns SSE
# on: CR0.EM clear, CR4.OSFXSR set).
	.code64
	.text
	.globl	_start
	.set	IDT, 0x300000		# 256 gates of 16 bytes, in RAM above the image
	.set	STATUS_FLAGS, 0x8d5	# OF SF ZF AF PF CF
_start:
	mov	$0x90000, %rsp
	lea	m_start(%rip), %rsi
	call	puts

	# Gate 3 (#BP): a 64-bit interrupt gate to bp_handler in this code segment.
	mov	$IDT, %rdi
	lea	bp_handler(%rip), %rax
	mov	%ax, 3*16(%rdi)
	mov	%cs, %dx
	mov	%dx, 3*16+2(%rdi)
	movw	$0x8e00, 3*16+4(%rdi)	# present, DPL 0, 64-bit interrupt gate
	shr	$16, %rax
	mov	%ax, 3*16+6(%rdi)
	shr	$16, %rax
	mov	%eax, 3*16+8(%rdi)
	movl	$0, 3*16+12(%rdi)
	lidt	idtr(%rip)

	# int3: a trap; the handler must see the address after it.
	int3
after_int3:
	lea	after_int3(%rip), %rax
	cmp	bp_rip(%rip), %rax
	jne	int3_bad
	cmpl	$1, bp_count(%rip)
	jne	int3_bad
	lea	m_int3(%rip), %rsi
	call	puts
	jmp	popcnt_test
int3_bad:
	lea	m_int3_bad(%rip), %rsi
	call	puts

popcnt_test:
	mov	$1, %eax
	cpuid
	bt	$23, %ecx		# CPUID.1:ECX.POPCNT
	jc	1f
	lea	m_no_popcnt(%rip), %rsi
	call	puts
	jmp	smap_test
1:	push	$STATUS_FLAGS | 2	# every status flag set: popcnt clears them
	popfq
	movabs	$0xf0f0f0f0f0f0f0f0, %rbx
	popcnt	%rbx, %rax		# 32
	pushfq
	pop	%r12
	push	%rax
	lea	m_popcnt64(%rip), %rsi
	call	puts
	pop	%rax
	mov	$2, %ecx
	call	puthex
	lea	m_flags(%rip), %rsi
	call	puts
	mov	%r12, %rax
	and	$STATUS_FLAGS, %eax
	mov	$4, %ecx
	call	puthex
	call	newline

	popcntl	value32(%rip), %eax	# RIP-relative memory operand: 2
	push	%rax
	lea	m_popcnt32(%rip), %rsi
	call	puts
	pop	%rax
	mov	$2, %ecx
	call	puthex
	call	newline

	movabs	$0x1234567890abcdef, %rax
	mov	$0xffff, %dx
	popcnt	%dx, %ax		# 16; the upper 48 bits stay
	push	%rax
	lea	m_popcnt16(%rip), %rsi
	call	puts
	pop	%rax
	mov	$16, %ecx
	call	puthex
	call	newline

	push	$2			# every status flag clear: ZF must come on
	popfq
	lea	zero64(%rip), %rbx
	mov	$-1, %rax
	popcnt	(%rbx), %rax		# 0, ZF
	pushfq
	pop	%r12
	push	%rax
	lea	m_popcnt0(%rip), %rsi
	call	puts
	pop	%rax
	mov	$2, %ecx
	call	puthex
	lea	m_flags(%rip), %rsi
	call	puts
	mov	%r12, %rax
	and	$STATUS_FLAGS, %eax
	mov	$4, %ecx
	call	puthex
	call	newline

smap_test:
	xor	%eax, %eax
	cpuid
	cmp	$7, %eax
	jb	no_smap
	mov	$7, %eax
	xor	%ecx, %ecx
	cpuid
	bt	$20, %ebx		# CPUID.(7,0):EBX.SMAP
	jnc	no_smap
	stac
	lea	m_stac(%rip), %rsi
	call	print_ac
	clac
	lea	m_clac(%rip), %rsi
	call	print_ac
	jmp	fwait_test
no_smap:
	lea	m_no_smap(%rip), %rsi
	call	puts

fwait_test:
	fwait
	lea	m_fwait(%rip), %rsi
	call	puts

	# SSE on: CR0.EM clear, CR0.MP set, CR4.OSFXSR and OSXMMEXCPT set.
	mov	%cr0, %rax
	and	$~4, %rax
	or	$2, %rax
	mov	%rax, %cr0
	mov	%cr4, %rax
	or	$0x600, %rax
	mov	%rax, %cr4
	ldmxcsr	mxcsr_in(%rip)		# round toward zero, all exceptions masked
	stmxcsr	mxcsr_out(%rip)
	lea	m_mxcsr(%rip), %rsi
	call	puts
	mov	mxcsr_out(%rip), %eax
	mov	$4, %ecx
	call	puthex
	call	newline

	movabs	$0x1122334455667788, %rax
	mov	$-1, %rcx
	movq	%rax, %xmm3
	movd	%xmm3, %ecx		# the low half, zero-extended into rcx
	movq	%xmm3, xmm_out(%rip)
	mov	%rcx, %r12
	lea	m_movd(%rip), %rsi
	call	puts
	mov	%r12, %rax
	mov	$16, %ecx
	call	puthex
	mov	$' ', %al
	call	putc
	mov	xmm_out(%rip), %rax
	mov	$16, %ecx
	call	puthex
	call	newline

	# pxor: xmm3 ^= xmm4 (a register), then ^= pattern (aligned memory).
	movabs	$0x11dd33bb55997700, %rax
	movq	%rax, %xmm4
	pxor	%xmm4, %xmm3		# 0x00ff00ff00ff0088
	pxor	pattern(%rip), %xmm3	# 0x00ff00ff00ff00ff
	movq	%xmm3, xmm_out(%rip)
	lea	m_pxor(%rip), %rsi
	call	puts
	mov	xmm_out(%rip), %rax
	mov	$16, %ecx
	call	puthex
	call	newline

	fninit
	fnclex
	mov	$-1, %eax
	fnstsw	%ax
	push	%rax
	lea	m_fnstsw(%rip), %rsi
	call	puts
	pop	%rax
	mov	$4, %ecx
	call	puthex
	call	newline

	mov	$1, %eax
	cpuid
	bt	$20, %ecx		# CPUID.1:ECX.SSE4_2
	jc	1f
	lea	m_no_crc32(%rip), %rsi
	call	puts
	jmp	done
1:	lea	digits(%rip), %rsi
	mov	$-1, %eax
2:	crc32b	(%rsi), %eax
	inc	%rsi
	cmpb	$0, (%rsi)
	jne	2b
	not	%eax
	push	%rax
	lea	m_crc32(%rip), %rsi
	call	puts
	pop	%rax
	mov	$8, %ecx
	call	puthex
	call	newline

done:
	mov	$1, %eax
	cpuid
	bt	$13, %ecx		# CPUID.1:ECX.CX16
	jc	1f
	lea	m_no_cx16(%rip), %rsi
	call	puts
	jmp	finish
1:	lea	m_cx16(%rip), %rsi
	call	puts
	lea	pair(%rip), %rdi	# holds 0x11111111:0
	mov	$0x11111111, %eax	# RDX:RAX = what it holds: stored
	xor	%edx, %edx
	mov	$0x22222222, %ebx
	xor	%ecx, %ecx
	lock cmpxchg16b (%rdi)
	call	print_zf_and_pair
	mov	$0x33333333, %eax	# not what it holds: RDX:RAX := it
	lock cmpxchg16b (%rdi)
	call	print_zf_and_rax
	call	newline

finish:
	lea	m_done(%rip), %rsi
	call	puts
	mov	$0x15, %al
	out	%al, $0xf4
	hlt

# print_zf_and_pair: print "ZF=<bit> " then the low quadword of pair, and a space.
print_zf_and_pair:
	pushfq
	lea	m_zf(%rip), %rsi
	call	puts
	pop	%rax
	mov	$6, %ecx
	call	putbit
	mov	$' ', %al
	call	putc
	mov	pair(%rip), %rax
	mov	$16, %ecx
	call	puthex
	mov	$' ', %al
	jmp	putc

# print_zf_and_rax: print "ZF=<bit> " then RAX (what cmpxchg16b loaded).
print_zf_and_rax:
	pushfq
	push	%rax
	lea	m_zf(%rip), %rsi
	call	puts
	pop	%rbx
	pop	%rax
	mov	$6, %ecx
	call	putbit
	mov	$' ', %al
	call	putc
	mov	%rbx, %rax
	mov	$16, %ecx
	jmp	puthex

# print_ac: print the string at %rsi, then RFLAGS.AC and a newline.
print_ac:
	pushfq
	call	puts
	pop	%rax
	mov	$18, %ecx
	call	putbit
newline:
	mov	$'\n', %al
	jmp	putc

# The #BP handler: note where it was called from, then return to it at the
# same privilege level without iret (which a KVM emulating CPL 0 code may not
# do): RFLAGS from the frame, then RSP, then jump to the saved RIP.
bp_handler:
	mov	%rax, saved_rax(%rip)
	mov	(%rsp), %rax		# the frame: RIP, CS, RFLAGS, RSP, SS
	mov	%rax, bp_rip(%rip)
	incl	bp_count(%rip)
	mov	24(%rsp), %rax
	mov	%rax, saved_rsp(%rip)
	push	16(%rsp)
	popfq
	mov	saved_rsp(%rip), %rsp
	mov	saved_rax(%rip), %rax
	jmp	*bp_rip(%rip)

	.p2align 4
pair:		.quad	0x11111111, 0
pattern:	.quad	0x0000000000000077, 0
	.p2align 3
idtr:	.word	256*16 - 1
	.quad	IDT
	.p2align 3
bp_rip:		.quad	0
bp_count:	.quad	0
saved_rax:	.quad	0
saved_rsp:	.quad	0
zero64:		.quad	0
value32:	.long	0x80000001
mxcsr_in:	.long	0x7f80
mxcsr_out:	.long	0
xmm_out:	.quad	0

m_start:	.asciz	"assist: start\n"
m_int3:		.asciz	"int3: #BP handler ran once, returned after int3\n"
m_int3_bad:	.asciz	"int3: FAIL: the #BP handler did not run once with the address after int3\n"
m_no_popcnt:	.asciz	"popcnt: not in CPUID\n"
m_popcnt64:	.asciz	"popcnt r64: "
m_popcnt32:	.asciz	"popcnt m32: "
m_popcnt16:	.asciz	"popcnt r16: "
m_popcnt0:	.asciz	"popcnt zero: "
m_flags:	.asciz	" flags "
m_stac:		.asciz	"stac: AC="
m_clac:		.asciz	"clac: AC="
m_no_smap:	.asciz	"clac/stac: no SMAP in CPUID\n"
m_fwait:	.asciz	"fwait: nothing pending, went on\n"
m_mxcsr:	.asciz	"ldmxcsr/stmxcsr: "
m_movd:		.asciz	"movq/movd: "
m_pxor:		.asciz	"pxor: "
m_fnstsw:	.asciz	"fnstsw after fninit, fnclex: "
m_crc32:	.asciz	"crc32c of 123456789: "
m_no_crc32:	.asciz	"crc32: no SSE4.2 in CPUID\n"
digits:		.asciz	"123456789"
m_cx16:		.asciz	"cmpxchg16b: "
m_zf:		.asciz	"ZF="
m_no_cx16:	.asciz	"cmpxchg16b: no CX16 in CPUID\n"
m_done:		.asciz	"assist: done\n"

	.include "print64.inc"
