# mmio.s - exercises the MMIO hole (0xd0000000..4 GiB) with nothing mapped:
# reads must return all ones and writes must be ignored.
# Mode: "protected" (flat 32-bit segments, paging off, entered at 0x100000).
# Expected output, then halt (exit status 0):
#   mmio read=0xffffffff
#   mmio read8=0xff read16=0xffff
#   mmio reread=0xffffffff        (after writing 0x12345678 to 0xd0000010)
	.code32
	.text
	.globl	_start
	.equ	HOLE, 0xd0000000
_start:
	mov	$msg_read, %esi
	call	puts
	mov	HOLE, %eax		# 32-bit read
	mov	$8, %ecx
	call	puthex

	mov	$msg_read8, %esi
	call	puts
	movzbl	HOLE + 1, %eax		# 8-bit read
	mov	$2, %ecx
	call	puthex
	mov	$msg_read16, %esi
	call	puts
	movzwl	HOLE + 2, %eax		# 16-bit read
	mov	$4, %ecx
	call	puthex

	movl	$0x12345678, HOLE + 0x10	# 32-bit write (ignored)
	mov	$msg_reread, %esi
	call	puts
	mov	HOLE + 0x10, %eax
	mov	$8, %ecx
	call	puthex
	mov	$'\n', %al
	call	putc
	hlt

msg_read:   .asciz "mmio read=0x"
msg_read8:  .asciz "\nmmio read8=0x"
msg_read16: .asciz " read16=0x"
msg_reread: .asciz "\nmmio reread=0x"

	.include "print32.inc"
