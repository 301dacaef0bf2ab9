# multiboot.s - proves Multiboot (v1) loading: an ELF32 kernel linked at
# 0x100000 whose header (flags 0x3: page-aligned modules, memory information;
# no address fields) makes the loader use the ELF program headers.  Checks
# EAX == 0x2BADB002, then prints what the information at EBX says:
#   multiboot: magic ok
#   cmdline: <command line>
#   mem_lower=<decimal>KiB mem_upper=<decimal>KiB
#   mmap: base=0x%016x len=0x%016x type=<decimal>     (one line per entry)
#   mods: <decimal>
#   module <i>: <string> 0x%08x                       (its size, mod_end - mod_start)
# and halts (exit status 0).  A wrong EAX prints "multiboot: bad magic
# 0x%08x" and writes 1 to the debug-exit port (exit status 3).
	.set	MB_MAGIC, 0x1badb002
	.set	MB_FLAGS, 0x3
	.code32
	.text
	.globl	_start
	.align	4
	.long	MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

_start:
	mov	$stack_top, %esp	# the loader leaves ESP undefined
	cmp	$0x2badb002, %eax
	je	1f
	mov	%eax, %ebx
	mov	$bad, %esi
	call	puts
	mov	%ebx, %eax
	call	puthex8
	call	newline
	mov	$1, %al
	out	%al, $0xf4
	hlt

1:	mov	$ok, %esi		# EBX: the information, kept throughout
	call	puts
	mov	(%ebx), %edi		# its flags
	test	$1 << 2, %edi		# cmdline
	jz	1f
	mov	16(%ebx), %esi
	call	puts
1:	mov	$memlo, %esi
	call	puts
	mov	4(%ebx), %eax
	call	putdec
	mov	$memup, %esi
	call	puts
	mov	8(%ebx), %eax
	call	putdec
	mov	$kib, %esi
	call	puts

	test	$1 << 6, %edi		# mmap: entries start with their size field
	jz	3f
	mov	48(%ebx), %ebp
	mov	44(%ebx), %eax
	add	%ebp, %eax
	push	%eax			# end of the map
2:	cmp	(%esp), %ebp
	jae	2f
	mov	$mmbase, %esi
	call	puts
	mov	8(%ebp), %eax
	call	puthex8
	mov	4(%ebp), %eax
	call	puthex8
	mov	$mmlen, %esi
	call	puts
	mov	16(%ebp), %eax
	call	puthex8
	mov	12(%ebp), %eax
	call	puthex8
	mov	$mmtype, %esi
	call	puts
	mov	20(%ebp), %eax
	call	putdec
	call	newline
	add	(%ebp), %ebp
	add	$4, %ebp
	jmp	2b
2:	pop	%eax

3:	mov	$mods, %esi
	call	puts
	xor	%eax, %eax
	test	$1 << 3, %edi		# mods
	jz	1f
	mov	20(%ebx), %eax
1:	push	%eax			# module count
	call	putdec
	call	newline
	mov	24(%ebx), %ebp
	xor	%edi, %edi		# module index
2:	cmp	(%esp), %edi
	jae	3f
	mov	$module, %esi
	call	puts
	mov	%edi, %eax
	call	putdec
	mov	$colon, %esi
	call	puts
	mov	8(%ebp), %esi
	call	puts
	mov	$size, %esi
	call	puts
	mov	4(%ebp), %eax
	sub	(%ebp), %eax
	call	puthex8
	call	newline
	add	$16, %ebp
	inc	%edi
	jmp	2b
3:	hlt

# putdec: write %eax in decimal.  Clobbers %eax, %ecx, %edx.
putdec:
	push	%ebx
	mov	$10, %ebx
	xor	%ecx, %ecx
1:	xor	%edx, %edx
	div	%ebx
	push	%edx
	inc	%ecx
	test	%eax, %eax
	jnz	1b
1:	pop	%eax
	add	$'0', %al
	call	putc
	loop	1b
	pop	%ebx
	ret

# puthex8: write %eax as 8 hex digits.  Clobbers %eax, %ecx, %edx.
puthex8:
	mov	$8, %ecx
	jmp	puthex

newline:
	mov	$'\n', %al
	jmp	putc

ok:	.asciz	"multiboot: magic ok\ncmdline: "
bad:	.asciz	"multiboot: bad magic 0x"
memlo:	.asciz	"\nmem_lower="
memup:	.asciz	"KiB mem_upper="
kib:	.asciz	"KiB\n"
mmbase:	.asciz	"mmap: base=0x"
mmlen:	.asciz	" len=0x"
mmtype:	.asciz	" type="
mods:	.asciz	"mods: "
module:	.asciz	"module "
colon:	.asciz	": "
size:	.asciz	" 0x"

	.include "print32.inc"

	.bss
	.align	16
	.skip	1024
stack_top:
