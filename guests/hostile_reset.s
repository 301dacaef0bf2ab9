# hostile_reset.s - a guest that resets its machine (for `pyvmm demo isolation`).
# guests/hostile.s cannot do it: a reset ends its run, and its console flood
# and its endless loop must come first.  A multiboot kernel (32-bit protected
# mode at CPL0); QEMU boots it the same way:
#
#   qemu-system-x86_64 -accel tcg -display none -serial stdio -no-reboot \
#       -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
#       -kernel guests/hostile_reset.elf -append port92
#   pyvmm boot guests/hostile_reset.elf -append port92
#
# It reads its clock's year (CMOS register 0x09, BCD) through ports 0x70/0x71,
# then resets its machine through the register its command line names:
#   kbd     0xfe ("pulse the reset line") to the keyboard controller, port 0x64
#   port92  0x01 (bit 0, fast reset) to System Control Port A, port 0x92
#   cf9     0x06 (bits 2 and 1: reset now, hard) to the Reset Control Register, 0xcf9
# and with no argument through each of them in turn, as a kernel falls back
# from one to the next.  Output, here for -append port92 (YY: the year of the
# host's clock, which a fresh VM's clock starts from):
#   hostile_reset: its clock's year: 0xYY
#   hostile_reset: reset its machine: 0x01 to port 0x92
# and the run ends: pyvmm's outcome is "reset" (status 0), QEMU with
# -no-reboot exits 0.  A reset that is ignored prints "hostile_reset: still
# running after the reset" and writes 1 to the debug-exit port (status 3);
# an unknown argument prints "hostile_reset: unknown reset '...': give kbd,
# port92 or cf9" and does the same.
	.set	MB_MAGIC, 0x1badb002
	.set	MB_FLAGS, 0x3
	.set	MB_INFO_CMDLINE, 1 << 2	# the information's flags: cmdline is valid
	.code32
	.text
	.globl	_start
	.align	4
	.long	MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

_start:
	mov	$stack_top, %esp	# the loader leaves ESP undefined
	mov	%ebx, %ebp		# the multiboot information

	mov	$m_year, %esi
	call	puts
	mov	$0x09, %al		# CMOS register 0x09: the year
	out	%al, $0x70
	in	$0x71, %al
	mov	$2, %ecx
	call	puthex
	call	newline

	call	argument
	cmpb	$0, (%esi)
	je	every_reset
	mov	$w_kbd, %edi
	call	word_is
	je	only_kbd
	mov	$w_port92, %edi
	call	word_is
	je	only_port92
	mov	$w_cf9, %edi
	call	word_is
	je	only_cf9
	mov	%esi, %ebx		# an unknown argument
	mov	$m_unknown, %esi
	call	puts
1:	mov	(%ebx), %al		# the argument, up to its end
	test	%al, %al
	jz	2f
	cmp	$' ', %al
	je	2f
	call	putc
	inc	%ebx
	jmp	1b
2:	mov	$m_give, %esi
	call	puts
	jmp	fail

only_kbd:
	call	reset_kbd
	jmp	survived
only_port92:
	call	reset_port92
	jmp	survived
only_cf9:
	call	reset_cf9
	jmp	survived

every_reset:
	call	reset_kbd
	call	reset_port92
	call	reset_cf9
survived:
	mov	$m_survived, %esi
	call	puts
fail:	mov	$1, %al
	out	%al, $0xf4
	hlt

reset_kbd:
	mov	$m_kbd, %esi
	call	puts
	mov	$0xfe, %al
	out	%al, $0x64
	jmp	settle

reset_port92:
	mov	$m_port92, %esi
	call	puts
	mov	$0x01, %al
	out	%al, $0x92
	jmp	settle

reset_cf9:
	mov	$m_cf9, %esi
	call	puts
	mov	$0x06, %al
	mov	$0xcf9, %dx
	out	%al, %dx
	# fall through

# settle: give a reset time to happen before going on (QEMU acts on it at the
# end of its current translation block; pyvmm before the next instruction).
settle:
	mov	$0x10000, %ecx
1:	loop	1b
	ret

# argument: %esi = the command line's second word (the first is the kernel's
# path), or an empty string when there is none.  Clobbers %eax.
argument:
	mov	$empty, %esi
	testl	$MB_INFO_CMDLINE, (%ebp)
	jz	3f
	mov	16(%ebp), %esi
1:	lodsb				# skip the path
	test	%al, %al
	jz	2f
	cmp	$' ', %al
	jne	1b
	jmp	4f
2:	dec	%esi			# at the NUL: no argument
	jmp	3f
4:	cmpb	$' ', (%esi)		# skip the spaces before the argument
	jne	3f
	inc	%esi
	jmp	4b
3:	ret

# word_is: ZF=1 when the argument at %esi is exactly the word at %edi (it
# ends with a NUL or a space).  Keeps %esi; clobbers %eax, %edi.
word_is:
	push	%esi
1:	mov	(%edi), %al
	test	%al, %al
	jz	2f
	cmp	(%esi), %al
	jne	3f
	inc	%esi
	inc	%edi
	jmp	1b
2:	mov	(%esi), %al
	test	%al, %al
	jz	3f
	cmp	$' ', %al
3:	pop	%esi
	ret

newline:
	mov	$'\n', %al
	jmp	putc

m_year:		.asciz	"hostile_reset: its clock's year: 0x"
m_kbd:		.asciz	"hostile_reset: reset its machine: 0xfe to the keyboard controller, port 0x64\n"
m_port92:	.asciz	"hostile_reset: reset its machine: 0x01 to port 0x92\n"
m_cf9:		.asciz	"hostile_reset: reset its machine: 0x06 to port 0xcf9\n"
m_survived:	.asciz	"hostile_reset: still running after the reset\n"
m_unknown:	.asciz	"hostile_reset: unknown reset '"
m_give:		.asciz	"': give kbd, port92 or cf9\n"
w_kbd:		.asciz	"kbd"
w_port92:	.asciz	"port92"
w_cf9:		.asciz	"cf9"
empty:		.byte	0

	.include "print32.inc"

	.bss
	.align	16
	.skip	1024
stack_top:
