# acpi_s5.s - powers the machine off the ACPI way (ACPI 6.3, 7.4.2 "\_Sx
# (System States)", 4.8.3.2.1 "PM1 Control Registers"), as a kernel's
# poweroff does: finds the FADT and the DSDT, reads SLP_TYPa from the DSDT's
# \_S5 package, and writes SLP_TYPa | SLP_EN to PM1a_CNT.  A multiboot
# kernel, so that QEMU and pyvmm boot the same bytes and print the same lines:
#
#   qemu-system-x86_64 -accel tcg -display none -serial stdio -no-reboot \
#       -device isa-debug-exit,iobase=0xf4,iosize=0x04 -m 128M \
#       -kernel guests/tests/acpi_s5.elf
#   pyvmm boot guests/tests/acpi_s5.elf
#
# It prints
#   s5: slp_typ 0, pm1a_cnt 0604
# and both end with status 0, QEMU exiting as the machine powers off and
# pyvmm with a system-event shutdown.  If the machine still runs a second
# later (by the PM timer), "s5: still running" and the debug-exit port with
# 1 (status 3); no RSDP, FADT or \_S5: "s5: none" and 1.
#
# \_S5 is found the short way a small kernel does it: the name "_S5_" in the
# DSDT's AML, then a PackageOp (0x12), its PkgLength (20.2.4: the top two bits
# of its first byte count the bytes that follow), the element count, and the
# first element: ZeroOp, OneOp or a BytePrefix (0x0a) and its byte.
	.set	MB_MAGIC, 0x1badb002
	.set	MB_FLAGS, 0x3
	.code32
	.text
	.globl	_start
	.align	4
	.long	MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

	.set	SLP_EN, 1 << 13
	.set	SLP_TYP_SHIFT, 10
	.set	PM_TIMER_HZ, 3579545

_start:
	mov	$stack_top, %esp
	call	find_rsdp
	test	%esi, %esi
	jz	none
	call	acpi_root
	mov	$0x50434146, %eax		# "FACP"
	call	acpi_find
	test	%esi, %esi
	jz	none
	mov	%esi, %ebx
	mov	64(%ebx), %eax			# PM1a_CNT_BLK
	mov	%eax, pm1a_cnt
	mov	76(%ebx), %eax			# PM_TMR_BLK
	mov	%eax, pm_tmr
	mov	40(%ebx), %esi			# DSDT
	cmpl	$148, 4(%ebx)			# X_DSDT, when the FADT has it
	jb	1f
	cmpl	$0, 144(%ebx)
	jne	1f
	cmpl	$0, 140(%ebx)
	je	1f
	mov	140(%ebx), %esi
1:	cmpl	$0x54445344, (%esi)		# "DSDT"
	jne	none
	mov	4(%esi), %edi
	add	%esi, %edi			# its end
	add	$36, %esi			# its AML
1:	cmp	%edi, %esi
	jae	none
	cmpl	$0x5f35535f, (%esi)		# "_S5_"
	je	2f
	inc	%esi
	jmp	1b
2:	cmpb	$0x12, 4(%esi)			# PackageOp
	jne	none
	movzbl	5(%esi), %eax			# PkgLength: 1 to 4 bytes
	shr	$6, %eax
	lea	6(%esi,%eax), %esi		# the element count
	inc	%esi				# the first element
	movzbl	(%esi), %eax
	cmp	$1, %eax			# ZeroOp and OneOp are their values
	jbe	3f
	cmp	$0x0a, %eax			# BytePrefix
	jne	none
	movzbl	1(%esi), %eax
3:	mov	%eax, %ebx			# SLP_TYPa
	mov	$s_s5, %esi
	call	puts
	mov	%ebx, %eax
	call	putdec
	mov	$s_cnt, %esi
	call	puts
	mov	pm1a_cnt, %eax
	mov	$4, %ecx
	call	puthex
	call	newline

	mov	%ebx, %eax
	shl	$SLP_TYP_SHIFT, %eax
	or	$SLP_EN, %eax
	mov	pm1a_cnt, %edx
	out	%ax, (%dx)

	# Still here a second later, by the PM timer (24 bits: count the deltas)?
	xor	%edi, %edi
	mov	pm_tmr, %edx
	in	(%dx), %eax
	mov	%eax, %ebx
1:	in	(%dx), %eax
	mov	%eax, %ecx
	sub	%ebx, %eax
	and	$0xffffff, %eax
	add	%eax, %edi
	mov	%ecx, %ebx
	cmp	$PM_TIMER_HZ, %edi
	jb	1b
	mov	$s_running, %esi
	call	puts
	jmp	fail

none:	mov	$s_none, %esi
	call	puts
fail:	mov	$1, %al
	out	%al, $0xf4
	hlt

s_s5:	.asciz	"s5: slp_typ "
s_cnt:	.asciz	", pm1a_cnt "
s_running: .asciz "s5: still running\n"
s_none:	.asciz	"s5: none\n"

	.include "print32.inc"
	.include "tests/firmware.inc"

	.data
pm1a_cnt: .long	0
pm_tmr:	.long	0
	.bss
	.align	16
	.skip	4096
stack_top:
