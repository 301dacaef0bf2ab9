# i8042_probe.s - probes the PC keyboard controller (the 8042 at ports 0x60
# and 0x64) the way Linux's i8042 and atkbd drivers do, and prints what it
# answers.  A multiboot kernel: QEMU boots it too, and both print the same:
#
#   qemu-system-x86_64 -accel tcg -display none -serial stdio -no-reboot \
#       -device isa-debug-exit,iobase=0xf4,iosize=0x04 -kernel guests/tests/i8042_probe.elf
#   pyvmm boot guests/tests/i8042_probe.elf
#
# Expected output, then debug-exit 0x21 (exit status 67):
#   i8042: command byte (0x20): 61
#   i8042: self-test (0xaa): status 1d, answer 55
#   i8042: interface tests (0xab, 0xa9): 00 00
#   i8042: output port (0xd0): cf
#   i8042: ports disabled (0xad, 0xa7): command byte 71
#   i8042: ports enabled (0xae, 0xa8): command byte 41
#   i8042: command byte written 0x65: reads 65
#   i8042: keyboard reset (0xff): fa aa
#   i8042: keyboard identify (0xf2): fa ab 41
#   i8042: keyboard echo (0xee): ee
#   i8042: keyboard scanning off, on (0xf5, 0xf4): fa fa
#   i8042: keyboard LEDs (0xed 0x00): fa fa
#   i8042: keyboard scan code set (0xf0 0x00): fa fa 41
#   i8042: keyboard unknown command (0x05): fe
#   i8042: untranslated (command byte 0x24): identify fa ab 83, scan code set fa fa 02
#   i8042: keyboard loopback (0xd2 0x5a): status 01, data 5a
#   i8042: aux loopback (0xd3 0xa5): status 21, data a5
#   i8042: port 0x92: 02
#   i8042: port 0xcf9: 00
#
# The command byte at entry (0x61: keyboard interrupt, aux port disabled,
# translation on) is the one the BIOS left: SeaBIOS under QEMU, pyvmm's
# state at entry without one.  A reply that never comes prints "--".
# Statuses read after a write to 0x60 are masked to OBF and AUXDATA (0x21):
# bit 3 (A2) says which port was written last on an 8042 and on pyvmm, while
# QEMU keeps it set.
	.set	MB_MAGIC, 0x1badb002
	.set	MB_FLAGS, 0x3
	.code32
	.text
	.globl	_start
	.align	4
	.long	MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

_start:
	mov	$stack_top, %esp	# the loader leaves ESP undefined

	mov	$m_ctr, %esi
	call	puts
	mov	$0x20, %al		# read the command byte
	call	kbc_command
	mov	$1, %edx
	call	print_reads
	call	newline

	mov	$m_selftest, %esi
	call	puts
	mov	$0xaa, %al		# controller self-test
	call	kbc_command
	call	wait_output
	in	$KBC_STATUS, %al	# after a command: A2 set, OBF set, system flag
	call	puthex2
	mov	$m_answer, %esi
	call	puts
	mov	$1, %edx
	call	print_reads
	call	newline

	mov	$m_tests, %esi
	call	puts
	mov	$0xab, %al		# keyboard interface test
	call	kbc_command
	mov	$1, %edx
	call	print_reads
	mov	$0xa9, %al		# aux interface test
	call	kbc_command
	mov	$1, %edx
	call	print_reads
	call	newline

	mov	$m_outport, %esi
	call	puts
	mov	$0xd0, %al		# read the output port
	call	kbc_command
	mov	$1, %edx
	call	print_reads
	call	newline

	mov	$m_disabled, %esi
	call	puts
	mov	$0xad, %al
	call	kbc_command
	mov	$0xa7, %al
	call	kbc_command
	call	print_ctr

	mov	$m_enabled, %esi
	call	puts
	mov	$0xae, %al
	call	kbc_command
	mov	$0xa8, %al
	call	kbc_command
	call	print_ctr

	mov	$m_written, %esi
	call	puts
	mov	$0x65, %al		# KBDINT | SYSFLAG | AUXDIS | XLATE
	call	write_ctr
	call	print_ctr

	mov	$m_kbd_reset, %esi
	mov	$0xff, %al
	mov	$2, %edx
	call	keyboard
	mov	$m_kbd_id, %esi
	mov	$0xf2, %al
	mov	$3, %edx
	call	keyboard
	mov	$m_kbd_echo, %esi
	mov	$0xee, %al
	mov	$1, %edx
	call	keyboard
	mov	$m_kbd_scan, %esi
	call	puts
	mov	$0xf5, %al
	call	kbc_data
	mov	$1, %edx
	call	print_reads
	mov	$0xf4, %al
	call	kbc_data
	mov	$1, %edx
	call	print_reads
	call	newline
	mov	$m_kbd_leds, %esi
	mov	$0xed, %al
	xor	%ah, %ah
	mov	$1, %edx
	call	keyboard2
	mov	$m_kbd_set, %esi
	mov	$0xf0, %al
	xor	%ah, %ah
	mov	$2, %edx
	call	keyboard2
	mov	$m_kbd_unknown, %esi
	mov	$0x05, %al
	mov	$1, %edx
	call	keyboard

	mov	$m_untranslated, %esi
	call	puts
	mov	$0x24, %al		# SYSFLAG | AUXDIS: no interrupts, no translation
	call	write_ctr
	mov	$0xf2, %al
	call	kbc_data
	mov	$3, %edx
	call	print_reads
	mov	$m_set, %esi
	call	puts
	mov	$0xf0, %al
	call	kbc_data
	mov	$1, %edx
	call	print_reads
	xor	%al, %al
	call	kbc_data
	mov	$2, %edx
	call	print_reads
	call	newline

	mov	$m_kbd_loop, %esi
	mov	$0xd2, %al
	call	loopback
	mov	$m_aux_loop, %esi
	mov	$0xd3, %al
	call	loopback

	mov	$m_port92, %esi
	call	puts
	in	$0x92, %al
	call	puthex2
	call	newline
	mov	$m_cf9, %esi
	call	puts
	mov	$0xcf9, %dx
	in	%dx, %al
	call	puthex2
	call	newline

	mov	$0x21, %al
	out	%al, $0xf4
	hlt

# keyboard: print the label at %esi, send %al to the keyboard, print %edx replies.
keyboard:
	push	%edx
	push	%eax
	call	puts
	pop	%eax
	call	kbc_data
	pop	%edx
	call	print_reads
	jmp	newline

# keyboard2: print the label at %esi, send the command %al, print its reply,
# then send its parameter %ah and print %edx replies.
keyboard2:
	push	%edx
	push	%eax
	call	puts
	mov	(%esp), %eax
	call	kbc_data
	mov	$1, %edx
	call	print_reads
	pop	%eax
	mov	%ah, %al
	call	kbc_data
	pop	%edx
	call	print_reads
	jmp	newline

# loopback: print the label at %esi, give the controller command %al with the
# data byte 0x5a (0xd2) or 0xa5 (0xd3), then print the status (OBF and
# AUXDATA) and the byte that came back.
loopback:
	push	%eax
	call	puts
	mov	(%esp), %eax
	call	kbc_command
	pop	%eax
	cmp	$0xd2, %al
	mov	$0x5a, %al
	je	1f
	mov	$0xa5, %al
1:	call	kbc_data
	call	wait_output
	in	$KBC_STATUS, %al
	and	$0x21, %al
	call	puthex2
	mov	$m_data, %esi
	call	puts
	mov	$1, %edx
	call	print_reads
	jmp	newline

# print_ctr: read the command byte and print it, then a newline.
print_ctr:
	mov	$0x20, %al
	call	kbc_command
	mov	$1, %edx
	call	print_reads
	jmp	newline

# write_ctr: write %al as the command byte.
write_ctr:
	push	%eax
	mov	$0x60, %al
	call	kbc_command
	pop	%eax
	jmp	kbc_data

# wait_output: wait (bounded) until the output buffer holds a byte.
wait_output:
	mov	$KBC_WAIT, %ecx
1:	in	$KBC_STATUS, %al
	test	$KBC_OBF, %al
	jnz	2f
	loop	1b
2:	ret

# puthex2: write %al as two hex digits.  Clobbers %eax, %ecx, %edx.
puthex2:
	movzbl	%al, %eax
	mov	$2, %ecx
	jmp	puthex

newline:
	mov	$'\n', %al
	jmp	putc

m_ctr:		.asciz	"i8042: command byte (0x20):"
m_selftest:	.asciz	"i8042: self-test (0xaa): status "
m_answer:	.asciz	", answer"
m_tests:	.asciz	"i8042: interface tests (0xab, 0xa9):"
m_outport:	.asciz	"i8042: output port (0xd0):"
m_disabled:	.asciz	"i8042: ports disabled (0xad, 0xa7): command byte"
m_enabled:	.asciz	"i8042: ports enabled (0xae, 0xa8): command byte"
m_written:	.asciz	"i8042: command byte written 0x65: reads"
m_kbd_reset:	.asciz	"i8042: keyboard reset (0xff):"
m_kbd_id:	.asciz	"i8042: keyboard identify (0xf2):"
m_kbd_echo:	.asciz	"i8042: keyboard echo (0xee):"
m_kbd_scan:	.asciz	"i8042: keyboard scanning off, on (0xf5, 0xf4):"
m_kbd_leds:	.asciz	"i8042: keyboard LEDs (0xed 0x00):"
m_kbd_set:	.asciz	"i8042: keyboard scan code set (0xf0 0x00):"
m_kbd_unknown:	.asciz	"i8042: keyboard unknown command (0x05):"
m_untranslated:	.asciz	"i8042: untranslated (command byte 0x24): identify"
m_set:		.asciz	", scan code set"
m_kbd_loop:	.asciz	"i8042: keyboard loopback (0xd2 0x5a): status "
m_aux_loop:	.asciz	"i8042: aux loopback (0xd3 0xa5): status "
m_data:		.asciz	", data"
m_port92:	.asciz	"i8042: port 0x92: "
m_cf9:		.asciz	"i8042: port 0xcf9: "

	.include "print32.inc"
	.include "tests/i8042.inc"

	.bss
	.align	16
	.skip	1024
stack_top:
