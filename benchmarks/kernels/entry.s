# entry.s - the first bytes of kernels.bin: the guest entry stub and the kernel table.
#
# Guest side (64-bit, CPL0 or CPL3, entered at the image's first byte with a
# stack): read the parameter block at PARAMS_GPA, call the kernel it names,
# write the 64-bit result as two 32-bit `out`s (low half to RESULT_PORT, high
# half to RESULT_PORT + 4), then write 0 to the debug-exit port (the run ends
# with status 1). An out-of-range kernel index writes 1 instead (status 3).
# `hlt` is not used: it would fault at CPL3.
#
# Host side: the runner maps the whole image executable and calls a kernel
# at its table offset; it never runs this stub.
#
# Layout (offsets from the image's first byte, little-endian):
#   0x00  this stub (at most 0x80 bytes)
#   0x80  magic "PYVMMKRN", u32 table version (1), u32 kernel count
#   0x90  count entries of 24 bytes: name (16 bytes, NUL-padded), u64 offset
#         of the kernel `uint64_t k(uint64_t n, uint64_t base)`
#
# Parameter block at PARAMS_GPA: u64 kernel index, u64 n, u64 base (a GPA).

	.set	PARAMS_GPA, 0x90000
	.set	RESULT_PORT, 0xe00
	.set	DEBUG_EXIT_PORT, 0xf4
	.set	TABLE_VERSION, 1
	.set	ENTRY_SIZE, 24

	.code64
	.section .text.entry, "ax"
	.globl	_start
_start:
	mov	$PARAMS_GPA, %ebx
	mov	(%rbx), %rax			# kernel index
	cmp	$KERNEL_COUNT, %rax
	jae	bad_index
	imul	$ENTRY_SIZE, %rax, %rax
	lea	kernel_entries(%rip), %rcx
	mov	16(%rcx,%rax), %rax		# the kernel's offset in the image
	lea	_start(%rip), %rcx
	add	%rcx, %rax
	mov	8(%rbx), %rdi			# n
	mov	16(%rbx), %rsi			# base
	call	*%rax				# the stack is 16-byte aligned here
	mov	$RESULT_PORT, %edx
	out	%eax, %dx
	shr	$32, %rax
	add	$4, %edx
	out	%eax, %dx
	xor	%eax, %eax
finish:
	out	%al, $DEBUG_EXIT_PORT
	jmp	finish				# not reached: the VMM stops the run
bad_index:
	mov	$1, %eax
	jmp	finish

	.org	0x80, 0xcc			# the assembler fails if the stub outgrows 0x80
	.ascii	"PYVMMKRN"
	.long	TABLE_VERSION
	.long	KERNEL_COUNT
kernel_entries:
	.macro	kernel name
	.ascii	"\name"
	.org	kernel_entries + (\@ * ENTRY_SIZE) + 16, 0
	.quad	\name - _start			# resolved at link time: no loader fixups
	.endm
	kernel	int_loop
	kernel	mem_checksum
	kernel	sieve
	kernel	cpuid_loop
	kernel	cpuid_leaf
	.set	KERNEL_COUNT, (. - kernel_entries) / ENTRY_SIZE
