# acpi_tables.s - finds its processors, I/O APIC and interrupt overrides
# through ACPI (RSDP -> XSDT or RSDT -> MADT) and the PM timer through the
# FADT, as a kernel does (ACPI 6.3, 5.2.5 to 5.2.12; 4.8.2.1), then checks
# that the timer counts, at 3.579545 MHz against PIT channel 2.  A multiboot
# kernel, so that QEMU and pyvmm boot the same bytes and print the same lines:
#
#   qemu-system-x86_64 -accel tcg -display none -serial stdio -no-reboot \
#       -device isa-debug-exit,iobase=0xf4,iosize=0x04 -m 128M -smp 2 \
#       -kernel guests/tests/acpi_tables.elf
#   pyvmm boot -smp 2 guests/tests/acpi_tables.elf
#
# It prints:
#   acpi: rsdp ok, root table and every table it lists checksum ok
#   fadt: sci irq 9, pm1a_evt 0600 pm1a_cnt 0604 pm_tmr 0608 (4 bytes, 24-bit)
#   madt: local apic at fee00000, pcat_compat 1
#   madt: processor 0 apic 0 enabled           (one line per processor)
#   madt: ioapic 0 at fec00000, gsi base 0
#   madt: isa irq 0 -> gsi 2 flags 0000        (the timer's override, and
#   madt: isa irq 9 -> gsi 9 flags 000d        the SCI's: QEMU has others)
#   pmtimer: counting
#   pmtimer: 3 ticks per PIT tick, 3.58 MHz    (or what it measured)
#   acpi: 2 processors
# and ends through the debug-exit port with 0 (status 1).  No RSDP, or a bad
# checksum: "acpi: no rsdp" (or what was wrong) and 1 (status 3).
	.set	MB_MAGIC, 0x1badb002
	.set	MB_FLAGS, 0x3
	.code32
	.text
	.globl	_start
	.align	4
	.long	MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

	.set	PIT_CH2, 0x42
	.set	PIT_MODE, 0x43
	.set	PORT_B, 0x61			# bit 0: channel 2's gate, bit 5: its output
	.set	PIT_COUNT, 0xffff
	# PM ticks while the PIT counts PIT_COUNT: 3579545 / 1193182 = 3 each; +-10 %.
	.set	PM_TICKS_LOW, PIT_COUNT * 3 * 9 / 10
	.set	PM_TICKS_HIGH, PIT_COUNT * 3 * 11 / 10

_start:
	mov	$stack_top, %esp
	call	find_rsdp
	test	%esi, %esi
	jz	no_rsdp
	call	acpi_root
	call	acpi_check_all
	jnz	bad_checksum
	mov	$s_ok, %esi
	call	puts

	mov	$0x50434146, %eax		# "FACP"
	call	acpi_find
	test	%esi, %esi
	jz	no_fadt
	mov	%esi, %ebx
	mov	$s_sci, %esi
	call	puts
	movzwl	46(%ebx), %eax			# SCI_INT
	mov	%eax, sci
	call	putdec
	mov	$s_evt, %esi
	call	puts
	mov	56(%ebx), %eax			# PM1a_EVT_BLK
	call	hex4
	mov	$s_cnt, %esi
	call	puts
	mov	64(%ebx), %eax			# PM1a_CNT_BLK
	call	hex4
	mov	$s_tmr, %esi
	call	puts
	mov	76(%ebx), %eax			# PM_TMR_BLK
	mov	%eax, pm_tmr
	call	hex4
	mov	$s_open, %esi
	call	puts
	movzbl	91(%ebx), %eax			# PM_TMR_LEN
	call	putdec
	mov	$s_bytes24, %esi
	testl	$1 << 8, 112(%ebx)		# TMR_VAL_EXT: a 32-bit timer
	jz	1f
	mov	$s_bytes32, %esi
1:	call	puts

	mov	$0x43495041, %eax		# "APIC"
	call	acpi_find
	test	%esi, %esi
	jz	no_madt
	mov	%esi, %ebx
	mov	$s_lapic, %esi
	call	puts
	mov	36(%ebx), %eax
	call	hex8
	mov	$s_pcat, %esi
	call	puts
	mov	40(%ebx), %eax
	and	$1, %eax
	call	putdec
	call	newline
	mov	4(%ebx), %edi
	add	%ebx, %edi			# end of the MADT
	lea	44(%ebx), %ebx			# its first structure
1:	cmp	%edi, %ebx
	jae	madt_done
	movzbl	(%ebx), %eax
	cmp	$0, %eax
	je	local_apic
	cmp	$1, %eax
	je	io_apic
	cmp	$2, %eax
	je	override
next:	movzbl	1(%ebx), %eax
	test	%eax, %eax
	jz	madt_done			# a zero length would loop forever
	add	%eax, %ebx
	jmp	1b

local_apic:
	testl	$1, 4(%ebx)
	jz	2f
	incl	cpus
2:	mov	$s_processor, %esi
	call	puts
	movzbl	2(%ebx), %eax
	call	putdec
	mov	$s_apic, %esi
	call	puts
	movzbl	3(%ebx), %eax
	call	putdec
	testl	$1, 4(%ebx)
	jz	2f
	mov	$s_enabled, %esi
	call	puts
2:	call	newline
	jmp	next

io_apic:
	mov	$s_ioapic, %esi
	call	puts
	movzbl	2(%ebx), %eax
	call	putdec
	mov	$s_at, %esi
	call	puts
	mov	4(%ebx), %eax
	call	hex8
	mov	$s_gsi_base, %esi
	call	puts
	mov	8(%ebx), %eax
	call	putdec
	call	newline
	jmp	next

override:
	movzbl	3(%ebx), %eax			# source IRQ: the timer's and the SCI's only
	test	%eax, %eax
	jz	2f
	cmp	sci, %eax
	jne	next
2:	mov	$s_isa, %esi
	call	puts
	movzbl	3(%ebx), %eax
	call	putdec
	mov	$s_to_gsi, %esi
	call	puts
	mov	4(%ebx), %eax
	call	putdec
	mov	$s_flags, %esi
	call	puts
	movzwl	8(%ebx), %eax
	call	hex4
	call	newline
	jmp	next

madt_done:
	# The PM timer counts: it changes within 100000 reads.
	mov	pm_tmr, %edx
	in	(%dx), %eax
	mov	%eax, %ebx
	mov	$100000, %ecx
1:	in	(%dx), %eax
	cmp	%eax, %ebx
	jne	2f
	loop	1b
	mov	$s_stuck, %esi
	call	puts
	jmp	fail
2:	mov	$s_counting, %esi
	call	puts

	# Its rate against PIT channel 2, best of three tries (the host may have
	# stopped the vCPU between two reads).
	mov	$3, %edi
1:	call	pm_ticks_per_pit_count
	cmp	$PM_TICKS_LOW, %eax
	jb	2f
	cmp	$PM_TICKS_HIGH, %eax
	jbe	3f
2:	dec	%edi
	jnz	1b
	push	%eax
	mov	$s_rate_bad, %esi
	call	puts
	pop	%eax
	call	putdec
	mov	$s_rate_bad2, %esi
	call	puts
	jmp	fail
3:	mov	$s_rate_ok, %esi
	call	puts

	mov	$s_acpi, %esi
	call	puts
	mov	cpus, %eax
	call	putdec
	mov	$s_processors, %esi
	call	puts
	xor	%al, %al
	out	%al, $0xf4
	hlt

# pm_ticks_per_pit_count: PM timer ticks while PIT channel 2 counts PIT_COUNT
# down in mode 0 (its output rises at 0), in %eax.  Clobbers %ebx, %ecx, %edx.
pm_ticks_per_pit_count:
	in	$PORT_B, %al
	and	$0xfc, %al			# speaker off
	or	$1, %al				# gate on
	out	%al, $PORT_B
	mov	$0xb0, %al			# channel 2, lobyte/hibyte, mode 0, binary
	out	%al, $PIT_MODE
	mov	$PIT_COUNT & 0xff, %al
	out	%al, $PIT_CH2
	mov	$PIT_COUNT >> 8, %al
	out	%al, $PIT_CH2			# counting starts
	mov	pm_tmr, %edx
	in	(%dx), %eax
	mov	%eax, %ebx
1:	in	$PORT_B, %al
	test	$0x20, %al
	jz	1b
	mov	pm_tmr, %edx
	in	(%dx), %eax
	sub	%ebx, %eax
	and	$0xffffff, %eax			# the count is 24 bits (or more)
	ret

no_rsdp:
	mov	$s_no_rsdp, %esi
	jmp	1f
bad_checksum:
	mov	$s_bad_checksum, %esi
	jmp	1f
no_fadt:
	mov	$s_no_fadt, %esi
	jmp	1f
no_madt:
	mov	$s_no_madt, %esi
1:	call	puts
fail:	mov	$1, %al
	out	%al, $0xf4
	hlt

hex4:	mov	$4, %ecx
	jmp	puthex
hex8:	mov	$8, %ecx
	jmp	puthex

s_ok:	.asciz	"acpi: rsdp ok, root table and every table it lists checksum ok\n"
s_sci:	.asciz	"fadt: sci irq "
s_evt:	.asciz	", pm1a_evt "
s_cnt:	.asciz	" pm1a_cnt "
s_tmr:	.asciz	" pm_tmr "
s_open:	.asciz	" ("
s_bytes24: .asciz " bytes, 24-bit)\n"
s_bytes32: .asciz " bytes, 32-bit)\n"
s_lapic: .asciz	"madt: local apic at "
s_pcat:	.asciz	", pcat_compat "
s_processor: .asciz "madt: processor "
s_apic:	.asciz	" apic "
s_enabled: .asciz " enabled"
s_ioapic: .asciz "madt: ioapic "
s_at:	.asciz	" at "
s_gsi_base: .asciz ", gsi base "
s_isa:	.asciz	"madt: isa irq "
s_to_gsi: .asciz " -> gsi "
s_flags: .asciz	" flags "
s_stuck: .asciz	"pmtimer: stuck\n"
s_counting: .asciz "pmtimer: counting\n"
s_rate_ok: .asciz "pmtimer: 3 ticks per PIT tick, 3.58 MHz\n"
s_rate_bad: .asciz "pmtimer: "
s_rate_bad2: .asciz " ticks while the PIT counted 65535: not 3.58 MHz\n"
s_acpi:	.asciz	"acpi: "
s_processors: .asciz " processors\n"
s_no_rsdp: .asciz "acpi: no rsdp\n"
s_bad_checksum: .asciz "acpi: bad checksum\n"
s_no_fadt: .asciz "acpi: no fadt\n"
s_no_madt: .asciz "acpi: no madt\n"

	.include "print32.inc"
	.include "tests/firmware.inc"

	.data
sci:	.long	0
pm_tmr:	.long	0
cpus:	.long	0
	.bss
	.align	16
	.skip	4096
stack_top:
