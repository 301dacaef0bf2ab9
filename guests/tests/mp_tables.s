# mp_tables.s - finds its processors and I/O APIC through the MP floating
# pointer, as a kernel without ACPI does (Intel MultiProcessor Specification
# 1.4, 4.1 to 4.3).  A multiboot kernel, so that QEMU and pyvmm boot the same
# bytes and print the same lines:
#
#   qemu-system-x86_64 -accel tcg -display none -serial stdio -no-reboot \
#       -device isa-debug-exit,iobase=0xf4,iosize=0x04 -m 128M \
#       -smp 2,sockets=2 -kernel guests/tests/mp_tables.elf
#   pyvmm boot -smp 2 guests/tests/mp_tables.elf
#
# (sockets=2: QEMU's firmware, SeaBIOS, lists one processor per package, and
# QEMU 7.2 makes -smp 2 one package of two cores; pyvmm lists every vCPU.)
#
# It prints, checking both checksums first:
#   mp: floating pointer ok, spec 1.4, config table ok
#   mp: local apic at fee00000
#   cpu: apic 0 version 14 enabled bsp        (one line per processor entry)
#   ioapic: id 0 version 11 at fec00000
#   isa irq 0 -> ioapic 0 pin 2               (each ISA interrupt assignment;
#                                             the PCI bus's are left out)
#   local: extint -> apic 0 lint0, nmi -> apic ff lint1
#   mp: 2 processors
# and ends through the debug-exit port with 0 (status 1).  No floating
# pointer, or a bad checksum: "mp: none" and 1 (status 3).
	.set	MB_MAGIC, 0x1badb002
	.set	MB_FLAGS, 0x3
	.code32
	.text
	.globl	_start
	.align	4
	.long	MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

_start:
	mov	$stack_top, %esp
	call	find_mp
	test	%esi, %esi
	jz	fail
	mov	%esi, %ebx			# the floating pointer
	mov	$s_fp, %esi
	call	puts
	movzbl	9(%ebx), %eax			# spec revision: 1.N
	call	putdec
	mov	4(%ebx), %ebp			# the configuration table
	test	%ebp, %ebp
	jz	fail
	cmpl	$0x504d4350, (%ebp)		# "PCMP"
	jne	fail
	mov	%ebp, %esi
	movzwl	4(%ebp), %ecx			# base table length
	call	sum8
	jnz	fail
	mov	$s_cfg, %esi
	call	puts
	mov	$s_lapic, %esi
	call	puts
	mov	36(%ebp), %eax
	call	hex8
	call	newline

	# First pass: the ISA bus's ID (bus entries name their type).
	movzwl	34(%ebp), %edi			# entry count
	lea	44(%ebp), %esi
	movl	$0xffffffff, isa_bus
1:	test	%edi, %edi
	jz	4f
	movzbl	(%esi), %eax
	test	%eax, %eax
	jnz	2f
	add	$20, %esi			# processor entries are 20 bytes
	jmp	3f
2:	cmp	$1, %eax
	jne	5f
	cmpl	$0x20415349, 2(%esi)		# "ISA "
	jne	5f
	movzbl	1(%esi), %eax
	mov	%eax, isa_bus
5:	add	$8, %esi			# every other entry is 8
3:	dec	%edi
	jmp	1b

	# Second pass: print the entries.
4:	movzwl	34(%ebp), %edi
	lea	44(%ebp), %ebx
1:	test	%edi, %edi
	jz	done
	movzbl	(%ebx), %eax
	cmp	$0, %eax
	je	processor
	cmp	$2, %eax
	je	ioapic
	cmp	$3, %eax
	je	io_interrupt
	cmp	$4, %eax
	je	local_interrupt
next8:	add	$8, %ebx
next:	dec	%edi
	jmp	1b

processor:
	testb	$1, 3(%ebx)			# enabled
	jz	2f
	incl	cpus
2:	mov	$s_cpu, %esi
	call	puts
	movzbl	1(%ebx), %eax
	call	putdec
	mov	$s_version, %esi
	call	puts
	movzbl	2(%ebx), %eax
	call	hex2
	testb	$1, 3(%ebx)
	jz	2f
	mov	$s_enabled, %esi
	call	puts
2:	testb	$2, 3(%ebx)
	jz	2f
	mov	$s_bsp, %esi
	call	puts
2:	call	newline
	add	$20, %ebx
	jmp	next

ioapic:
	mov	$s_ioapic, %esi
	call	puts
	movzbl	1(%ebx), %eax
	call	putdec
	mov	$s_version, %esi
	call	puts
	movzbl	2(%ebx), %eax
	call	hex2
	mov	$s_at, %esi
	call	puts
	mov	4(%ebx), %eax
	call	hex8
	call	newline
	jmp	next8

io_interrupt:
	movzbl	4(%ebx), %eax			# source bus
	cmp	isa_bus, %eax
	jne	next8
	mov	$s_isa, %esi
	call	puts
	movzbl	5(%ebx), %eax
	call	putdec
	mov	$s_to_ioapic, %esi
	call	puts
	movzbl	6(%ebx), %eax
	call	putdec
	mov	$s_pin, %esi
	call	puts
	movzbl	7(%ebx), %eax
	call	putdec
	cmpb	$0, 1(%ebx)			# INT; anything else is named
	je	2f
	mov	$s_type, %esi
	call	puts
	movzbl	1(%ebx), %eax
	call	putdec
2:	call	newline
	jmp	next8

local_interrupt:
	mov	$s_local, %esi
	call	puts
	movzbl	1(%ebx), %eax			# interrupt type
	mov	$s_extint, %esi
	cmp	$3, %eax
	je	2f
	mov	$s_nmi, %esi
	cmp	$1, %eax
	je	2f
	mov	$s_other, %esi
2:	call	puts
	mov	$s_to_apic, %esi
	call	puts
	movzbl	6(%ebx), %eax
	call	hex2
	mov	$s_lint, %esi
	call	puts
	movzbl	7(%ebx), %eax
	call	putdec
	call	newline
	jmp	next8

done:	mov	$s_mp, %esi
	call	puts
	mov	cpus, %eax
	call	putdec
	mov	$s_processors, %esi
	call	puts
	xor	%al, %al
	out	%al, $0xf4
	hlt

fail:	mov	$s_none, %esi
	call	puts
	mov	$1, %al
	out	%al, $0xf4
	hlt

hex2:	mov	$2, %ecx
	jmp	puthex
hex8:	mov	$8, %ecx
	jmp	puthex

s_fp:	.asciz	"mp: floating pointer ok, spec 1."
s_cfg:	.asciz	", config table ok\n"
s_lapic: .asciz	"mp: local apic at "
s_cpu:	.asciz	"cpu: apic "
s_version: .asciz " version "
s_enabled: .asciz " enabled"
s_bsp:	.asciz	" bsp"
s_ioapic: .asciz "ioapic: id "
s_at:	.asciz	" at "
s_isa:	.asciz	"isa irq "
s_to_ioapic: .asciz " -> ioapic "
s_pin:	.asciz	" pin "
s_type:	.asciz	" type "
s_local: .asciz	"local: "
s_extint: .asciz "extint"
s_nmi:	.asciz	"nmi"
s_other: .asciz	"other"
s_to_apic: .asciz " -> apic "
s_lint:	.asciz	" lint"
s_mp:	.asciz	"mp: "
s_processors: .asciz " processors\n"
s_none:	.asciz	"mp: none\n"

	.include "print32.inc"
	.include "tests/firmware.inc"

	.data
isa_bus: .long	0
cpus:	.long	0
	.bss
	.align	16
	.skip	4096
stack_top:
