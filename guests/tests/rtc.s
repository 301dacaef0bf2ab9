# rtc.s - the PC's RTC and CMOS (a Motorola MC146818A at ports 0x70/0x71),
# driven as Linux's drivers/rtc/rtc-mc146818-lib.c drives it.  A multiboot
# kernel, so that QEMU and pyvmm boot the same bytes and print the same lines:
#
#   qemu-system-x86_64 -nodefaults -accel tcg -display none -serial stdio \
#       -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=0x04 -m 128M \
#       -kernel guests/tests/rtc.elf
#   pyvmm boot -m 128M guests/tests/rtc.elf
#
# (-nodefaults: QEMU's default floppy drive would show in bytes 0x10 and 0x14.
# QEMU's equipment byte is 06, FPU and PS/2 mouse; pyvmm has no mouse: 02.)
#
# It prints (register values in hex, the time in decimal):
#   rtc: A=26 B=02 D=80                 as the kernel finds them (A without UIP)
#   cmos: 10=00 12=00 14=02             floppy type, disk type, equipment byte
#   cmos: base=0280 ext=ffff extmem=ffff ext16=0700 high=000000 cpus=00
#                                       0x15-16, 0x17-18, 0x30-31, 0x34-35,
#                                       0x5b-5d (little-endian), 0x5f
#   bcd 24h: YYYY-MM-DD HH:MM:SS dow NN the time read as mc146818_get_time
#   bin 24h: ...                        does (seconds, UIP, seconds again, the
#   bcd 12h: ... HH:MM:SS AM|PM dow NN  rest, UIP, seconds again), with
#   bin 12h: ...                        register B's DM and 24/12 bits set so
#   update: UIP set, then clear, and the seconds changed
#                                       polling register A across an update
#   set: 2001-02-03 04:05:06 dow 07     after mc146818_set_time's sequence
#   irq8: 5 periodic interrupts at 64 Hz, C=c0
#                                       through the PICs (vector 0x28), the
#                                       PF and IRQF bits of register C seen by
#                                       the first interrupt's handler
#   rtc: done
# and ends through the debug-exit port with 0x10 (exit status 33).  Any other
# interrupt or exception prints "rtc: unexpected interrupt" and ends with
# 0x7f (status 255).  Under pyvmm the interrupts need interrupt controllers
# (any --kernel-irqchip but off).
	.set	MB_MAGIC, 0x1badb002
	.set	MB_FLAGS, 0x3
	.set	RTC_INDEX, 0x70
	.set	RTC_DATA, 0x71
	.set	NMI_DISABLE, 0x80
	.set	REG_A, 0x0a
	.set	REG_B, 0x0b
	.set	REG_C, 0x0c
	.set	REG_D, 0x0d
	.set	UIP, 0x80
	.set	SET, 0x80
	.set	PIE, 0x40
	.set	DM_BINARY, 0x04
	.set	HOURS_24, 0x02
	.set	DIV_RESET2, 0x70
	.set	RTC_VECTOR, 0x28	# slave PIC base 0x28: IRQ 8
	.set	IRQS, 5
	.set	UPDATE_TRIES, 30	# a loaded host may deschedule the guest over a window
	.set	RATE_64HZ, 0x2a		# DV=010 (32.768 kHz), RS=1010
	.set	IDT_ENTRIES, 0x30	# exceptions, then the two PICs' vectors
	.code32
	.text
	.globl	_start
	.align	4
	.long	MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

_start:
	mov	$stack_top, %esp	# the loader leaves ESP undefined
	lgdt	gdt_desc		# and the GDT: load our own
	ljmp	$0x08, $1f
1:	mov	$0x10, %ax
	mov	%ax, %ds
	mov	%ax, %es
	mov	%ax, %ss
	mov	%ax, %fs
	mov	%ax, %gs

	# Registers A, B and D as the kernel finds them.
	mov	$s_regs, %esi
	call	puts
	mov	$REG_A, %al
	call	cmos_read
	and	$~UIP, %al
	call	hex2
	mov	$s_b, %esi
	call	puts
	mov	$REG_B, %al
	call	cmos_read
	call	hex2
	mov	$s_d, %esi
	call	puts
	mov	$REG_D, %al
	call	cmos_read
	call	hex2
	call	newline

	# What the firmware wrote: drives, equipment, memory sizes, CPUs.
	mov	$s_cmos, %esi
	call	puts
	mov	$0x10, %bl
	call	cmos_pair
	mov	$' ', %al
	call	putc
	mov	$0x12, %bl
	call	cmos_pair
	mov	$' ', %al
	call	putc
	mov	$0x14, %bl
	call	cmos_pair
	call	newline
	mov	$s_base, %esi
	call	puts
	mov	$0x15, %bl
	call	cmos_word
	mov	$s_ext, %esi
	call	puts
	mov	$0x17, %bl
	call	cmos_word
	mov	$s_extmem, %esi
	call	puts
	mov	$0x30, %bl
	call	cmos_word
	mov	$s_ext16, %esi
	call	puts
	mov	$0x34, %bl
	call	cmos_word
	mov	$s_high, %esi
	call	puts
	mov	$0x5d, %al
	call	cmos_read
	call	hex2
	mov	$0x5b, %bl
	call	cmos_word
	mov	$s_cpus, %esi
	call	puts
	mov	$0x5f, %al
	call	cmos_read
	call	hex2
	call	newline

	# The time in each data mode and hour format.
	mov	$HOURS_24, %ah
	mov	$s_bcd24, %esi
	call	show_time
	mov	$HOURS_24 | DM_BINARY, %ah
	mov	$s_bin24, %esi
	call	show_time
	mov	$0, %ah
	mov	$s_bcd12, %esi
	call	show_time
	mov	$DM_BINARY, %ah
	mov	$s_bin12, %esi
	call	show_time
	mov	$HOURS_24, %ah
	mov	$REG_B, %al
	call	cmos_write

	# The update: UIP rises before the seconds change and clears after it.  A
	# poll can miss the 244 us, so up to UPDATE_TRIES seconds are watched.
	mov	$UPDATE_TRIES, %ebp
3:	mov	$0x00, %al
	call	cmos_read
	mov	%al, %cl
4:	mov	$REG_A, %al
	call	cmos_read
	test	$UIP, %al
	jnz	5f
	mov	$0x00, %al
	call	cmos_read
	cmp	%al, %cl
	je	4b
	dec	%ebp				# the seconds changed, UIP unseen
	jnz	3b
	mov	$s_no_uip, %esi
	jmp	7f
5:	mov	$REG_A, %al			# UIP seen: wait for it to clear
	call	cmos_read
	test	$UIP, %al
	jnz	5b
	mov	$0x00, %al
	call	cmos_read
	mov	$s_update, %esi
	cmp	%al, %cl
	jne	7f
	mov	$s_stale, %esi
7:	call	puts

	# Set the clock as mc146818_set_time does: SET, divider reset, the bytes
	# (BCD), SET off, divider on (the next update is half a second away).
	mov	$REG_B, %al
	call	cmos_read
	mov	%al, %bl			# save_control
	mov	%al, %ah
	or	$SET, %ah
	mov	$REG_B, %al
	call	cmos_write
	mov	$REG_A, %al
	call	cmos_read
	and	$~UIP, %al
	mov	%al, %bh			# save_freq_select
	mov	%al, %ah
	or	$DIV_RESET2, %ah
	mov	$REG_A, %al
	call	cmos_write
	mov	$set_bytes, %esi
1:	lodsw					# %al: the register, %ah: its value
	test	%al, %al
	js	2f				# 0xff ends the list
	call	cmos_write
	jmp	1b
2:	mov	%bl, %ah
	mov	$REG_B, %al
	call	cmos_write
	mov	%bh, %ah
	mov	$REG_A, %al
	call	cmos_write
	mov	$s_set, %esi
	call	puts
	call	read_time
	call	print_time

	# Periodic interrupts on IRQ 8, through both PICs.
	call	setup_idt
	call	setup_pics
	mov	$REG_C, %al			# clear stale flags first (cmos_irq_enable)
	call	cmos_read
	mov	$RATE_64HZ, %ah
	mov	$REG_A, %al
	call	cmos_write
	mov	$HOURS_24 | PIE, %ah
	mov	$REG_B, %al
	call	cmos_write
1:	cli
	cmpl	$IRQS, irq_count
	jae	2f
	sti				# hlt runs in sti's shadow: no wake-up is lost
	hlt
	jmp	1b
2:	mov	$HOURS_24, %ah
	mov	$REG_B, %al
	call	cmos_write
	mov	$REG_C, %al
	call	cmos_read
	mov	$s_irq, %esi
	call	puts
	mov	first_c, %al
	and	$0xc0, %al
	call	hex2
	call	newline

	mov	$s_done, %esi
	call	puts
	mov	$0x10, %al
	out	%al, $0xf4
	hlt

# show_time: set register B to %ah, read the time, print %esi and the time.
show_time:
	mov	$REG_B, %al
	call	cmos_write
	call	puts
	call	read_time
	jmp	print_time

# read_time: the time into t_*, as Linux's mc146818_get_time reads it: the
# seconds, then UIP (set: try again), the seconds again (changed: again), the
# other bytes, UIP again and the seconds again.  Clobbers %eax, %ecx, %edi.
read_time:
1:	mov	$0x00, %al
	call	cmos_read
	mov	%al, %cl
	mov	$REG_A, %al
	call	cmos_read
	test	$UIP, %al
	jnz	1b
	mov	$0x00, %al
	call	cmos_read
	cmp	%al, %cl
	jne	1b
	mov	%cl, t_regs
	mov	$1, %edi
2:	mov	time_regs(%edi), %al
	call	cmos_read
	mov	%al, t_regs(%edi)
	inc	%edi
	cmp	$TIME_REGS, %edi
	jb	2b
	mov	$REG_A, %al
	call	cmos_read
	test	$UIP, %al
	jnz	1b
	mov	$0x00, %al
	call	cmos_read
	cmp	%al, %cl
	jne	1b
	ret

# print_time: "YYYY-MM-DD HH:MM:SS[ AM| PM] dow N\n" from t_*, in the mode
# register B was read in.  Clobbers %eax, %edx, %esi.
print_time:
	mov	t_century, %al
	call	put_field
	mov	t_year, %al
	call	put_field
	mov	$'-', %al
	call	putc
	mov	t_month, %al
	call	put_field
	mov	$'-', %al
	call	putc
	mov	t_mday, %al
	call	put_field
	mov	$' ', %al
	call	putc
	mov	t_hours, %al
	and	$0x7f, %al			# the PM bit in 12-hour mode
	call	put_field
	mov	$':', %al
	call	putc
	mov	t_minutes, %al
	call	put_field
	mov	$':', %al
	call	putc
	mov	t_seconds, %al
	call	put_field
	testb	$HOURS_24, t_control
	jnz	1f
	mov	$s_am, %esi
	testb	$0x80, t_hours
	jz	2f
	mov	$s_pm, %esi
2:	call	puts
1:	mov	$s_dow, %esi
	call	puts
	mov	t_dow, %al
	call	put_field
	jmp	newline

# put_field: write time byte %al in decimal, decoding BCD unless register B
# (t_control) says binary.  Clobbers %eax, %edx.
put_field:
	testb	$DM_BINARY, t_control
	jnz	1f
	mov	%al, %dh			# BCD: tens in the high nibble
	shr	$4, %al
	mov	$10, %dl
	mul	%dl
	and	$0x0f, %dh
	add	%dh, %al
1:	movzbl	%al, %eax
	mov	$10, %dl
	div	%dl				# %al: tens, %ah: ones
	push	%eax
	add	$'0', %al
	call	putc
	pop	%eax
	mov	%ah, %al
	add	$'0', %al
	jmp	putc

# cmos_read: %al = CMOS byte %al, selected with the NMI-disable bit set, as
# many kernels do.
cmos_read:
	or	$NMI_DISABLE, %al
	out	%al, $RTC_INDEX
	in	$RTC_DATA, %al
	ret

# cmos_write: CMOS byte %al = %ah (selected without the NMI bit).
cmos_write:
	out	%al, $RTC_INDEX
	mov	%ah, %al
	out	%al, $RTC_DATA
	ret

# cmos_pair: write "NN=VV" for CMOS byte %bl.  Clobbers %eax, %ecx, %edx.
cmos_pair:
	mov	%bl, %al
	call	hex2
	mov	$'=', %al
	call	putc
	mov	%bl, %al
	call	cmos_read
	jmp	hex2

# cmos_word: write the 16-bit value in CMOS bytes %bl (low) and %bl+1 (high).
cmos_word:
	mov	%bl, %al
	inc	%al
	call	cmos_read
	call	hex2
	mov	%bl, %al
	call	cmos_read
	jmp	hex2

# hex2: write %al as two hex digits.  Clobbers %eax, %ecx, %edx.
hex2:
	movzbl	%al, %eax
	mov	$2, %ecx
	jmp	puthex

newline:
	mov	$'\n', %al
	jmp	putc

# setup_idt: vectors 0-0x2f go to `unexpected`, but RTC_VECTOR to rtc_irq.
setup_idt:
	mov	$idt, %edi
	xor	%ecx, %ecx
1:	mov	$unexpected, %eax
	cmp	$RTC_VECTOR, %ecx
	jne	2f
	mov	$rtc_irq, %eax
2:	mov	%eax, %edx
	and	$0xffff, %eax
	or	$0x08 << 16, %eax		# code selector 0x08
	and	$0xffff0000, %edx
	or	$0x8e00, %edx			# present, DPL 0, 32-bit interrupt gate
	mov	%eax, (%edi,%ecx,8)
	mov	%edx, 4(%edi,%ecx,8)
	inc	%ecx
	cmp	$IDT_ENTRIES, %ecx
	jb	1b
	lidt	idt_desc
	ret

# setup_pics: master at vector 0x20, slave at 0x28 on the master's IRQ 2;
# everything masked but IRQ 2 (the cascade) and IRQ 8 (the RTC).
setup_pics:
	mov	$0x11, %al			# ICW1: edge, cascade, ICW4 follows
	out	%al, $0x20
	out	%al, $0xa0
	mov	$0x20, %al			# ICW2: vector bases
	out	%al, $0x21
	mov	$RTC_VECTOR, %al
	out	%al, $0xa1
	mov	$0x04, %al			# ICW3: the slave is on IRQ 2
	out	%al, $0x21
	mov	$0x02, %al
	out	%al, $0xa1
	mov	$0x01, %al			# ICW4: 8086 mode
	out	%al, $0x21
	out	%al, $0xa1
	mov	$0xfb, %al			# OCW1: the masks
	out	%al, $0x21
	mov	$0xfe, %al
	out	%al, $0xa1
	ret

# rtc_irq: IRQ 8.  Reading register C acknowledges the RTC (and lowers its
# line); then end-of-interrupt to both PICs.  It returns with popf and a far
# return instead of iret: a software KVM backend (kvm_pvm) emulates CPL0 code
# with KVM's instruction emulator, which has no protected-mode iret.
rtc_irq:
	push	%eax
	mov	$REG_C, %al
	out	%al, $RTC_INDEX
	in	$RTC_DATA, %al
	cmpl	$0, irq_count
	jne	1f
	mov	%al, first_c
1:	incl	irq_count
	mov	$0x20, %al
	out	%al, $0xa0
	out	%al, $0x20
	pop	%eax
	pushl	8(%esp)				# the frame: EIP, CS, EFLAGS
	popf
	lret	$4				# to CS:EIP, dropping the copy of EFLAGS

unexpected:
	mov	$s_unexpected, %esi
	call	puts
	mov	$0x7f, %al
	out	%al, $0xf4
	hlt

	.include "print32.inc"

	.align	8
gdt:	.quad	0
	.quad	0x00cf9a000000ffff		# 0x08: code, flat 4 GiB, 32-bit
	.quad	0x00cf92000000ffff		# 0x10: data, flat 4 GiB
gdt_desc:
	.word	gdt_desc - gdt - 1
	.long	gdt
idt_desc:
	.word	IDT_ENTRIES * 8 - 1
	.long	idt

# The registers read_time reads after the seconds, in t_regs's order.
time_regs:
	.byte	0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32, REG_B
	.set	TIME_REGS, . - time_regs
# 2001-02-03 04:05:06 in BCD, in mc146818_set_time's order, century last.
set_bytes:
	.byte	0x09, 0x01, 0x08, 0x02, 0x07, 0x03, 0x04, 0x04, 0x02, 0x05, 0x00, 0x06
	.byte	0x32, 0x20, 0xff, 0xff

s_regs:	.asciz	"rtc: A="
s_b:	.asciz	" B="
s_d:	.asciz	" D="
s_cmos:	.asciz	"cmos: "
s_base:	.asciz	"cmos: base="
s_ext:	.asciz	" ext="
s_extmem: .asciz " extmem="
s_ext16: .asciz	" ext16="
s_high:	.asciz	" high="
s_cpus:	.asciz	" cpus="
s_bcd24: .asciz	"bcd 24h: "
s_bin24: .asciz	"bin 24h: "
s_bcd12: .asciz	"bcd 12h: "
s_bin12: .asciz	"bin 12h: "
s_am:	.asciz	" AM"
s_pm:	.asciz	" PM"
s_dow:	.asciz	" dow "
s_set:	.asciz	"set: "
s_update: .asciz "update: UIP set, then clear, and the seconds changed\n"
s_no_uip: .asciz "update: UIP never seen\n"
s_stale: .asciz	"update: UIP cleared but the seconds did not change\n"
s_irq:	.asciz	"irq8: 5 periodic interrupts at 64 Hz, C="
s_done:	.asciz	"rtc: done\n"
s_unexpected: .asciz "rtc: unexpected interrupt\n"

	.bss
	.align	16
t_regs:					# in time_regs's order
t_seconds:	.skip	1
t_minutes:	.skip	1
t_hours:	.skip	1
t_dow:		.skip	1
t_mday:		.skip	1
t_month:	.skip	1
t_year:		.skip	1
t_century:	.skip	1
t_control:	.skip	1
	.align	4
irq_count:	.skip	4
first_c:	.skip	1
	.align	8
idt:	.skip	IDT_ENTRIES * 8
	.align	16
	.skip	1024
stack_top:
