/*
 * virtio.c - a guest-side virtio driver: virtio-mmio transport, split
 * virtqueues, and the console, block, entropy and balloon devices.
 *
 * A multiboot kernel (virtio.s is its entry), 32-bit protected mode, paging
 * off: guest-physical addresses are the pointers, and the rings and buffers
 * the device reads and writes are static arrays in .bss. No interrupts: the
 * driver asks for none (VIRTQ_AVAIL_F_NO_INTERRUPT) and polls the used ring.
 * Section numbers are those of Virtio 1.2 (docs.oasis-open.org/virtio).
 *
 * Where the devices are: virtio-mmio windows of 0x200 bytes at 0xfeb00000 +
 * 0x200 * i, i = 0..7 (QEMU microvm's base and stride; pyvmm puts console,
 * block, entropy and balloon in windows 0-3). A window with the magic value
 * and a device ID other than 0 holds a device (§4.2.3.1.1).
 *
 * What it does is chosen by the multiboot command line (`pyvmm boot
 * guests/virtio/virtio.elf --append "ARGS"`), any of:
 *   console      send "hello through virtio-console\n" on the transmitq
 *   console=N    that, then N KiB of 'x' in 4 KiB buffers (a throughput demo)
 *   serial=N     N KiB of 'x' through COM1, one `outb` per byte: the same
 *                data the emulated way, for comparison (pyvmm demo paravirtualization)
 *   blk          read sector 0, write sector 1, flush, read it back, GET_ID
 *   rng          read 16 bytes of entropy
 *   touch=N      write to each page of N MiB from 16 MiB up first, as a guest that
 *                used that memory would: the host then holds those pages
 *   balloon=N    give the host N MiB (from 16 MiB up, BALLOON_BASE), then report
 *                the same range as free pages if the device does free page reporting
 *   follow       then keep the balloon at the host's target, as a real driver
 *                does: inflate or deflate whenever the host changes num_pages
 *                (pyvmm's monitor: `balloon N`), print each new size; the run
 *                never ends by itself (the monitor's `quit`, Ctrl-C, --timeout)
 *   blkread=N    read N MiB from sector 0 on, 64 KiB per request, one request at a
 *                time; "blkread: start" and "blkread: read ..." around the reads
 *                (python -m benchmarks --suite virtio times what is between them)
 *   irq          wait for the device in `sti; hlt` until its used-buffer interrupt
 *                (§2.7.7) instead of spinning on the used ring: the 8259 PICs,
 *                pyvmm's IRQs 5, 6, 7, 10 for windows 0-3; prints how many came
 * e.g. pyvmm boot guests/virtio/virtio.elf --console virtio --drive file=disk.img \
 *          --virtio-rng --balloon --append "console blk rng balloon=8"
 *      pyvmm boot guests/virtio/virtio.elf --balloon --monitor unix:mon.sock \
 *          --append "touch=64 follow"
 * Every found device is initialized and its features printed on COM1, as is
 * everything else. The run ends through the debug-exit port: 0x10 if all
 * went well (pyvmm's exit status 33), 0x11 if anything failed (35).
 *
 * QEMU's microvm has the same windows, but puts its first device in the last
 * one (0xfeb00e00), has 24 windows unless ioapic2=off, and offers legacy
 * (version 1) virtio-mmio unless told otherwise. With QEMU 7.2 (console
 * output to a file; the same lines as under pyvmm, the devices in reverse):
 *   qemu-system-x86_64 -M microvm,ioapic2=off -global virtio-mmio.force-legacy=false \
 *     -enable-kvm -m 128 -display none -nodefaults -serial stdio \
 *     -device isa-debug-exit,iobase=0xf4,iosize=4 -kernel guests/virtio/virtio.elf \
 *     -append "console blk rng balloon=8" -chardev file,id=vc,path=vc.txt \
 *     -device virtio-serial-device -device virtconsole,chardev=vc \
 *     -drive id=d0,file=disk.img,format=raw,if=none -device virtio-blk-device,drive=d0 \
 *     -device virtio-rng-device -device virtio-balloon-device,free-page-reporting=on
 *
 * Build: make -C guests (gcc, GNU as and ld; see guests/Makefile).
 */
#include <stddef.h>
#include <stdint.h>

/* --- the PC: COM1, debug-exit, multiboot -------------------------------- */

#define COM1 0x3f8
#define UART_LSR 5	  /* line status register */
#define LSR_THRE 0x20	  /* transmitter holding register empty */
#define DEBUG_EXIT_PORT 0xf4
#define EXIT_OK 0x10	  /* pyvmm exits with (0x10 << 1) | 1 = 33 */
#define EXIT_FAILED 0x11  /* ... 35 */

#define MULTIBOOT_MAGIC 0x2badb002
#define MB_INFO_MEMORY (1u << 0) /* mem_lower, mem_upper valid */
#define MB_INFO_CMDLINE (1u << 2)

struct multiboot_info {
	uint32_t flags;
	uint32_t mem_lower; /* KiB below 640 KiB */
	uint32_t mem_upper; /* KiB from 1 MiB to the first hole */
	uint32_t boot_device;
	uint32_t cmdline; /* a NUL-terminated string: "<kernel path> <append>" */
};

/* --- virtio-mmio (§4.2) -------------------------------------------------- */

#define VIRTIO_MMIO_BASE 0xfeb00000u
#define VIRTIO_MMIO_STRIDE 0x200u
#define VIRTIO_MMIO_WINDOWS 8

/* §4.2.2 MMIO Device Register Layout: 32-bit registers, then the config space. */
#define REG_MAGIC 0x000		 /* 0x74726976, "virt" */
#define REG_VERSION 0x004	 /* 2: the non-legacy layout */
#define REG_DEVICE_ID 0x008
#define REG_DEVICE_FEATURES 0x010
#define REG_DEVICE_FEATURES_SEL 0x014
#define REG_DRIVER_FEATURES 0x020
#define REG_DRIVER_FEATURES_SEL 0x024
#define REG_QUEUE_SEL 0x030
#define REG_QUEUE_NUM_MAX 0x034
#define REG_QUEUE_NUM 0x038
#define REG_QUEUE_READY 0x044
#define REG_QUEUE_NOTIFY 0x050
#define REG_INTERRUPT_STATUS 0x060 /* bit 0: used buffers, bit 1: configuration change */
#define REG_INTERRUPT_ACK 0x064
#define REG_STATUS 0x070
#define REG_QUEUE_DESC_LOW 0x080
#define REG_QUEUE_DESC_HIGH 0x084
#define REG_QUEUE_DRIVER_LOW 0x090 /* the available ring */
#define REG_QUEUE_DRIVER_HIGH 0x094
#define REG_QUEUE_DEVICE_LOW 0x0a0 /* the used ring */
#define REG_QUEUE_DEVICE_HIGH 0x0a4
#define REG_CONFIG_GENERATION 0x0fc
#define REG_CONFIG 0x100

#define VIRTIO_MMIO_MAGIC 0x74726976
#define INTERRUPT_CONFIG 2 /* §4.2.2 InterruptStatus: the configuration space changed */

/* §2.1 Device Status Field. */
#define STATUS_ACKNOWLEDGE 1
#define STATUS_DRIVER 2
#define STATUS_DRIVER_OK 4
#define STATUS_FEATURES_OK 8
#define STATUS_DEVICE_NEEDS_RESET 64
#define STATUS_FAILED 128

/* §6 Reserved Feature Bits: the one every non-legacy driver accepts. */
#define VIRTIO_F_VERSION_1 32

#define BIT(n) (1ull << (n))

/* §5 Device Types: the IDs this driver knows. */
#define ID_BLOCK 2
#define ID_CONSOLE 3
#define ID_ENTROPY 4
#define ID_BALLOON 5

/* --- split virtqueues (§2.7) ---------------------------------------------- */

/*
 * Our queue size: a power of 2 (§2.7), at most the device's QueueNumMax.
 * The driver keeps one request in flight (the console sends a batch of up
 * to QUEUE_SIZE), always in descriptors 0, 1, 2, ...: no free list needed.
 */
#define QUEUE_SIZE 32
#define MAX_QUEUES 4 /* the balloon's inflateq, deflateq, statsq, reporting_vq */

#define VIRTQ_DESC_F_NEXT 1	      /* §2.7.5: the chain goes on at `next` */
#define VIRTQ_DESC_F_WRITE 2	      /* the device writes this buffer (else reads it) */
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1 /* §2.7.7: we poll, no used-buffer interrupts */

struct virtq_desc { /* §2.7.5 */
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

struct virtq_avail { /* §2.7.6: the driver's ring */
	uint16_t flags;
	uint16_t idx; /* where the driver puts the next entry (free-running, mod 2^16) */
	uint16_t ring[QUEUE_SIZE];
	uint16_t used_event; /* only with VIRTIO_F_EVENT_IDX, which we do not accept */
};

struct virtq_used_elem {
	uint32_t id;  /* head of the chain the device used */
	uint32_t len; /* bytes it wrote into the chain's writable buffers */
};

struct virtq_used { /* §2.7.8: the device's ring */
	uint16_t flags;
	uint16_t idx;
	struct virtq_used_elem ring[QUEUE_SIZE];
	uint16_t avail_event;
};

/* §2.7's alignment table: descriptor table 16, available ring 2, used ring 4. */
struct virtq {
	struct virtq_desc desc[QUEUE_SIZE] __attribute__((aligned(16)));
	struct virtq_avail avail __attribute__((aligned(2)));
	volatile struct virtq_used used __attribute__((aligned(4))); /* the device writes it */
	uint16_t size;	    /* the queue size we told the device */
	uint16_t index;	    /* its queue number */
	uint16_t next_avail; /* our copy of avail.idx */
	uint16_t last_used;  /* used.idx as far as we consumed it */
};

struct vdev {
	uint32_t base;	   /* the MMIO window */
	uint32_t id;	   /* §5 device ID */
	uint64_t features; /* negotiated */
	int ready;	   /* DRIVER_OK set */
	volatile uint32_t interrupt_status; /* what the interrupt handler read, ORed (irq) */
	struct virtq vq[MAX_QUEUES]; /* indexed by queue number */
};

static struct vdev devices[VIRTIO_MMIO_WINDOWS];
static int use_irq; /* `irq`: sleep until used-buffer interrupts instead of polling */

/*
 * Compiler barrier. x86 keeps stores in order with stores and loads with
 * loads (and MMIO accesses are uncached, serializing), so the barriers §2.7
 * asks for (§2.7.13.3 before idx, §2.7.13.4 before the notification) only
 * have to keep the compiler from reordering.
 */
#define barrier() __asm__ volatile("" ::: "memory")

/* --- port I/O, COM1 --------------------------------------------------------- */

static inline void outb(uint16_t port, uint8_t value)
{
	__asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
	uint8_t value;

	__asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port));
	return value;
}

static void putc(char c)
{
	while (!(inb(COM1 + UART_LSR) & LSR_THRE)) /* always empty in pyvmm, not in hardware */
		;
	outb(COM1, (uint8_t)c);
}

static void puts(const char *s)
{
	while (*s)
		putc(*s++);
}

static void puthex(uint64_t value, int digits)
{
	while (digits-- > 0)
		putc("0123456789abcdef"[(value >> (4 * digits)) & 0xf]);
}

static void putdec(uint32_t value)
{
	char digits[10];
	int count = 0;

	do {
		digits[count++] = (char)('0' + value % 10);
		value /= 10;
	} while (value);
	while (count)
		putc(digits[--count]);
}

/* "1 request", "2 requests": a count and its noun. */
static void putcount(uint32_t n, const char *noun)
{
	putdec(n);
	putc(' ');
	puts(noun);
	if (n != 1)
		putc('s');
}

static void zero(void *p, size_t n)
{
	for (uint8_t *b = p; n--; b++)
		*b = 0;
}

static int failures;

/* Print "<who>: FAILED (<why>)" and count it: the exit value becomes EXIT_FAILED. */
static int fail(const char *who, const char *why)
{
	puts(who);
	puts(": FAILED (");
	puts(why);
	puts(")\n");
	failures++;
	return -1;
}

/* --- the transport: registers, initialization (§3.1.1, §4.2.3) ------------- */

static inline uint32_t mmio_read(const struct vdev *d, uint32_t reg)
{
	return *(volatile uint32_t *)(d->base + reg);
}

static inline void mmio_write(const struct vdev *d, uint32_t reg, uint32_t value)
{
	*(volatile uint32_t *)(d->base + reg) = value;
}

static const char *device_name(uint32_t id)
{
	switch (id) {
	case ID_BLOCK:
		return "block";
	case ID_CONSOLE:
		return "console";
	case ID_ENTROPY:
		return "entropy";
	case ID_BALLOON:
		return "balloon";
	}
	return 0;
}

/* Add status bits, one step of §3.1.1 at a time. */
static void set_status(struct vdev *d, uint32_t bits)
{
	mmio_write(d, REG_STATUS, mmio_read(d, REG_STATUS) | bits);
}

/*
 * §3.1.1 steps 1-6: reset, ACKNOWLEDGE, DRIVER, then the feature handshake:
 * accept what we understand (`wanted`, plus VIRTIO_F_VERSION_1) among what
 * the device offers, and check that the device keeps FEATURES_OK.
 */
static int negotiate(struct vdev *d, uint64_t wanted)
{
	const char *name = device_name(d->id);
	uint64_t offered;

	mmio_write(d, REG_STATUS, 0); /* §2.4: reset; done when status reads 0 */
	while (mmio_read(d, REG_STATUS) != 0)
		;
	set_status(d, STATUS_ACKNOWLEDGE); /* we found it */
	set_status(d, STATUS_DRIVER);	   /* and can drive it */

	/* §4.2.2: 64 feature bits, read and written 32 at a time through a selector. */
	mmio_write(d, REG_DEVICE_FEATURES_SEL, 0);
	offered = mmio_read(d, REG_DEVICE_FEATURES);
	mmio_write(d, REG_DEVICE_FEATURES_SEL, 1);
	offered |= (uint64_t)mmio_read(d, REG_DEVICE_FEATURES) << 32;
	d->features = offered & (wanted | BIT(VIRTIO_F_VERSION_1));

	puts("virtio: ");
	puts(name);
	puts(" features 0x");
	puthex(d->features, 16);
	puts(" (offered 0x");
	puthex(offered, 16);
	puts(")\n");
	if (!(d->features & BIT(VIRTIO_F_VERSION_1)))
		goto failed; /* a legacy-only device: not for this driver */

	mmio_write(d, REG_DRIVER_FEATURES_SEL, 0);
	mmio_write(d, REG_DRIVER_FEATURES, (uint32_t)d->features);
	mmio_write(d, REG_DRIVER_FEATURES_SEL, 1);
	mmio_write(d, REG_DRIVER_FEATURES, (uint32_t)(d->features >> 32));
	set_status(d, STATUS_FEATURES_OK);
	if (!(mmio_read(d, REG_STATUS) & STATUS_FEATURES_OK))
		goto failed; /* §3.1.1 step 6: the device refused this subset */
	return 0;

failed:
	set_status(d, STATUS_FAILED); /* §3.1.1: give up, and tell the device */
	return fail(name, "feature negotiation");
}

/* §4.2.3.2 Virtqueue Configuration (part of §3.1.1 step 7). */
static int setup_queue(struct vdev *d, uint16_t index)
{
	struct virtq *q = &d->vq[index];
	uint32_t max;

	mmio_write(d, REG_QUEUE_SEL, index);
	if (mmio_read(d, REG_QUEUE_READY) != 0)
		return fail(device_name(d->id), "queue already in use");
	max = mmio_read(d, REG_QUEUE_NUM_MAX);
	if (max == 0)
		return fail(device_name(d->id), "queue not available");

	zero(q, sizeof(*q));
	q->index = index;
	q->size = QUEUE_SIZE;
	while (q->size > max) /* QueueNumMax need not be a power of 2; our size must */
		q->size /= 2;
	q->avail.flags = use_irq ? 0 : VIRTQ_AVAIL_F_NO_INTERRUPT;

	mmio_write(d, REG_QUEUE_NUM, q->size);
	mmio_write(d, REG_QUEUE_DESC_LOW, (uint32_t)q->desc);
	mmio_write(d, REG_QUEUE_DESC_HIGH, 0);
	mmio_write(d, REG_QUEUE_DRIVER_LOW, (uint32_t)&q->avail);
	mmio_write(d, REG_QUEUE_DRIVER_HIGH, 0);
	mmio_write(d, REG_QUEUE_DEVICE_LOW, (uint32_t)&q->used);
	mmio_write(d, REG_QUEUE_DEVICE_HIGH, 0);
	mmio_write(d, REG_QUEUE_READY, 1);
	return 0;
}

/* §3.1.1 step 8: the device is live. It may now use the buffers we make available. */
static void driver_ok(struct vdev *d)
{
	set_status(d, STATUS_DRIVER_OK);
	d->ready = 1;
}

/* A 32-bit field of the device's configuration space (§2.5, §4.2.2: offset 0x100 on). */
static uint32_t config_read32(const struct vdev *d, uint32_t offset)
{
	return mmio_read(d, REG_CONFIG + offset);
}

static void config_write32(const struct vdev *d, uint32_t offset, uint32_t value)
{
	mmio_write(d, REG_CONFIG + offset, value);
}

/*
 * A 64-bit field takes two reads: §2.5.1 has the driver read ConfigGeneration
 * before and after, and read again if the device changed the space meanwhile.
 */
static uint64_t config_read64(const struct vdev *d, uint32_t offset)
{
	uint32_t generation;
	uint64_t value;

	do {
		generation = mmio_read(d, REG_CONFIG_GENERATION);
		value = config_read32(d, offset);
		value |= (uint64_t)config_read32(d, offset + 4) << 32;
	} while (generation != mmio_read(d, REG_CONFIG_GENERATION));
	return value;
}

/* --- using a queue: supplying buffers (§2.7.13), taking them back (§2.7.14) -- */

/* Fill descriptor i; with VIRTQ_DESC_F_NEXT the chain goes on at i + 1. */
static void vq_desc(struct virtq *q, uint16_t i, const void *buf, uint32_t len, uint16_t flags)
{
	q->desc[i].addr = (uint32_t)buf; /* identity-mapped: the pointer is the guest-physical address */
	q->desc[i].len = len;
	q->desc[i].flags = flags;
	q->desc[i].next = (flags & VIRTQ_DESC_F_NEXT) ? i + 1 : 0;
}

/* §2.7.13.2-3: put the chain's head in the available ring, then move idx past it. */
static void vq_offer(struct virtq *q, uint16_t head)
{
	q->avail.ring[q->next_avail & (q->size - 1)] = head;
	barrier(); /* the descriptors and the ring entry before idx */
	q->avail.idx = ++q->next_avail;
}

/* §2.7.13.4, §4.2.3.3: tell the device, by writing the queue number to QueueNotify. */
static void vq_kick(const struct vdev *d, const struct virtq *q)
{
	barrier();
	mmio_write(d, REG_QUEUE_NOTIFY, q->index);
}

#define SPIN_LIMIT (1u << 26)

/*
 * §2.7.14: wait until the device has returned a chain in the used ring, and
 * consume that entry; its `len` goes to *len. pyvmm's device works during the
 * QueueNotify write, so the entry is already there; another VMM may take a
 * while. -1 if the device needs a reset (§2.1.2) or never answers.
 */
static int vq_wait(const struct vdev *d, struct virtq *q, uint32_t *len)
{
	/*
	 * `irq`: sleep, then look. The device raises its interrupt for every used
	 * buffer (avail.flags 0, §2.7.7) and the PIC holds it while interrupts are
	 * off, so an answer that came before we slept wakes us at once: one
	 * interrupt per request. sti's one-instruction shadow keeps it from
	 * coming between sti and hlt.
	 */
	while (use_irq) {
		__asm__ volatile("sti; hlt; cli" ::: "memory");
		if (d->interrupt_status & INTERRUPT_CONFIG &&
		    mmio_read(d, REG_STATUS) & STATUS_DEVICE_NEEDS_RESET)
			return -1;
		if (q->used.idx != q->last_used)
			break;
	}
	for (uint32_t spins = 0; q->used.idx == q->last_used; spins++) {
		if (spins == SPIN_LIMIT)
			return -1;
		if (spins % 4096 == 4095 && mmio_read(d, REG_STATUS) & STATUS_DEVICE_NEEDS_RESET)
			return -1;
		__asm__ volatile("pause");
	}
	barrier(); /* the element after idx: the device wrote it first (§2.7.8) */
	if (len)
		*len = q->used.ring[q->last_used & (q->size - 1)].len;
	q->last_used++;
	return 0;
}

/* Make one chain (descriptors 0..) available, notify, and wait for it. */
static int vq_request(const struct vdev *d, struct virtq *q, uint32_t *len)
{
	vq_offer(q, 0);
	vq_kick(d, q);
	return vq_wait(d, q, len);
}

/* --- console (§5.3) ---------------------------------------------------------- */

/* §5.3.2: queue 0 is port 0's receiveq, queue 1 its transmitq. Only transmitting here. */
#define CONSOLE_TRANSMITQ 1
#define CONSOLE_CHUNK 4096

