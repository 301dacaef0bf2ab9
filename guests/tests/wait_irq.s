# wait_irq.s - a guest that waits for an interrupt that never comes.
# Mode: "real" (16-bit, loaded and entered at 0x7c00).
# Prints "waiting\n", then `sti; hlt` in a loop: interrupts are on, but every
# IRQ is masked at the PICs (as a BIOS leaves them) and nothing else is set
# up, so the vCPU sleeps in `hlt` until the run is stopped (--timeout).
	.code16
	.text
	.globl	_start
_start:
	cld
	mov	$msg, %si
	mov	$msg_len, %cx
	mov	$0x3f8, %dx
1:	lodsb
	out	%al, %dx
	loop	1b
2:	sti
	hlt
	jmp	2b

msg:	.ascii	"waiting\n"
	.equ	msg_len, . - msg
