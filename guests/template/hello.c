/*
 * hello.c - a freestanding C guest for pyvmm: no libc, no BIOS, no boot loader.
 *
 * The Makefile builds this one file twice:
 *   hello64.elf  ELF64 (x86-64): pyvmm enters it in 64-bit long mode at CPL0,
 *                or at CPL3 with `--mode user`;
 *   hello32.elf  ELF32 (i386):   pyvmm enters it in 32-bit protected mode,
 *                paging off (or on, 4 MiB pages, with `--mode paged`).
 *
 *   make -C guests/template
 *   pyvmm boot guests/template/hello64.elf                  # exit status 65
 *   pyvmm boot --mode user guests/template/hello64.elf
 *   pyvmm boot -m 256M -smp 2 guests/template/hello32.elf
 *
 * It prints the state it was entered in on COM1, reads QEMU's fw_cfg, turns
 * SSE on (at CPL0), and ends the run through the debug-exit port with
 * EXIT_VALUE: pyvmm exits with status (EXIT_VALUE << 1) | 1.
 *
 * The contract pyvmm keeps with an ELF guest (README.md, "Writing your own
 * guest"), as this program sees it:
 *   - the PT_LOAD segments are copied to their p_paddr (bss zeroed) and the
 *     guest starts at e_entry, here 0x100000 (hello.ld);
 *   - flat segments, base 0, limit 4 GiB, from pyvmm's GDT at 0x500:
 *     CS=0x08, DS=ES=FS=GS=SS=0x10;
 *   - the stack pointer is 0x80000, the top of a 64 KiB stack pyvmm reserves
 *     (0x70000-0x80000); the guest may move it anywhere (this one does);
 *   - RFLAGS=0x2 (IF=0: interrupts off, DF=0), every other general register 0;
 *   - no IDT (IDTR base 0, limit 0): an exception before the guest loads its
 *     own IDT becomes a triple fault, which ends the run (status 4);
 *   - user mode: pyvmm loads CS=0x23, DS=ES=FS=GS=SS=0x1b and IOPL=3, which a
 *     guest reads back on VT-x/AMD-V; under kvm_pvm, CPL3 code runs natively
 *     and reads the host's user selectors (0x33, 0x2b, 0) and IF=1, IOPL=0.
 *     Ports work either way (pyvmm's TSS I/O bitmap allows them all);
 *   - long mode: pyvmm's page tables at 0x1000-0x6fff (CR3=0x1000) map the
 *     low 4 GiB one to one with 2 MiB pages; the guest may build its own and
 *     load CR3;
 *   - SSE is off (CR4.OSFXSR=0: SSE instructions raise #UD), hence
 *     -mgeneral-regs-only in the Makefile; enable_sse() below turns it on.
 */
#include <stdint.h>

#if defined(__x86_64__)
#define NAME "hello64"
#define HEX_DIGITS 16
#else
#define NAME "hello32"
#define HEX_DIGITS 8
#endif

/* The value written to the debug-exit port: pyvmm exits with (0x20 << 1) | 1 = 65. */
#define EXIT_VALUE 0x20

/* COM1, a 16550A UART (PC16550D datasheet). */
#define COM1 0x3f8
#define UART_THR 0 /* transmitter holding register (DLAB=0) */
#define UART_IER 1 /* interrupt enable (DLAB=0) */
#define UART_DLL 0 /* divisor latch, low byte (DLAB=1) */
#define UART_DLM 1 /* divisor latch, high byte (DLAB=1) */
#define UART_LCR 3 /* line control */
#define UART_LSR 5 /* line status */
#define LCR_DLAB 0x80
#define LCR_8N1 0x03
#define LSR_THRE 0x20 /* transmitter holding register empty: THR takes a byte */

/* QEMU's isa-debug-exit device, at the port test harnesses usually give it (iobase=0xf4). */
#define DEBUG_EXIT_PORT 0xf4

/* QEMU's fw_cfg, legacy I/O interface (QEMU docs/specs/fw_cfg.rst). */
#define FW_CFG_PORT_SEL 0x510 /* write a 16-bit key to select an item */
#define FW_CFG_PORT_DATA 0x511 /* then read the item one byte at a time */
#define FW_CFG_SIGNATURE 0x00 /* "QEMU" */
#define FW_CFG_ID 0x01 /* feature bits, u32 LE: bit 0 the I/O interface, bit 1 DMA */
#define FW_CFG_RAM_SIZE 0x03 /* bytes of RAM (-m), u64 LE */
#define FW_CFG_NB_CPUS 0x05 /* vCPUs (-smp), u16 LE */
#define FW_CFG_FILE_DIR 0x19 /* file directory: a u32 BE count, then 64-byte entries */

#define CR0_MP (1ul << 1)
#define CR0_EM (1ul << 2)
#define CR4_OSFXSR (1ul << 9)
#define CR4_OSXMMEXCPT (1ul << 10)
#define MSR_EFER 0xc0000080
#define RFLAGS_IF (1ul << 9)
#define RFLAGS_IOPL_SHIFT 12

/* Port I/O: each `in`/`out` is one exit to pyvmm, which hands it to a device. */
static inline void outb(uint16_t port, uint8_t value)
{
	__asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

static inline void outw(uint16_t port, uint16_t value)
{
	__asm__ volatile("outw %0, %1" : : "a"(value), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
	uint8_t value;

	__asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port));
	return value;
}

/* --- the console: COM1, polled (pyvmm gives it no interrupt line) --------- */

static void serial_init(void)
{
	/* pyvmm's UART works without this; a real 16550 needs a baud rate and frame. */
	outb(COM1 + UART_IER, 0);	   /* no interrupts: this driver polls */
	outb(COM1 + UART_LCR, LCR_DLAB);   /* the next two writes set the divisor */
	outb(COM1 + UART_DLL, 1);	   /* 115200 baud */
	outb(COM1 + UART_DLM, 0);
	outb(COM1 + UART_LCR, LCR_8N1);	   /* 8 data bits, no parity, 1 stop bit */
}

static void serial_putc(char c)
{
	/* Wait until the UART can take a byte. pyvmm's THR is always empty, a real one is not. */
	while (!(inb(COM1 + UART_LSR) & LSR_THRE))
		;
	outb(COM1 + UART_THR, (uint8_t)c);
}

static void serial_puts(const char *s)
{
	while (*s)
		serial_putc(*s++);
}

static void puthex(uint64_t value, int digits)
{
	while (digits-- > 0)
		serial_putc("0123456789abcdef"[(value >> (4 * digits)) & 0xf]);
}

static void putdec(unsigned long value)
{
	char digits[20];
	int count = 0;

	do {
		digits[count++] = (char)('0' + value % 10);
		value /= 10;
	} while (value);
	while (count)
		serial_putc(digits[--count]);
}

/* "NAME: " starts every line, so that the output is easy to pick out and parse. */
static void line(const char *text)
{
	serial_puts(NAME ": ");
	serial_puts(text);
}

static void field(const char *name, uint64_t value, int digits)
{
	serial_puts(" ");
	serial_puts(name);
	serial_puts("=");
	puthex(value, digits);
}

/* --- QEMU's fw_cfg ------------------------------------------------------ */

static void fw_cfg_read(uint16_t key, void *buffer, unsigned int size)
{
	uint8_t *bytes = buffer;

	outw(FW_CFG_PORT_SEL, key);
	while (size--)
		*bytes++ = inb(FW_CFG_PORT_DATA);
}

static uint64_t fw_cfg_read_le(uint16_t key, unsigned int size)
{
	uint8_t bytes[8] = { 0 };
	uint64_t value = 0;

	fw_cfg_read(key, bytes, size);
	while (size--)
		value = value << 8 | bytes[size];
	return value;
}

/* --- registers ---------------------------------------------------------- */

#define READ_SEGMENT(name)                                             \
	({                                                             \
		uint16_t selector;                                     \
		__asm__ volatile("mov %%" #name ", %0" : "=r"(selector)); \
		selector;                                              \
	})

#define READ_CR(n)                                                     \
	({                                                             \
		unsigned long value;                                   \
		__asm__ volatile("mov %%cr" #n ", %0" : "=r"(value));  \
		value;                                                 \
	})

static inline void write_cr0(unsigned long value)
{
	__asm__ volatile("mov %0, %%cr0" : : "r"(value) : "memory");
}

static inline void write_cr4(unsigned long value)
{
	__asm__ volatile("mov %0, %%cr4" : : "r"(value) : "memory");
}

static inline uint64_t rdmsr(uint32_t msr)
{
	uint32_t low, high;

	__asm__ volatile("rdmsr" : "=a"(low), "=d"(high) : "c"(msr));
	return (uint64_t)high << 32 | low;
}

static inline void cpuid(uint32_t leaf, uint32_t regs[4])
{
	__asm__ volatile("cpuid"
			 : "=a"(regs[0]), "=b"(regs[1]), "=c"(regs[2]), "=d"(regs[3])
			 : "a"(leaf), "c"(0));
}

/* What sgdt/sidt store: a 16-bit limit, then the base (8 bytes in long mode, 4 otherwise). */
struct descriptor_table_register {
	uint16_t limit;
	unsigned long base;
} __attribute__((packed));

/*
 * SSE needs the OS's permission (SDM vol. 3A, 13.1.3 and 13.1.4): CR0.EM=0
 * (no x87 emulation), CR0.MP=1 (WAIT honours TS), CR4.OSFXSR=1 (FXSAVE and
 * SSE instructions allowed), CR4.OSXMMEXCPT=1 (SIMD exceptions as #XM, which
 * needs an IDT to catch). Only CPL0 may write control registers.
 *
 * Keep -mgeneral-regs-only for code that runs before this. On a host whose
 * KVM emulates ring-0 code (kvm_pvm) many SSE instructions cannot be
 * emulated at CPL0, e.g. `xorps`: pyvmm then ends the run as internal-error
 * and names the instruction. On VT-x/AMD-V, and at CPL3, they simply run.
 */
static void enable_sse(void)
{
	write_cr0((READ_CR(0) & ~CR0_EM) | CR0_MP);
	write_cr4(READ_CR(4) | CR4_OSFXSR | CR4_OSXMMEXCPT);
}

/* One 16-byte round trip through %xmm0; movups is one of the SSE moves kvm_pvm emulates. */
static int sse_round_trip(void)
{
	static const uint32_t in[4] = { 0x01234567, 0x89abcdef, 0xfedcba98, 0x76543210 };
	uint32_t out[4] = { 0 };

	/* No "xmm0" clobber: -mgeneral-regs-only refuses it, and for the same
	   reason the compiler keeps nothing of its own in %xmm0. */
	__asm__ volatile("movups %1, %%xmm0\n\tmovups %%xmm0, %0" : "=m"(out) : "m"(in));
	return out[0] == in[0] && out[1] == in[1] && out[2] == in[2] && out[3] == in[3];
}

static void __attribute__((noreturn)) debug_exit(uint8_t value)
{
	outb(DEBUG_EXIT_PORT, value);
	/* Not reached under pyvmm, which ends the run on that write. */
	for (;;)
		__asm__ volatile("pause");
}

/* --- the program -------------------------------------------------------- */

/*
 * Called by _start with the stack pointer and flags it was entered with, and
 * the OR of every other general register at entry (pyvmm zeroes them).
 */
void __attribute__((noreturn, used))
guest_main(unsigned long entry_sp, unsigned long entry_flags, unsigned long entry_gprs)
{
	uint16_t cs = READ_SEGMENT(cs);
	unsigned int cpl = cs & 3;
	uint32_t regs[4];
	char signature[5] = { 0 };
	uint64_t ram_size;

	serial_init();
	line("hello from C,");
	serial_puts(sizeof(long) == 8 ? " 64-bit" : " 32-bit");
	serial_puts(cpl ? ", CPL3\n" : ", CPL0\n");

	line("entry:");
	field("CS", cs, 4);
	field("DS", READ_SEGMENT(ds), 4);
	field("ES", READ_SEGMENT(es), 4);
	field("FS", READ_SEGMENT(fs), 4);
	field("GS", READ_SEGMENT(gs), 4);
	field("SS", READ_SEGMENT(ss), 4);
	serial_puts("\n");

	line("entry:");
	field("SP", entry_sp, HEX_DIGITS);
	field("FLAGS", entry_flags, HEX_DIGITS);
	field("IF", (entry_flags & RFLAGS_IF) != 0, 1);
	field("IOPL", (entry_flags >> RFLAGS_IOPL_SHIFT) & 3, 1);
	field("GPRS", entry_gprs, HEX_DIGITS);
	serial_puts("\n");

	cpuid(1, regs);
	if (cpl == 0) {
		/* Control registers, MSRs and descriptor tables: readable at CPL0 only. */
		struct descriptor_table_register gdtr, idtr;

		__asm__ volatile("sgdt %0" : "=m"(gdtr));
		__asm__ volatile("sidt %0" : "=m"(idtr));
		line("entry:");
		field("CR0", READ_CR(0), 8);
		field("CR3", READ_CR(3), 8);
		field("CR4", READ_CR(4), 8);
		field("EFER", rdmsr(MSR_EFER), 8);
		serial_puts("\n");
		line("entry:");
		field("GDTR.BASE", gdtr.base, 8);
		field("GDTR.LIMIT", gdtr.limit, 4);
		field("IDTR.BASE", idtr.base, 8);
		field("IDTR.LIMIT", idtr.limit, 4);
		serial_puts("\n");
	}

	fw_cfg_read(FW_CFG_SIGNATURE, signature, 4);
	ram_size = fw_cfg_read_le(FW_CFG_RAM_SIZE, 8);
	line("fw_cfg: signature=");
	serial_puts(signature);
	field("ID", fw_cfg_read_le(FW_CFG_ID, 4), 8);
	field("RAM", ram_size, 16);
	serial_puts(" (");
	putdec((unsigned long)(ram_size >> 20));
	serial_puts(" MiB)");
	field("CPUS", fw_cfg_read_le(FW_CFG_NB_CPUS, 2), 4);
	/* The directory's count is big-endian, unlike the numeric items. */
	field("FILES", __builtin_bswap32((uint32_t)fw_cfg_read_le(FW_CFG_FILE_DIR, 4)), 8);
	serial_puts("\n");

	line("sse: CPUID.1:EDX.SSE=");
	putdec((regs[3] >> 25) & 1);
	if (cpl == 0) {
		enable_sse();
		serial_puts(", enabled: movups ");
		serial_puts(sse_round_trip() ? "ok" : "FAILED");
	}
	serial_puts("\n");

	line("bye, debug-exit 0x");
	puthex(EXIT_VALUE, 2);
	serial_puts("\n");
	debug_exit(EXIT_VALUE);
}

/*
 * The entry point, first in the image (hello.ld). It records the stack
 * pointer, flags and general registers it was entered with, moves to the
 * guest's own 16 KiB stack in .bss (pyvmm's, at 0x70000-0x80000, would do
 * too; a guest that owns its stack can use all of low memory), and calls
 * guest_main with them, the stack aligned to 16 bytes as the psABI wants.
 */
#if defined(__x86_64__)
__asm__(".section .text.start, \"ax\"\n"
	".globl _start\n"
	"_start:\n"
	"	pushfq\n"	/* first, before an instruction changes the flags */
	"	or %rax, %rdx\n"
	"	or %rbx, %rdx\n"
	"	or %rcx, %rdx\n"
	"	or %rsi, %rdx\n"
	"	or %rdi, %rdx\n"
	"	or %rbp, %rdx\n"
	"	or %r8, %rdx\n"
	"	or %r9, %rdx\n"
	"	or %r10, %rdx\n"
	"	or %r11, %rdx\n"
	"	or %r12, %rdx\n"
	"	or %r13, %rdx\n"
	"	or %r14, %rdx\n"
	"	or %r15, %rdx\n" /* third argument: the OR of the GPRs */
	"	pop %rsi\n"	/* second: RFLAGS */
	"	mov %rsp, %rdi\n" /* first: the stack pointer */
	"	mov $stack_top, %rsp\n"
	"	call guest_main\n"
	"	ud2\n"
	".previous\n");
#else
__asm__(".section .text.start, \"ax\"\n"
	".globl _start\n"
	"_start:\n"
	"	pushf\n"	/* first, before an instruction changes the flags */
	"	or %eax, %edx\n"
	"	or %ebx, %edx\n"
	"	or %ecx, %edx\n"
	"	or %esi, %edx\n"
	"	or %edi, %edx\n"
	"	or %ebp, %edx\n"
	"	pop %ecx\n"
	"	mov %esp, %eax\n"
	"	mov $stack_top - 4, %esp\n" /* 16-aligned again after three pushes */
	"	push %edx\n"	/* third argument: the OR of the GPRs */
	"	push %ecx\n"	/* second: EFLAGS */
	"	push %eax\n"	/* first: the stack pointer */
	"	call guest_main\n"
	"	ud2\n"
	".previous\n");
#endif

__asm__(".section .bss\n"
	".balign 16\n"
	"	.skip 16384\n"
	"stack_top:\n"
	".previous\n");
