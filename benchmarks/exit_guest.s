# exit_guest.s - the exit-cost benchmark guest: `count` VM exits of one kind.
# Mode: "long" (CPL0) or "user" (CPL3, IOPL=3): 64-bit, identity-mapped,
# entered at 0x100000. It touches no stack and uses no privileged instruction,
# so the same bytes run in both modes.
# The VMM writes a parameter block at guest-physical 0x90000 (clear of the
# VMM's tables, stack and the image) before the run:
#   0x90000  u64 count   how many exits to make (0 is allowed)
#   0x90008  u64 kind    0: port I/O write, `out %al, %dx` to port 0x700
#                        1: MMIO write, `movl %eax, (%rdi)` to 0xd0000000
#                           (in the MMIO hole: no RAM, so every store exits)
#                        2: port I/O read, `in %dx, %al` from port 0x700
# Then it writes to the debug-exit port 0xf4: 0 when the loop ran, 1 for an
# unknown kind (exit status 1 or 3 under pyvmm, as under QEMU). Each loop
# iteration is one exit and two more instructions (dec, jnz).
	.code64
	.text
	.globl	_start
	.equ	PARAMS, 0x90000
	.equ	PORT, 0x700
	.equ	MMIO, 0xd0000000
	.equ	DEBUG_EXIT, 0xf4
_start:
	mov	PARAMS, %rcx		# count
	mov	PARAMS + 8, %rbx	# kind
	mov	$PORT, %edx
	mov	$MMIO, %edi		# zero-extended into %rdi
	xor	%eax, %eax
	test	%rcx, %rcx
	jz	done
	cmp	$0, %rbx
	je	port_out
	cmp	$1, %rbx
	je	mmio_write
	cmp	$2, %rbx
	je	port_in
	mov	$1, %al			# unknown kind
	jmp	done

port_out:
	out	%al, %dx
	dec	%rcx
	jnz	port_out
	jmp	done

mmio_write:
	movl	%eax, (%rdi)
	dec	%rcx
	jnz	mmio_write
	jmp	done

port_in:
	in	%dx, %al
	dec	%rcx
	jnz	port_in
	xor	%eax, %eax

done:
	out	%al, $DEBUG_EXIT
	jmp	done			# a VMM that resumes anyway gets the same exit again
