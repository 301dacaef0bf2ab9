# syscall.s - a long-mode kernel sets SYSCALL up as Linux does (EFER.SCE,
# STAR, LSTAR, SFMASK), goes to CPL 3 with sysretq, and its user program
# makes system calls; #PF faults, from CPL 0 and CPL 3, are handled too.
#
#   pyvmm boot --mode long --stats guests/tests/syscall.bin
#
# A host whose KVM leaves a CPL 3 `syscall` at CPL 3 (kvm_pvm) raises #PF at
# LSTAR instead; pyvmm's SYSCALL repair (pyvmm/arch/x86_64/syscall_repair.py)
# completes the entry, and --stats counts it ("syscall repairs: 8"). On
# VT-x/AMD-V the CPU does it. Either way the output is:
#
#   syscall: kernel ready
#   #PF: kernel fault at 0000000040000000 fixed up
#   syscall: handler moved
#   user: hello from CPL3
#   user: 40+2=000000000000002a
#   user: #PF at 0000000040000000 fixed up
#   user: kernel saw CPL0 IF=0 user IF=1 RSP kept
#   user: exit
#   syscall: 8 calls
#
# and debug-exit 0x2b (status 87). Without the repair on such a host the #PF
# handler finds a user fetch at LSTAR and says so ("#PF: user fetch at
# LSTAR: syscall stayed at CPL3"), then debug-exit 0x3d (status 123).
#
# Layout (all identity-mapped with 2 MiB pages): 0-2 MiB kernel only (this
# image at 0x100000, the tables below), 2-4 MiB user (the user program is
# copied to 0x200000, its stack below 0x400000); 1 GiB up is unmapped.
# Selectors as Linux's: kernel CS 0x10, DS 0x18, user CS 0x33, SS 0x2b.
	.code64
	.text
	.globl	_start
	.set	PML4, 0x10000
	.set	PDPT, 0x11000
	.set	PD, 0x12000
	.set	GDT, 0x13000
	.set	TSS, 0x14000
	.set	IDT1, 0x15000
	.set	IDT2, 0x16000
	.set	KSTACK, 0x70000		# TSS.RSP0: where #PF frames go
	.set	SYSCALL_STACK, 0x60000
	.set	USER, 0x200000
	.set	USER_STACK, 0x3ff000
	.set	UNMAPPED, 0x40000000
	.set	FIXUP, 0x3ffff0		# where a #PF at UNMAPPED resumes (user-writable)
	.set	MSR_EFER, 0xc0000080
	.set	MSR_STAR, 0xc0000081
	.set	MSR_LSTAR, 0xc0000082
	.set	MSR_SFMASK, 0xc0000084
	.set	SFMASK, 0x47700		# TF DF IF IOPL AC NT, as Linux
_start:
	mov	$KSTACK, %rsp
	# GDT: null, -, kernel code 0x10, kernel data 0x18, user code32 0x23,
	# user data 0x2b, user code 0x33, TSS 0x38 (16 bytes).
	mov	$GDT, %rdi
	movq	$0, (%rdi)
	movq	$0, 8(%rdi)
	movabs	$0x00af9a000000ffff, %rax
	mov	%rax, 0x10(%rdi)
	movabs	$0x00cf92000000ffff, %rax
	mov	%rax, 0x18(%rdi)
	movabs	$0x00cffa000000ffff, %rax
	mov	%rax, 0x20(%rdi)
	movabs	$0x00cff2000000ffff, %rax
	mov	%rax, 0x28(%rdi)
	movabs	$0x00affa000000ffff, %rax
	mov	%rax, 0x30(%rdi)
	movabs	$0x0000890140000067, %rax	# base 0x14000, limit 0x67, 64-bit TSS
	mov	%rax, 0x38(%rdi)
	movq	$0, 0x40(%rdi)
	# TSS: RSP0 only.
	mov	$TSS, %rdi
	xor	%eax, %eax
	mov	$0x68/8, %ecx
	rep stosq
	movq	$KSTACK, TSS+4
	lgdt	gdtr(%rip)
	push	$0x10
	lea	1f(%rip), %rax
	push	%rax
	lretq
1:	mov	$0x18, %ax
	mov	%ax, %ds
	mov	%ax, %es
	mov	%ax, %ss
	mov	$0x38, %ax
	ltr	%ax

	# Page tables: 0-2 MiB kernel, 2-4 MiB user, nothing from 1 GiB.
	mov	$PML4, %rdi
	xor	%eax, %eax
	mov	$3*4096/8, %ecx
	rep stosq
	movq	$PDPT + 7, PML4
	movq	$PD + 7, PDPT
	movq	$0x000000 + 0x83, PD		# present, writable, 2 MiB, kernel
	movq	$0x200000 + 0x87, PD+8		# present, writable, 2 MiB, user
	mov	$PML4, %rax
	mov	%rax, %cr3

	# IDT1: every vector to `unexpected`, #PF to pf_handler.
	mov	$IDT1, %rdi
	lea	unexpected(%rip), %rax
	call	fill_idt
	mov	$IDT1 + 14*16, %rdi
	lea	pf_handler(%rip), %rax
	call	set_gate
	lidt	idtr1(%rip)

	# SYSCALL: EFER.SCE, STAR (kernel CS 0x10; sysretq to 0x33/0x2b), LSTAR, SFMASK.
	mov	$MSR_EFER, %ecx
	rdmsr
	or	$1, %eax
	wrmsr
	mov	$MSR_STAR, %ecx
	xor	%eax, %eax
	mov	$0x00230010, %edx
	wrmsr
	mov	$MSR_LSTAR, %ecx
	lea	syscall_entry(%rip), %rax
	mov	%rax, %rdx
	shr	$32, %rdx
	wrmsr
	mov	$MSR_SFMASK, %ecx
	mov	$SFMASK, %eax
	xor	%edx, %edx
	wrmsr
	lea	m_ready(%rip), %rsi
	call	print
	# A VMM that completes `syscall` looks at the guest every now and then
	# (Linux runs for seconds between syscall_init and /init): let the RTC's
	# seconds change twice, a second or two.
	call	rtc_seconds
	mov	%al, %bl
1:	call	rtc_seconds
	cmp	%al, %bl
	je	1b
	mov	%al, %bl
1:	call	rtc_seconds
	cmp	%al, %bl
	je	1b

	# A kernel #PF: the handler resumes at FIXUP.
	lea	2f(%rip), %rax
	mov	%rax, FIXUP
	mov	$UNMAPPED, %rax
	mov	(%rax), %rax
2:	lea	m_kernel_pf(%rip), %rsi
	call	print

	# IDT2: the same, but a #PF handler that starts otherwise, elsewhere.
	mov	$IDT2, %rdi
	lea	unexpected(%rip), %rax
	call	fill_idt
	mov	$IDT2 + 14*16, %rdi
	lea	pf_handler2(%rip), %rax
	call	set_gate
	lidt	idtr2(%rip)
	lea	m_moved(%rip), %rsi
	call	print
	call	rtc_seconds		# again, for the VMM to see the new #PF handler
	mov	%al, %bl
1:	call	rtc_seconds
	cmp	%al, %bl
	je	1b
	mov	%al, %bl
1:	call	rtc_seconds
	cmp	%al, %bl
	je	1b

	# The user program to 0x200000, then CPL 3: sysretq to RCX with RFLAGS = R11.
	lea	user_start(%rip), %rsi
	mov	$USER, %rdi
	mov	$user_end - user_start, %ecx
	rep movsb
	mov	$USER_STACK, %rsp
	mov	$USER, %rcx
	mov	$0x202, %r11
	sysretq

# rtc_seconds: %al = the CMOS RTC's seconds register (index 0).
rtc_seconds:
	xor	%eax, %eax
	out	%al, $0x70
	in	$0x71, %al
	ret

# fill_idt: the 256 gates at %rdi to %rax.
fill_idt:
	mov	$256, %ecx
1:	push	%rax
	call	set_gate
	pop	%rax
	add	$16, %rdi
	loop	1b
	ret

# set_gate: the gate at %rdi to %rax (64-bit interrupt gate, CS 0x10, DPL 0).
set_gate:
	mov	%ax, (%rdi)
	movw	$0x10, 2(%rdi)
	movw	$0x8e00, 4(%rdi)
	shr	$16, %rax
	mov	%ax, 6(%rdi)
	shr	$16, %rax
	mov	%eax, 8(%rdi)
	movl	$0, 12(%rdi)
	ret

# print: the NUL-terminated string at %rsi, in one `rep outsb` (pyvmm serves
# string I/O in Python: where it looks whether SYSCALL is set up).
print:
	mov	%rsi, %rdi
	xor	%eax, %eax
	mov	$-1, %rcx
	repne scasb
	not	%rcx
	dec	%rcx
	mov	$0x3f8, %dx
	rep outsb
	ret

# #PF: a fault at UNMAPPED resumes at FIXUP; anything else is reported.
pf_handler:
	endbr64				# as Linux's IBT kernels start it
	push	%rax
	jmp	pf_common
pf_handler2:
	push	%rax			# not one pyvmm performs: it single-steps it
	jmp	pf_common
pf_common:
	mov	%cr2, %rax
	cmp	$UNMAPPED, %rax
	jne	1f
	mov	FIXUP, %rax
	mov	%rax, 16(%rsp)		# the frame's RIP
	pop	%rax
	add	$8, %rsp		# the error code
	iretq
1:	mov	$MSR_LSTAR, %ecx
	rdmsr
	shl	$32, %rdx
	or	%rdx, %rax
	mov	%cr2, %rbx
	cmp	%rax, %rbx
	jne	2f
	testb	$3, 24(%rsp)		# the frame's CS
	jz	2f
	lea	m_stayed(%rip), %rsi
	call	print
	mov	$0x3d, %al
	out	%al, $0xf4
2:	lea	m_pf(%rip), %rsi
	call	print
	mov	%cr2, %rax
	mov	$16, %ecx
	call	puthex
	mov	$'\n', %al
	call	putc
	mov	$0x3e, %al
	out	%al, $0xf4

unexpected:
	lea	m_unexpected(%rip), %rsi
	call	print
	mov	$0x3f, %al
	out	%al, $0xf4

# The system call entry: RAX the number, RDI, RSI, RDX the arguments (as
# Linux's): 1 write(fd, buf, count), 60 exit(status), 500 add(a, b),
# 501 check(user RSP): bit 0 CPL 0, bit 1 IF clear, bit 2 the user's IF
# (R11), bit 3 RSP kept.
syscall_entry:
	mov	%rsp, user_rsp(%rip)
	mov	$SYSCALL_STACK, %rsp
	push	%rcx
	push	%r11
	incq	calls(%rip)
	cmp	$1, %rax
	je	sys_write
	cmp	$60, %rax
	je	sys_exit
	cmp	$500, %rax
	je	sys_add
	cmp	$501, %rax
	je	sys_check
	mov	$-38, %rax		# ENOSYS
sys_return:
	pop	%r11
	pop	%rcx
	mov	user_rsp(%rip), %rsp
	sysretq
sys_write:
	mov	%rdx, %rcx
	mov	$0x3f8, %dx
	push	%rcx
	rep outsb
	pop	%rax
	jmp	sys_return
sys_add:
	lea	(%rdi, %rsi), %rax
	jmp	sys_return
sys_check:
	xor	%eax, %eax
	mov	%cs, %bx
	test	$3, %bl
	jnz	1f
	or	$1, %eax
1:	pushf
	pop	%rbx
	test	$0x200, %ebx
	jnz	2f
	or	$2, %eax
2:	test	$0x200, %r11d
	jz	3f
	or	$4, %eax
3:	cmp	user_rsp(%rip), %rdi
	jne	4f
	or	$8, %eax
4:	jmp	sys_return
sys_exit:
	lea	m_calls(%rip), %rsi
	call	print
	mov	calls(%rip), %rax
	mov	$1, %ecx
	call	puthex
	lea	m_calls_end(%rip), %rsi
	call	print
	mov	$0x2b, %al
	out	%al, $0xf4

# The user program, copied to USER: position-independent, its data inside it.
user_start:
	lea	u_hello(%rip), %rsi
	mov	$u_hello_end - u_hello, %edx
	call	u_write
	mov	$500, %eax
	mov	$40, %edi
	mov	$2, %esi
	syscall
	lea	u_sum_digits(%rip), %rdi	# 16 hex digits into u_sum
	mov	$16, %ecx
1:	rol	$4, %rax
	mov	%al, %bl
	and	$15, %bl
	add	$'0', %bl
	cmp	$'9', %bl
	jbe	2f
	add	$'a' - '9' - 1, %bl
2:	mov	%bl, (%rdi)
	inc	%rdi
	loop	1b
	lea	u_sum(%rip), %rsi
	mov	$u_sum_end - u_sum, %edx
	call	u_write
	# A user #PF: the kernel's handler resumes at FIXUP, here.
	lea	3f(%rip), %rax
	mov	%rax, FIXUP
	mov	$UNMAPPED, %rax
	mov	(%rax), %rax
3:	lea	u_pf(%rip), %rsi
	mov	$u_pf_end - u_pf, %edx
	call	u_write
	mov	$501, %eax
	mov	%rsp, %rdi
	syscall
	cmp	$15, %rax
	jne	4f
	lea	u_kernel(%rip), %rsi
	mov	$u_kernel_end - u_kernel, %edx
	call	u_write
	jmp	5f
4:	lea	u_bad(%rip), %rsi
	mov	$u_bad_end - u_bad, %edx
	call	u_write
5:	lea	u_exit(%rip), %rsi
	mov	$u_exit_end - u_exit, %edx
	call	u_write
	mov	$60, %eax
	xor	%edi, %edi
	syscall
	jmp	.

# u_write: write(1, %rsi, %rdx).
u_write:
	mov	$1, %eax
	mov	$1, %edi
	syscall
	ret

u_hello:	.ascii	"user: hello from CPL3\n"
u_hello_end:
u_sum:		.ascii	"user: 40+2="
u_sum_digits:	.ascii	"0000000000000000\n"
u_sum_end:
u_pf:		.ascii	"user: #PF at 0000000040000000 fixed up\n"
u_pf_end:
u_kernel:	.ascii	"user: kernel saw CPL0 IF=0 user IF=1 RSP kept\n"
u_kernel_end:
u_bad:		.ascii	"user: the kernel saw a bad system call entry\n"
u_bad_end:
u_exit:		.ascii	"user: exit\n"
u_exit_end:
user_end:

	.balign	8
gdtr:	.word	0x47
	.quad	GDT
idtr1:	.word	256*16 - 1
	.quad	IDT1
idtr2:	.word	256*16 - 1
	.quad	IDT2
user_rsp:	.quad	0
calls:	.quad	0

m_ready:	.asciz	"syscall: kernel ready\n"
m_kernel_pf:	.asciz	"#PF: kernel fault at 0000000040000000 fixed up\n"
m_moved:	.asciz	"syscall: handler moved\n"
m_stayed:	.asciz	"#PF: user fetch at LSTAR: syscall stayed at CPL3\n"
m_pf:		.asciz	"#PF: unexpected, CR2 "
m_unexpected:	.asciz	"unexpected exception\n"
m_calls:	.asciz	"syscall: "
m_calls_end:	.asciz	" calls\n"

	.include "print64.inc"