static const char hello[] = "hello through virtio-console\n";
static char bulk[CONSOLE_CHUNK]; /* 'x's: every bulk buffer points here */

static void console_init(struct vdev *d)
{
	/* No device features: not MULTIPORT (§5.3.3), so one port and two queues. */
	if (negotiate(d, 0) == 0 && setup_queue(d, CONSOLE_TRANSMITQ) == 0)
		driver_ok(d);
}

/* Send `hello`, then `kib` KiB of 'x' if `bulk_wanted`. */
static void console_run(struct vdev *d, int bulk_wanted, uint32_t kib)
{
	struct virtq *q = &d->vq[CONSOLE_TRANSMITQ];
	uint32_t left = kib, requests = 0;

	/* §5.3.6: output is a device-readable buffer on the transmitq. */
	vq_desc(q, 0, hello, sizeof(hello) - 1, 0);
	if (vq_request(d, q, 0) < 0) {
		fail("console", "device did not use the buffer");
		return;
	}
	if (!bulk_wanted)
		return;

	for (int i = 0; i < CONSOLE_CHUNK; i++)
		bulk[i] = 'x';
	while (left) {
		/* A batch: up to a queue's worth of one-buffer chains, one notification. */
		uint16_t batch = 0;

		while (left && batch < q->size) {
			uint32_t chunk = left < CONSOLE_CHUNK / 1024 ? left : CONSOLE_CHUNK / 1024;

			vq_desc(q, batch, bulk, chunk * 1024, 0);
			vq_offer(q, batch);
			batch++;
			left -= chunk;
		}
		vq_kick(d, q);
		for (; batch; batch--, requests++)
			if (vq_wait(d, q, 0) < 0) {
				fail("console", "device did not use a buffer");
				return;
			}
	}
	puts("\nconsole: sent "); /* on COM1, after the data on the same terminal */
	putdec(kib);
	puts(" KiB in ");
	putcount(requests, "request");
	putc('\n');
}

/* --- block (§5.2) ---------------------------------------------------------- */

#define BLK_F_RO 5     /* §5.2.3: the disk is read-only */
#define BLK_F_FLUSH 9  /* FLUSH requests work */
#define BLK_REQUESTQ 0
#define BLK_CONFIG_CAPACITY 0 /* le64, in 512-byte sectors */

#define BLK_T_IN 0 /* §5.2.6 request types */
#define BLK_T_OUT 1
#define BLK_T_FLUSH 4
#define BLK_T_GET_ID 8
#define BLK_S_OK 0 /* status values */
#define BLK_S_IOERR 1
#define BLK_S_UNSUPP 2
#define SECTOR_SIZE 512
#define BLK_ID_BYTES 20

/* §5.2.6: a request is this header (device-readable), data, then a status byte (device-writable). */
static struct blk_req_header {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
} blk_header;
static uint8_t blk_data[SECTOR_SIZE] __attribute__((aligned(16)));
static uint8_t blk_pattern[SECTOR_SIZE];
static uint8_t blk_status;

static const char blk_text[] = "pyvmm virtio-blk sector 1\n";

static void blk_init(struct vdev *d)
{
	if (negotiate(d, BIT(BLK_F_RO) | BIT(BLK_F_FLUSH)) == 0 && setup_queue(d, BLK_REQUESTQ) == 0)
		driver_ok(d);
}

/*
 * One request of `type` at `sector`, with `len` bytes of data at `data` that
 * the device reads (OUT) or writes (`device_writes`: IN, GET_ID): three
 * descriptors, or two without data. Returns the status byte, or -1.
 */
static int blk_request(struct vdev *d, uint32_t type, uint64_t sector, void *data, uint32_t len,
		       int device_writes)
{
	struct virtq *q = &d->vq[BLK_REQUESTQ];
	uint16_t n = 0;

	blk_header.type = type;
	blk_header.reserved = 0;
	blk_header.sector = sector;
	blk_status = 0xff; /* not a status: shows whether the device wrote one */
	vq_desc(q, n++, &blk_header, sizeof(blk_header), VIRTQ_DESC_F_NEXT);
	if (len)
		vq_desc(q, n++, data, len,
			VIRTQ_DESC_F_NEXT | (device_writes ? VIRTQ_DESC_F_WRITE : 0));
	vq_desc(q, n, &blk_status, 1, VIRTQ_DESC_F_WRITE);
	if (vq_request(d, q, 0) < 0)
		return -1;
	return blk_status;
}

static const char *blk_problem(int status)
{
	switch (status) {
	case -1:
		return "no answer from the device";
	case BLK_S_IOERR:
		return "IOERR";
	case BLK_S_UNSUPP:
		return "UNSUPP";
	}
	return "bad status byte";
}

/* Print "blk: FAILED (<what>: <why>)"; returns -1. */
static int blk_fail(const char *what, int status)
{
	puts("blk: FAILED (");
	puts(what);
	puts(": ");
	puts(blk_problem(status));
	puts(")\n");
	failures++;
	return -1;
}

static int blk_run(struct vdev *d)
{
	uint64_t capacity = config_read64(d, BLK_CONFIG_CAPACITY);
	int status;

	puts("blk: capacity ");
	if (capacity >> 32) {
		puts("0x");
		puthex(capacity, 16);
		puts(" sectors\n");
	} else {
		putcount((uint32_t)capacity, "sector");
		putc('\n');
	}
	if (capacity < 2) /* §5.2.6.1: no request may reach past capacity */
		return fail("blk", "the disk has fewer than 2 sectors");

	status = blk_request(d, BLK_T_IN, 0, blk_data, SECTOR_SIZE, 1);
	if (status != BLK_S_OK)
		return blk_fail("read sector 0", status);
	puts("blk: sector 0:");
	for (int i = 0; i < 16; i++) {
		putc(' ');
		puthex(blk_data[i], 2);
	}
	putc('\n');

	for (int i = 0; i < SECTOR_SIZE; i++)
		blk_pattern[i] = i < (int)sizeof(blk_text) - 1 ? (uint8_t)blk_text[i] : 0;
	status = blk_request(d, BLK_T_OUT, 1, blk_pattern, SECTOR_SIZE, 0);
	if (d->features & BIT(BLK_F_RO)) {
		/*
		 * A driver that negotiated VIRTIO_BLK_F_RO would not write; this one
		 * does, to show the device's side of §5.2.6.2: a write to a
		 * read-only disk fails with IOERR and changes nothing.
		 */
		if (status != BLK_S_IOERR)
			return blk_fail("read-only disk answered a write", status);
		puts("blk: read-only: write refused (IOERR)\n");
	} else {
		if (status != BLK_S_OK)
			return blk_fail("write sector 1", status);
		if (d->features & BIT(BLK_F_FLUSH)) { /* only with the feature (§5.2.6) */
			status = blk_request(d, BLK_T_FLUSH, 0, 0, 0, 0);
			if (status != BLK_S_OK)
				return blk_fail("flush", status);
		}
		zero(blk_data, SECTOR_SIZE);
		status = blk_request(d, BLK_T_IN, 1, blk_data, SECTOR_SIZE, 1);
		if (status != BLK_S_OK)
			return blk_fail("read sector 1", status);
		for (int i = 0; i < SECTOR_SIZE; i++)
			if (blk_data[i] != blk_pattern[i])
				return fail("blk", "sector 1 reads back different from what was written");
		puts(d->features & BIT(BLK_F_FLUSH) ? "blk: sector 1 written, flushed, read back\n"
						     : "blk: sector 1 written, read back\n");
	}

	/* GET_ID: up to 20 bytes of ASCII, NUL-padded (no NUL if all 20 are used). */
	zero(blk_data, BLK_ID_BYTES + 1);
	status = blk_request(d, BLK_T_GET_ID, 0, blk_data, BLK_ID_BYTES, 1);
	if (status != BLK_S_OK)
		return blk_fail("GET_ID", status);
	puts("blk: id \"");
	puts((const char *)blk_data);
	puts("\"\nblk: ok\n");
	return 0;
}

