# workload.s - the entry of guests/container/workload.elf, a static x86-64
# Linux executable with no C library (see workload.c): hand the initial stack
# (argc, argv, envp) to workload_main, then exit_group with its return value.
	.text
	.globl	_start
_start:
	xor	%ebp, %ebp
	mov	%rsp, %rdi		# argc at (%rsp), argv after it, then envp
	and	$-16, %rsp		# the ABI's alignment at a call
	call	workload_main
	mov	%eax, %edi
	mov	$231, %eax		# exit_group(status)
	syscall
	hlt
	.section .note.GNU-stack, "", @progbits
