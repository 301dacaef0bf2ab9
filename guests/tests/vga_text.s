# vga_text.s - a boot sector that draws on the VGA text screen at 0xb8000.
# Mode: "real" (16-bit, loaded and entered at 0x7c00).
# Clears the 80x25 screen with one `rep stosw` (2000 cells of a space on
# light grey), writes "Hello from the VGA text buffer" on row 0 in light green,
# a CP437 double-line box holding a smiley on rows 2-4 in yellow on blue, then
# halts (exit status 0). It never touches COM1: `pyvmm boot` shows the screen
# on stderr when the run ends, `qemu -display curses` in its window.
	.code16
	.text
	.globl	_start
_start:
	cld
	mov	$0xb800, %ax
	mov	%ax, %es
	xor	%di, %di
	mov	$0x0720, %ax		# space, attribute 0x07: light grey on black
	mov	$80 * 25, %cx
	rep stosw

	xor	%di, %di		# row 0, column 0
	mov	$0x0a, %ah		# light green on black
	mov	$hello, %si
	call	puts

	mov	$2 * 160, %di		# row 2
	mov	$0x1e, %ah		# yellow on blue
	mov	$top, %si
	call	puts
	mov	$3 * 160, %di
	mov	$middle, %si
	call	puts
	mov	$4 * 160, %di
	mov	$bottom, %si
	call	puts
	hlt

# Write the NUL-terminated string at DS:SI to ES:DI with attribute AH.
puts:	lodsb
	test	%al, %al
	jz	1f
	stosw
	jmp	puts
1:	ret

hello:	.asciz	"Hello from the VGA text buffer"
top:	.byte	0xc9, 0xcd, 0xcd, 0xcd, 0xbb, 0	# CP437 double-line box
middle:	.byte	0xba, 0x20, 0x01, 0x20, 0xba, 0	# with a smiley (0x01)
bottom:	.byte	0xc8, 0xcd, 0xcd, 0xcd, 0xbc, 0