/* blkread=N: sequential reads, 64 KiB per request, each waited for (a benchmark). */
#define BLKREAD_REQUEST (64 * 1024)
static uint8_t blkread_buffer[BLKREAD_REQUEST] __attribute__((aligned(4096)));

static int blkread_run(struct vdev *d, uint32_t mib)
{
	uint32_t sectors = BLKREAD_REQUEST / SECTOR_SIZE;
	uint32_t requests = mib * ((1u << 20) / BLKREAD_REQUEST);
	uint32_t sum = 0;

	if (config_read64(d, BLK_CONFIG_CAPACITY) < (uint64_t)requests * sectors)
		return fail("blkread", "the disk is smaller than that");
	puts("blkread: start\n");
	for (uint32_t i = 0; i < requests; i++) {
		int status = blk_request(d, BLK_T_IN, (uint64_t)i * sectors, blkread_buffer,
					 BLKREAD_REQUEST, 1);

		if (status != BLK_S_OK)
			return blk_fail("blkread", status);
		sum += blkread_buffer[0] + blkread_buffer[BLKREAD_REQUEST - 1];
	}
	puts("blkread: read ");
	putdec(mib);
	puts(" MiB in ");
	putcount(requests, "request");
	puts(", byte sum ");
	putdec(sum);
	putc('\n');
	return 0;
}

/* --- entropy (§5.4) ------------------------------------------------------- */

#define RNG_REQUESTQ 0
#define RNG_BYTES 16

static uint8_t rng_buf[RNG_BYTES];

static void rng_init(struct vdev *d)
{
	if (negotiate(d, 0) == 0 && setup_queue(d, RNG_REQUESTQ) == 0)
		driver_ok(d);
}

static void rng_run(struct vdev *d)
{
	struct virtq *q = &d->vq[RNG_REQUESTQ];
	uint32_t got = 0, len;

	/* §5.4.6: a device-writable buffer; the device fills one or more bytes (used len). */
	while (got < RNG_BYTES) {
		vq_desc(q, 0, rng_buf + got, RNG_BYTES - got, VIRTQ_DESC_F_WRITE);
		if (vq_request(d, q, &len) < 0) {
			fail("rng", "no answer from the device");
			return;
		}
		if (len == 0 || len > RNG_BYTES - got) {
			fail("rng", "bad used length");
			return;
		}
		got += len;
	}
	puts("rng: ");
	for (int i = 0; i < RNG_BYTES; i++)
		puthex(rng_buf[i], 2);
	puts("\nrng: ok\n");
}

/* --- balloon (§5.5) ------------------------------------------------------- */

#define BALLOON_F_STATS_VQ 1	    /* §5.5.3 */
#define BALLOON_F_FREE_PAGE_HINT 3
#define BALLOON_F_PAGE_REPORTING 5 /* Linux's VIRTIO_BALLOON_F_REPORTING */
#define BALLOON_INFLATEQ 0
#define BALLOON_DEFLATEQ 1
#define BALLOON_CONFIG_NUM_PAGES 0 /* §5.5.4: the host's target, in 4 KiB pages */
#define BALLOON_CONFIG_ACTUAL 4	   /* the driver's balloon size, in 4 KiB pages */
#define BALLOON_PFN_SHIFT 12	   /* §5.5.6: page numbers are in 4 KiB units */
#define BALLOON_S_MEMTOT 5	   /* §5.5.6.4: total memory, in bytes */
#define PAGES_PER_MIB 256
#define REPORT_CHUNK_MIB 4	   /* Linux reports free blocks of 2 and 4 MiB */
#define REPORT_CAPACITY 32	   /* buffers per report (Linux's PAGE_REPORTING_CAPACITY) */

/*
 * The RAM this kernel gives away: from 16 MiB up. The kernel, its .bss and
 * the stack end far below (virtio.ld's _end), pyvmm puts the multiboot
 * information right after the kernel, and nothing here allocates memory.
 * (A kernel booted with modules must keep them out of this range.)
 */
#define BALLOON_BASE (16u << 20)

extern char _end[]; /* virtio.ld */

static uint32_t pfns[PAGES_PER_MIB]; /* one inflate request: 1 MiB of page numbers, le32 */
static uint32_t balloon_pages;	     /* in the balloon now: PFNs from BALLOON_BASE up */

/* §5.5.6.3: statistics are packed {le16 tag; le64 val} entries. */
static struct balloon_stat {
	uint16_t tag;
	uint64_t val;
} __attribute__((packed)) balloon_stats[1];

static uint16_t balloon_statsq, balloon_reportingq; /* queue numbers; 0: none */
static uint32_t ram_top;			     /* end of the RAM above 1 MiB, from multiboot */

static void balloon_init(struct vdev *d)
{
	struct virtq *q;
	uint16_t next = BALLOON_DEFLATEQ + 1;

	/*
	 * We accept the statsq when offered, although we send statistics once:
	 * it keeps the reporting_vq's number the same for every device. §5.5.2
	 * lists statsq 2, free_page_vq 3, reporting_vq 4, "only if" their feature;
	 * Linux (and pyvmm, balloon.py) number only the queues that were
	 * negotiated, QEMU always has its statsq at 2. With the statsq and without
	 * free page hinting, all three agree: the reporting_vq is queue 3.
	 */
	if (negotiate(d, BIT(BALLOON_F_STATS_VQ) | BIT(BALLOON_F_PAGE_REPORTING)) < 0)
		return;
	if (setup_queue(d, BALLOON_INFLATEQ) < 0 || setup_queue(d, BALLOON_DEFLATEQ) < 0)
		return;
	if (d->features & BIT(BALLOON_F_STATS_VQ)) {
		balloon_statsq = next++;
		if (setup_queue(d, balloon_statsq) < 0)
			return;
	}
	if (d->features & BIT(BALLOON_F_FREE_PAGE_HINT)) /* never accepted: the numbering rule */
		next++;
	if (d->features & BIT(BALLOON_F_PAGE_REPORTING)) {
		balloon_reportingq = next++;
		if (setup_queue(d, balloon_reportingq) < 0)
			return;
	}
	driver_ok(d);

	if (balloon_statsq) {
		/*
		 * §5.5.6.3.1: after initialization the driver makes one statistics
		 * buffer available. The device keeps it until it wants fresh numbers;
		 * this kernel never gives it another.
		 */
		q = &d->vq[balloon_statsq];
		balloon_stats[0].tag = BALLOON_S_MEMTOT;
		balloon_stats[0].val = (uint64_t)ram_top;
		vq_desc(q, 0, balloon_stats, sizeof(balloon_stats), 0);
		vq_offer(q, 0);
		vq_kick(d, q);
	}
}

/* Write to every page of `mib` MiB from BALLOON_BASE: memory the guest has used. */
static void touch_run(uint32_t mib)
{
	if ((uint32_t)_end > BALLOON_BASE || ram_top < BALLOON_BASE ||
	    mib > (ram_top - BALLOON_BASE) >> 20) {
		fail("touch", "the range from 16 MiB is not free RAM of that size");
		return;
	}
	for (uint32_t page = 0; page < mib * PAGES_PER_MIB; page++)
		*(volatile uint32_t *)(BALLOON_BASE + page * 4096) = page | 1;
	puts("touch: wrote ");
	putdec(mib);
	puts(" MiB from 16 MiB\n");
}

/* One request of `count` page numbers from `first_pfn` on the inflateq or the deflateq. */
static int balloon_send(struct vdev *d, uint16_t queue, uint32_t first_pfn, uint32_t count)
{
	struct virtq *q = &d->vq[queue];

	for (uint32_t i = 0; i < count; i++)
		pfns[i] = first_pfn + i;
	vq_desc(q, 0, pfns, count * sizeof(pfns[0]), 0);
	return vq_request(d, q, 0);
}

/*
 * Give the host `mib` MiB from BALLOON_BASE (§5.5.6: inflate), then report
 * them free (§5.5.6.7). A demo: a real driver inflates toward num_pages, the
 * host's target in the configuration space (printed here), and deflates
 * through the deflateq when it wants pages back, as `follow` (below) does.
 */
static void balloon_run(struct vdev *d, uint32_t mib)
{
	struct virtq *q;
	uint32_t first_pfn = BALLOON_BASE >> BALLOON_PFN_SHIFT;

	if ((uint32_t)_end > BALLOON_BASE || ram_top < BALLOON_BASE ||
	    mib > (ram_top - BALLOON_BASE) >> 20) {
		fail("balloon", "the range from 16 MiB is not free RAM of that size");
		return;
	}
	puts("balloon: host target ");
	putdec(config_read32(d, BALLOON_CONFIG_NUM_PAGES));
	puts(" pages; giving it PFNs 0x");
	puthex(first_pfn, 5);
	puts("-0x");
	puthex(first_pfn + mib * PAGES_PER_MIB - 1, 5);
	putc('\n');

	/* §5.5.6: an inflate request is a device-readable array of page numbers. */
	for (uint32_t m = 0; m < mib; m++)
		if (balloon_send(d, BALLOON_INFLATEQ, first_pfn + m * PAGES_PER_MIB, PAGES_PER_MIB) < 0) {
			fail("balloon", "inflateq: no answer from the device");
			return;
		}
	/* §5.5.6.1: then tell the device how many pages the balloon holds now. */
	balloon_pages = mib * PAGES_PER_MIB;
	config_write32(d, BALLOON_CONFIG_ACTUAL, balloon_pages);
	puts("balloon: inflated ");
	putdec(mib);
	puts(" MiB\n");

	if (!balloon_reportingq) {
		puts("balloon: free page reporting not offered\n");
		return;
	}
	/*
	 * §5.5.6.7: free page reporting. A report is a chain of device-writable
	 * buffers, each a run of free memory (as Linux's virtqueue_add_inbuf); the
	 * host may discard their contents, and the driver may use the pages again
	 * once the device has returned the chain. A real kernel reports what its
	 * allocator holds free; this one has no allocator and reports the range it
	 * just gave away.
	 */
	q = &d->vq[balloon_reportingq];
	uint32_t done = 0;
	while (done < mib) {
		uint16_t n = 0;

		while (done < mib && n < REPORT_CAPACITY && n < q->size) {
			uint32_t chunk = mib - done < REPORT_CHUNK_MIB ? mib - done : REPORT_CHUNK_MIB;

			vq_desc(q, n, (const void *)(BALLOON_BASE + (done << 20)), chunk << 20,
				VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT);
			done += chunk;
			n++;
		}
		q->desc[n - 1].flags &= ~VIRTQ_DESC_F_NEXT; /* the chain ends here */
		if (vq_request(d, q, 0) < 0) {
			fail("balloon", "reporting_vq: no answer from the device");
			return;
		}
	}
	puts("balloon: reported ");
	putdec(mib);
	puts(" MiB\n");
}

/* --- the balloon, following the host's target (§5.5.6) ------------------- */

/*
 * The host changes num_pages whenever it likes (pyvmm's monitor: `balloon N`)
 * and tells the driver with a configuration change interrupt. This kernel
 * keeps interrupts off, so it polls the same news in InterruptStatus (§4.2.2),
 * and moves its balloon toward the target one request at a time: the balloon
 * is the pages from BALLOON_BASE up, `balloon_pages` of them, grown and
 * shrunk at the top.
 */
#define POLL_TSC_TICKS (1u << 21) /* between two looks at InterruptStatus: ~1 ms at 2 GHz */

static inline uint64_t rdtsc(void)
{
	uint32_t low, high;

	__asm__ volatile("rdtsc" : "=a"(low), "=d"(high));
	return (uint64_t)high << 32 | low;
}

/* Let about a millisecond pass without a VM exit: every register read is one. */
static void delay(void)
{
	uint64_t start = rdtsc();

	while (rdtsc() - start < POLL_TSC_TICKS)
		__asm__ volatile("pause");
}

/*
 * Wait for a configuration change (§4.2.2 InterruptStatus bit 1), then
 * acknowledge it (InterruptACK) before reading the configuration, so that
 * a change made meanwhile sets the bit again. -1 if the device needs a reset
 * (§2.1.2), which it also announces as a configuration change.
 */
static int wait_config_change(struct vdev *d)
{
	/* With `irq` the interrupt handler may have read and acknowledged it already. */
	while (!(d->interrupt_status & INTERRUPT_CONFIG) &&
	       !(mmio_read(d, REG_INTERRUPT_STATUS) & INTERRUPT_CONFIG))
		delay();
	d->interrupt_status &= ~INTERRUPT_CONFIG;
	mmio_write(d, REG_INTERRUPT_ACK, INTERRUPT_CONFIG);
	return mmio_read(d, REG_STATUS) & STATUS_DEVICE_NEEDS_RESET ? -1 : 0;
}

/* The host's target (§5.5.4 num_pages), cut to the `capacity` this kernel can give. */
static uint32_t balloon_target(const struct vdev *d, uint32_t capacity)
{
	uint32_t target = config_read32(d, BALLOON_CONFIG_NUM_PAGES);

	return target < capacity ? target : capacity;
}

/*
 * One step toward `target`, at most 1 MiB: inflate the pages above the
 * balloon (§5.5.6 inflateq), or deflate its top pages (the deflateq: without
 * VIRTIO_BALLOON_F_MUST_TELL_HOST the guest may use them at once, and finds
 * zeros where the host released them). Then `actual` (§5.5.6.1: the driver
 * updates it after every change of the balloon).
 */
