# user.s - proves the user-mode entry state: CPL3 with port I/O allowed.
# Mode: "user" (64-bit long mode at CPL3, IOPL=3, entered at 0x100000).
# Prints "user mode: CPL=3 sum=0x%016x\n" (each character through `out`),
# where the sum of 1..1000000 is computed in ring 3 (native speed even where
# ring 0 is emulated), then
# ends through the debug-exit port with 0x2a (exit status 85): `hlt` is
# privileged and would fault at CPL3. (It does not print IOPL: a pushf at
# CPL3 shows the host's IOPL on a kvm_pvm host, not the guest's.)
	.code64
	.text
	.globl	_start
_start:
	lea	msg_cpl(%rip), %rsi
	call	puts
	mov	%cs, %ax		# CPL = the RPL of CS
	and	$3, %al
	add	$'0', %al
	call	putc
	lea	msg_sum(%rip), %rsi
	call	puts
	xor	%eax, %eax
	mov	$1000000, %ecx
1:	add	%rcx, %rax
	loop	1b
	mov	$16, %ecx
	call	puthex
	mov	$'\n', %al
	call	putc
	mov	$0x2a, %al
	out	%al, $0xf4

msg_cpl:  .asciz "user mode: CPL="
msg_sum:  .asciz " sum=0x"

	.include "print64.inc"