static int balloon_step(struct vdev *d, uint32_t target)
{
	uint32_t first_pfn = BALLOON_BASE >> BALLOON_PFN_SHIFT;
	uint32_t count;

	if (target > balloon_pages) {
		count = target - balloon_pages < PAGES_PER_MIB ? target - balloon_pages : PAGES_PER_MIB;
		if (balloon_send(d, BALLOON_INFLATEQ, first_pfn + balloon_pages, count) < 0)
			return fail("balloon", "inflateq: no answer from the device");
		balloon_pages += count;
	} else {
		count = balloon_pages - target < PAGES_PER_MIB ? balloon_pages - target : PAGES_PER_MIB;
		balloon_pages -= count;
		if (balloon_send(d, BALLOON_DEFLATEQ, first_pfn + balloon_pages, count) < 0)
			return fail("balloon", "deflateq: no answer from the device");
	}
	config_write32(d, BALLOON_CONFIG_ACTUAL, balloon_pages);
	return 0;
}

/* "balloon: inflated to 16384 pages (64 MiB)" */
static void balloon_show(const char *how, const struct vdev *d, uint32_t capacity)
{
	puts("balloon: ");
	puts(how);
	puts(" to ");
	putdec(balloon_pages);
	puts(" pages (");
	putdec(balloon_pages / PAGES_PER_MIB);
	puts(" MiB)");
	if (config_read32(d, BALLOON_CONFIG_NUM_PAGES) > capacity)
		puts(": the host asked for more than this kernel can give");
	putc('\n');
}

/* Follow the host's target until the run is ended from outside; returns on a failure only. */
static void follow_run(struct vdev *d)
{
	uint32_t capacity, target, shown;

	if ((uint32_t)_end > BALLOON_BASE || ram_top <= BALLOON_BASE) {
		fail("follow", "no free RAM from 16 MiB up");
		return;
	}
	capacity = (ram_top - BALLOON_BASE) >> BALLOON_PFN_SHIFT;
	puts("balloon: following the host's target, from ");
	putdec(balloon_pages);
	puts(" pages (at most ");
	putdec(capacity);
	puts(")\n");
	for (shown = balloon_pages;;) {
		while ((target = balloon_target(d, capacity)) != balloon_pages)
			if (balloon_step(d, target) < 0)
				return;
		if (balloon_pages != shown)
			balloon_show(balloon_pages > shown ? "inflated" : "deflated", d, capacity);
		shown = balloon_pages;
		if (wait_config_change(d) < 0) {
			fail("balloon", "the device needs a reset");
			return;
		}
	}
}

/* --- the same data through the emulated UART ------------------------------- */

/*
 * N KiB of 'x' on COM1, one `outb` (one VM exit) per byte: what full
 * virtualization costs. No LSR polling: pyvmm's UART sends at once.
 */
static void serial_run(uint32_t kib)
{
	for (uint32_t i = 0; i < kib * 1024; i++)
		outb(COM1, 'x');
	puts("\nserial: sent ");
	putdec(kib);
	puts(" KiB\n");
}

/* --- interrupts instead of polling (`irq`) ----------------------------------- */

/*
 * The 8259 PICs, programmed as a BIOS leaves them (vectors 0x20-0x2f). pyvmm
 * wires window i's transport to ISA IRQ virtio_irqs[i], as it says on a
 * Linux kernel's command line (virtio_mmio.device=512@0xfeb00000:5) and in
 * the DSDT; another VMM's numbers come from there too.
 */
static const uint8_t virtio_irqs[] = {5, 6, 7, 10};
#define PIC_VECTORS 0x20
static uint64_t idt[PIC_VECTORS + 16] __attribute__((aligned(8)));
static volatile uint32_t interrupts_seen;

/* §4.2.3.4 (the driver's side of §4.2.2 InterruptStatus): read, acknowledge, then EOI. */
void virtio_interrupt(uint32_t window)
{
	struct vdev *d = &devices[window];
	uint32_t status = mmio_read(d, REG_INTERRUPT_STATUS);

	mmio_write(d, REG_INTERRUPT_ACK, status);
	d->interrupt_status |= status;
	interrupts_seen++;
	if (virtio_irqs[window] >= 8)
		outb(0xa0, 0x20); /* non-specific EOI to the slave, then to the master */
	outb(0x20, 0x20);
}

/*
 * Each window's vector pushes its number and goes to irq_common, which saves
 * the registers and calls virtio_interrupt. It returns with `popf; ret $8`
 * instead of `iret`: some hosts' KVM cannot emulate a kernel-mode iret, and
 * for a same-privilege frame (EIP, CS, EFLAGS) the two do the same.
 */
#define IRQ_STUB(n) "irq_stub_" #n ":\n\tpush $" #n "\n\tjmp irq_common\n"
__asm__(".text\n" IRQ_STUB(0) IRQ_STUB(1) IRQ_STUB(2) IRQ_STUB(3)
	"irq_common:\n"
	"\tpusha\n"
	"\tcld\n"
	"\tpush 32(%esp)\n" /* the window's number, above the 8 saved registers */
	"\tcall virtio_interrupt\n"
	"\tadd $4, %esp\n"
	"\tpopa\n"
	"\tadd $4, %esp\n" /* the window's number */
	"\tpush 8(%esp)\n"  /* EFLAGS */
	"\tpopf\n"
	"\tret $8\n");	     /* EIP; CS and EFLAGS dropped */
extern char irq_stub_0[], irq_stub_1[], irq_stub_2[], irq_stub_3[];

static void irq_init(void)
{
	const char *const stubs[] = {irq_stub_0, irq_stub_1, irq_stub_2, irq_stub_3};
	struct {
		uint16_t limit;
		uint32_t base;
	} __attribute__((packed)) idtr = {sizeof(idt) - 1, (uint32_t)idt};
	uint16_t cs, mask = (uint16_t)~(1u << 2); /* IRQ 2: the slave's cascade */

	__asm__ volatile("mov %%cs, %0" : "=r"(cs));
	for (int i = 0; i < 4; i++) {
		uint32_t handler = (uint32_t)stubs[i];

		/* a 32-bit interrupt gate, present, DPL 0 (Intel SDM Vol. 3A §6.11) */
		idt[PIC_VECTORS + virtio_irqs[i]] = (handler & 0xffff) | (uint64_t)cs << 16 |
						     (uint64_t)0x8e00 << 32 |
						     (uint64_t)(handler >> 16) << 48;
		mask &= (uint16_t)~(1u << virtio_irqs[i]);
	}
	__asm__ volatile("lidt %0" : : "m"(idtr));
	outb(0x20, 0x11); /* ICW1: edge-triggered, cascaded, ICW4 follows */
	outb(0xa0, 0x11);
	outb(0x21, PIC_VECTORS); /* ICW2: vector bases */
	outb(0xa1, PIC_VECTORS + 8);
	outb(0x21, 1 << 2); /* ICW3: the slave on IRQ 2 */
	outb(0xa1, 2);
	outb(0x21, 1); /* ICW4: 8086 mode */
	outb(0xa1, 1);
	outb(0x21, mask & 0xff); /* OCW1: only the virtio IRQs (and the cascade) */
	outb(0xa1, mask >> 8);
	use_irq = 1;
}

/* --- the command line ------------------------------------------------------ */

static struct {
	int console, console_bulk, blk, rng, balloon, touch, serial, follow, blkread, irq;
	uint32_t console_kib, balloon_mib, touch_mib, serial_kib, blkread_mib;
} want;

/* Whether the word s[0..len) is `name`, alone or followed by '=': then *value is past the '='. */
static int word_is(const char *s, size_t len, const char *name, const char **value)
{
	size_t i = 0;

	for (; name[i]; i++)
		if (i >= len || s[i] != name[i])
			return 0;
	*value = i < len && s[i] == '=' ? s + i + 1 : 0;
	return i == len || s[i] == '=';
}

/* The decimal number in [s, end): -1 if there is none or it does not fit. */
static int64_t number(const char *s, const char *end)
{
	int64_t n = 0;

	if (!s || s == end)
		return -1;
	for (; s < end; s++) {
		if (*s < '0' || *s > '9' || n >= 10000000) /* at most 8 digits */
			return -1;
		n = n * 10 + (*s - '0');
	}
	return n;
}

static void bad_argument(const char *s, size_t len, const char *why)
{
	puts("virtio: argument '");
	while (len--)
		putc(*s++);
	puts("': ");
	puts(why);
	putc('\n');
	failures++;
}

/* "<kernel path> word word ...": the first word is the kernel's, the others ours. */
static void parse_cmdline(const char *s)
{
	int first = 1;

	while (*s) {
		const char *word, *value;
		size_t len;
		int64_t n;

		while (*s == ' ')
			s++;
		for (word = s; *s && *s != ' '; s++)
			;
		len = (size_t)(s - word);
		if (len == 0 || first) {
			first = 0;
			continue;
		}
		if (word_is(word, len, "console", &value)) {
			want.console = 1;
			if (value) {
				n = number(value, s);
				if (n <= 0)
					bad_argument(word, len, "console=N wants N KiB, 1 to 99999999");
				want.console_bulk = n > 0;
				want.console_kib = (uint32_t)n;
			}
		} else if (word_is(word, len, "serial", &value)) {
			n = number(value, s);
			if (n <= 0)
				bad_argument(word, len, "serial=N wants N KiB, 1 to 99999999");
			want.serial = n > 0;
			want.serial_kib = (uint32_t)n;
		} else if (word_is(word, len, "blk", &value) && !value) {
			want.blk = 1;
		} else if (word_is(word, len, "rng", &value) && !value) {
			want.rng = 1;
		} else if (word_is(word, len, "follow", &value) && !value) {
			want.follow = 1;
		} else if (word_is(word, len, "irq", &value) && !value) {
			want.irq = 1;
		} else if (word_is(word, len, "blkread", &value)) {
			n = number(value, s);
			if (n <= 0)
				bad_argument(word, len, "blkread=N wants N MiB, 1 to 99999999");
			want.blkread = n > 0;
			want.blkread_mib = (uint32_t)n;
		} else if (word_is(word, len, "touch", &value)) {
			n = number(value, s);
			if (n <= 0)
				bad_argument(word, len, "touch=N wants N MiB, 1 to 99999999");
			want.touch = n > 0;
			want.touch_mib = (uint32_t)n;
		} else if (word_is(word, len, "balloon", &value)) {
			n = number(value, s);
			if (n <= 0)
				bad_argument(word, len, "balloon=N wants N MiB, 1 to 99999999");
			want.balloon = n > 0;
			want.balloon_mib = (uint32_t)n;
		} else {
			bad_argument(word, len, "not an argument of this driver (see virtio.c's top)");
		}
	}
}

/* --- probing, and the run ------------------------------------------------ */

/* §4.2.3.1.1: a window is a device if the magic matches, Version is 2 and the ID is not 0. */
static void probe(void)
{
	for (uint32_t i = 0; i < VIRTIO_MMIO_WINDOWS; i++) {
		struct vdev *d = &devices[i];

		d->base = VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_STRIDE;
		if (mmio_read(d, REG_MAGIC) != VIRTIO_MMIO_MAGIC)
			continue; /* nothing here: pyvmm and QEMU read all ones */
		d->id = mmio_read(d, REG_DEVICE_ID);
		if (d->id == 0)
			continue; /* a transport with no device behind it */
		puts("virtio: found ");
		puts(device_name(d->id) ? device_name(d->id) : "device");
		puts(" at 0x");
		puthex(d->base, 8);
		if (!device_name(d->id)) {
			puts(", ID ");
			putdec(d->id);
			puts(": no driver here\n");
			continue;
		}
		putc('\n');
		if (mmio_read(d, REG_VERSION) != 2) { /* 1 is the legacy layout (§4.2.4) */
			fail(device_name(d->id), "not a version 2 (non-legacy) virtio-mmio device");
			continue;
		}
		switch (d->id) {
		case ID_CONSOLE:
			console_init(d);
			break;
		case ID_BLOCK:
			blk_init(d);
			break;
		case ID_ENTROPY:
			rng_init(d);
			break;
		case ID_BALLOON:
			balloon_init(d);
			break;
		}
	}
}

/* The first initialized device with `id`, or 0 after saying why there is none. */
static struct vdev *device(uint32_t id, const char *who)
{
	for (int i = 0; i < VIRTIO_MMIO_WINDOWS; i++)
		if (devices[i].id == id && devices[i].ready)
			return &devices[i];
	fail(who, "no working device");
	return 0;
}

static __attribute__((noreturn)) void finish(void)
{
	uint8_t code = failures ? EXIT_FAILED : EXIT_OK;

	puts("virtio: debug-exit 0x");
	puthex(code, 2);
	putc('\n');
	outb(DEBUG_EXIT_PORT, code); /* ends the run under pyvmm or QEMU's isa-debug-exit */
	for (;;)
		__asm__ volatile("cli; hlt");
}

void kmain(uint32_t magic, const struct multiboot_info *info)
{
	struct vdev *d;

	if (magic != MULTIBOOT_MAGIC) {
		puts("virtio: not started by a multiboot loader\n");
		failures++;
		finish();
	}
	if (info->flags & MB_INFO_MEMORY)
		ram_top = (1u << 20) + info->mem_upper * 1024;
	if (info->flags & MB_INFO_CMDLINE)
		parse_cmdline((const char *)info->cmdline);

	if (want.irq)
		irq_init(); /* before the queues are set up: they then ask for interrupts */
	probe();

	if (want.serial)
		serial_run(want.serial_kib);
	if (want.console && (d = device(ID_CONSOLE, "console")))
		console_run(d, want.console_bulk, want.console_kib);
	if (want.blk && (d = device(ID_BLOCK, "blk")))
		blk_run(d);
	if (want.blkread && (d = device(ID_BLOCK, "blkread")))
		blkread_run(d, want.blkread_mib);
	if (want.rng && (d = device(ID_ENTROPY, "rng")))
		rng_run(d);
	if (want.touch)
		touch_run(want.touch_mib);
	if (want.balloon && (d = device(ID_BALLOON, "balloon")))
		balloon_run(d, want.balloon_mib);
	if (want.follow && (d = device(ID_BALLOON, "follow")))
		follow_run(d); /* returns on a failure only */
	if (use_irq) {
		puts("irq: ");
		putcount(interrupts_seen, "interrupt");
		putc('\n');
	}
	finish();
}
