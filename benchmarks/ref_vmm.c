/*
 * ref_vmm.c - the smallest VMM that can run pyvmm's benchmark guests: the
 * yardstick that says what pyvmm's Python exit loop and set-up cost.
 *
 * It reinvents no entry state. pyvmm builds a machine as usual, then writes
 * a state file (see benchmarks/suite_exits.py, `write_state_file`) holding
 * the raw `struct kvm_sregs`, `struct kvm_regs` and `struct kvm_fpu` pyvmm
 * loaded into its vCPU, whether the machine has KVM's in-kernel irqchip, and
 * the non-zero pages of low guest memory (GDT, page tables, TSS, parameter
 * block, firmware tables, image). This program does, per cycle, what pyvmm's
 * build_machine + run + close do:
 *
 *   open /dev/kvm, KVM_CREATE_VM, KVM_SET_TSS_ADDR, KVM_SET_IDENTITY_MAP_ADDR,
 *   mmap guest RAM (MAP_NORESERVE), KVM_SET_USER_MEMORY_REGION, copy the
 *   pages in; with the split irqchip (pyvmm's default machine): KVM_ENABLE_CAP
 *   (KVM_CAP_SPLIT_IRQCHIP), the LAPICs alone; with KVM's whole irqchip (pyvmm's
 *   --kernel-irqchip on): KVM_CREATE_IRQCHIP,
 *   KVM_CREATE_PIT2 when pyvmm's machine has KVM's PIT (--pit kernel; its
 *   default PIT is its own, in Python, not created until used) and, for a real-mode entry, both PICs loaded as a BIOS
 *   leaves them (KVM_GET/SET_IRQCHIP, pyvmm/arch/x86_64/pic.py); then per
 *   vCPU KVM_CREATE_VCPU, mmap kvm_run, KVM_SET_CPUID2 (what
 *   KVM_GET_SUPPORTED_CPUID offers, with the vCPU's APIC ID); vCPU 0 gets
 *   KVM_SET_SREGS, KVM_SET_REGS, KVM_SET_FPU, the others wait for INIT/SIPI
 *   in KVM as pyvmm's do; then the KVM_RUN loop until the guest writes to
 *   the debug-exit port 0xf4 or halts, then unmap and close everything.
 *
 * With --cpus N > 1 (needs the irqchip) each vCPU runs in a thread of its
 * own; a vCPU's loop also ends when it writes to port 0x701 ("done", see
 * benchmarks/smp_exit_guest.s), and the run ends when every thread has.
 *
 * The exit loop is a trivial switch: count the exit, send COM1 data bytes to
 * stdout, answer port reads with zeros, ignore everything else. It takes no
 * lock: it touches nothing another vCPU's thread touches but stdout.
 *
 *   ref_vmm --state FILE [--ram-size BYTES] [--cycles N] [--cpus N] [--kvm PATH]
 *
 * On success it prints one line to stderr and exits 0:
 *   ref_vmm: cycles=N cpus=N exits=N io_out=N io_in=N mmio_write=N mmio_read=N
 *            debug_exit=V debug_exits=N done=N run_ns=N total_ns=N   (one line)
 * debug_exit is the value last written to port 0xf4, debug_exits and done
 * count the writes to 0xf4 and 0x701;
 * exits counts every KVM_RUN that returned an exit (as pyvmm's exit_count),
 * summed over the cycles and vCPUs; run_ns is the time spent running the
 * vCPUs (from before the first KVM_RUN, threads started, to the end of the
 * last loop) and total_ns the time of the whole cycles (CLOCK_MONOTONIC).
 * Exit status 1 on any failure, with a message on stderr; 2 for bad usage.
 *
 * Build: cc -O2 -pthread -o ref_vmm ref_vmm.c (needs <linux/kvm.h>).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* The same guest-physical addresses pyvmm uses (pyvmm/arch/x86_64/layout.py). */
#define KVM_TSS_GPA 0xfffbd000ULL
#define KVM_IDENTITY_MAP_GPA 0xfffbc000ULL
#define MMIO_GAP_START 0xd0000000ULL
#define COM1_DATA_PORT 0x3f8
#define DEBUG_EXIT_PORT 0xf4
#define DONE_PORT 0x701
#define CPUID_MAX_ENTRIES 256
#define MAX_CPUS 255
/* The state file's flags word. */
#define STATE_IRQCHIP 1u
#define STATE_KERNEL_PIT 2u
#define STATE_SPLIT_IRQCHIP 4u /* with STATE_IRQCHIP: only the LAPICs are KVM's */
/* SeaBIOS's PIC set-up (pyvmm/arch/x86_64/pic.py): vector bases, every IRQ
 * masked but the master's cascade (IRQ 2). */
#define PIC_MASTER_VECTOR_BASE 0x08
#define PIC_SLAVE_VECTOR_BASE 0x70
#define PIC_MASTER_IMR 0xfb
#define PIC_SLAVE_IMR 0xff

static const char STATE_MAGIC[8] = {'P', 'Y', 'V', 'M', 'M', 'R', 'E', 'F'};

/* A page range of guest memory from the state file. */
struct chunk {
	uint64_t gpa;
	uint64_t size;
	const unsigned char *data;
};

struct state {
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	struct kvm_fpu fpu;
	uint32_t flags; /* STATE_IRQCHIP, STATE_KERNEL_PIT, STATE_SPLIT_IRQCHIP */
	struct chunk *chunks;
	size_t nchunks;
	unsigned char *file; /* the whole file: chunk data points into it */
};

struct counters {
	uint64_t exits;
	uint64_t io_out;
	uint64_t io_in;
	uint64_t mmio_write;
	uint64_t mmio_read;
	uint64_t debug_exit; /* the value last written to port 0xf4 */
	uint64_t debug_exits; /* writes to port 0xf4 */
	uint64_t done; /* writes to port 0x701 */
	uint64_t run_ns;
};

__attribute__((noreturn, format(printf, 1, 2)))
static void die(const char *format, ...)
{
	va_list args;

	fflush(stdout);
	fputs("ref_vmm: ", stderr);
	va_start(args, format);
	vfprintf(stderr, format, args);
	va_end(args);
	fputc('\n', stderr);
	exit(1);
}

__attribute__((noreturn))
static void die_errno(const char *what)
{
	die("%s failed: %s", what, strerror(errno));
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int xioctl(int fd, unsigned long request, void *arg, const char *name)
{
	int ret = ioctl(fd, request, arg);

	if (ret < 0)
		die_errno(name);
	return ret;
}

static unsigned char *read_file(const char *path, size_t *size)
{
	FILE *file = fopen(path, "rb");
	unsigned char *data = NULL;
	size_t used = 0, capacity = 0, got;

	if (!file)
		die("cannot open %s: %s", path, strerror(errno));
	do {
		if (used == capacity) {
			capacity = capacity ? 2 * capacity : 1 << 16;
			data = realloc(data, capacity);
			if (!data)
				die("out of memory reading %s", path);
		}
		got = fread(data + used, 1, capacity - used, file);
		used += got;
	} while (got > 0);
	if (ferror(file))
		die("cannot read %s", path);
	fclose(file);
	*size = used;
	return data;
}

static uint32_t get_u32(const unsigned char *p)
{
	uint32_t value;

	memcpy(&value, p, sizeof(value));
	return value;
}

static uint64_t get_u64(const unsigned char *p)
{
	uint64_t value;

	memcpy(&value, p, sizeof(value));
	return value;
}

/*
 * State file, little-endian:
 *   "PYVMMREF", u32 sizeof(kvm_sregs), u32 sizeof(kvm_regs), u32 sizeof(kvm_fpu),
 *   u32 flags (bit 0: the in-kernel irqchip; bit 1: KVM's PIT too; bit 2: the irqchip is
 *   split, KVM_CAP_SPLIT_IRQCHIP: the LAPICs alone), the three structs' raw
 *   bytes, then chunks to EOF: u64 gpa, u64 size, data.
 * The sizes must match this compiler's view of <linux/kvm.h>.
 */
static void load_state(const char *path, struct state *state)
{
	size_t size, offset = 24;
	unsigned char *file = read_file(path, &size);

	if (size < offset || memcmp(file, STATE_MAGIC, sizeof(STATE_MAGIC)) != 0)
		die("%s is not a ref_vmm state file", path);
	if (get_u32(file + 8) != sizeof(state->sregs) || get_u32(file + 12) != sizeof(state->regs) ||
	    get_u32(file + 16) != sizeof(state->fpu))
		die("%s: struct sizes %u/%u/%u differ from this <linux/kvm.h> (%zu/%zu/%zu)", path,
		    get_u32(file + 8), get_u32(file + 12), get_u32(file + 16), sizeof(state->sregs),
		    sizeof(state->regs), sizeof(state->fpu));
	if (size < offset + sizeof(state->sregs) + sizeof(state->regs) + sizeof(state->fpu))
		die("%s is truncated", path);
	state->flags = get_u32(file + 20);
	if (state->flags & ~(STATE_IRQCHIP | STATE_KERNEL_PIT | STATE_SPLIT_IRQCHIP))
		die("%s: unknown flags 0x%x", path, state->flags);
	memcpy(&state->sregs, file + offset, sizeof(state->sregs));
	offset += sizeof(state->sregs);
	memcpy(&state->regs, file + offset, sizeof(state->regs));
	offset += sizeof(state->regs);
	memcpy(&state->fpu, file + offset, sizeof(state->fpu));
	offset += sizeof(state->fpu);

	state->chunks = NULL;
	state->nchunks = 0;
	while (offset < size) {
		struct chunk chunk;

		if (size - offset < 16)
			die("%s: truncated chunk header at byte %zu", path, offset);
		chunk.gpa = get_u64(file + offset);
		chunk.size = get_u64(file + offset + 8);
		offset += 16;
		if (chunk.size > size - offset)
			die("%s: chunk at 0x%llx runs past the end", path, (unsigned long long)chunk.gpa);
		chunk.data = file + offset;
		offset += chunk.size;
		state->chunks = realloc(state->chunks, (state->nchunks + 1) * sizeof(chunk));
		if (!state->chunks)
			die("out of memory");
		state->chunks[state->nchunks++] = chunk;
	}
	state->file = file;
}

/* What KVM offers, with `apic_id` as the CPU's initial (x2)APIC ID, as pyvmm's setup_cpuid.
   KVM_GET_SUPPORTED_CPUID runs once per process, as in pyvmm and QEMU (cpuid_cache). */
static struct kvm_cpuid2 *supported_cpuid(int kvm, unsigned apic_id)
{
	static struct kvm_cpuid2 *supported;
	size_t size = sizeof(struct kvm_cpuid2) + CPUID_MAX_ENTRIES * sizeof(struct kvm_cpuid_entry2);
	struct kvm_cpuid2 *cpuid = malloc(size);
	uint32_t i;

	if (!cpuid)
		die("out of memory");
	if (!supported) {
		supported = calloc(1, size);
		if (!supported)
			die("out of memory");
		supported->nent = CPUID_MAX_ENTRIES;
		xioctl(kvm, KVM_GET_SUPPORTED_CPUID, supported, "KVM_GET_SUPPORTED_CPUID");
	}
	memcpy(cpuid, supported, size);
	for (i = 0; i < cpuid->nent; i++) {
		struct kvm_cpuid_entry2 *entry = &cpuid->entries[i];

		if (entry->function == 1)
			entry->ebx = (entry->ebx & 0x00ffffffu) | (apic_id << 24);
		else if (entry->function == 0xb || entry->function == 0x1f)
			entry->edx = apic_id;
	}
	return cpuid;
}

/* Both in-kernel PICs as SeaBIOS's pic_setup leaves them (ICW1-4, OCW1). */
static void set_bios_pic_state(int vm)
{
	static const struct {
		uint32_t chip_id;
		uint8_t vector_base, imr;
	} pics[] = {
		{KVM_IRQCHIP_PIC_MASTER, PIC_MASTER_VECTOR_BASE, PIC_MASTER_IMR},
		{KVM_IRQCHIP_PIC_SLAVE, PIC_SLAVE_VECTOR_BASE, PIC_SLAVE_IMR},
	};
	size_t i;

	for (i = 0; i < sizeof(pics) / sizeof(pics[0]); i++) {
		struct kvm_irqchip chip = {.chip_id = pics[i].chip_id};
		struct kvm_pic_state *pic = &chip.chip.pic;

		xioctl(vm, KVM_GET_IRQCHIP, &chip, "KVM_GET_IRQCHIP");
		pic->irq_base = pics[i].vector_base & 0xf8;
		pic->imr = pics[i].imr;
		pic->irr = pic->isr = pic->last_irr = 0;
		pic->priority_add = 0;
		pic->read_reg_select = 0;
		pic->poll = 0;
		pic->special_mask = 0;
		pic->init_state = 0;
		pic->init4 = 1;
		pic->auto_eoi = 0;
		pic->rotate_on_auto_eoi = 0;
		pic->special_fully_nested_mode = 0;
		xioctl(vm, KVM_SET_IRQCHIP, &chip, "KVM_SET_IRQCHIP");
	}
}

/* The KVM_RUN loop: returns when the guest writes to port 0xf4 or 0x701, or halts. */
static void run_loop(int vcpu, struct kvm_run *run, struct counters *counters)
{
	for (;;) {
		if (ioctl(vcpu, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			die_errno("KVM_RUN");
		}
		counters->exits++;
		switch (run->exit_reason) {
		case KVM_EXIT_IO: {
			unsigned char *data = (unsigned char *)run + run->io.data_offset;

			if (run->io.direction == KVM_EXIT_IO_OUT) {
				counters->io_out++;
				if (run->io.port == DEBUG_EXIT_PORT) {
					counters->debug_exit = data[0];
					counters->debug_exits++;
					return;
				}
				if (run->io.port == DONE_PORT) {
					counters->done++;
					return;
				}
				if (run->io.port == COM1_DATA_PORT)
					fwrite(data, run->io.size, run->io.count, stdout);
			} else {
				counters->io_in++;
				memset(data, 0, (size_t)run->io.size * run->io.count);
			}
			break;
		}
		case KVM_EXIT_MMIO:
			if (run->mmio.is_write)
				counters->mmio_write++;
			else {
				counters->mmio_read++;
				memset(run->mmio.data, 0, sizeof(run->mmio.data));
			}
			break;
		case KVM_EXIT_HLT:
			return;
		case KVM_EXIT_SHUTDOWN:
			die("guest triple-faulted (KVM_EXIT_SHUTDOWN)");
		case KVM_EXIT_INTERNAL_ERROR:
			die("KVM internal error, suberror %u", run->internal.suberror);
		case KVM_EXIT_FAIL_ENTRY:
			die("KVM could not enter the guest: reason 0x%llx",
			    (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		default:
			die("unhandled exit reason %u", run->exit_reason);
		}
	}
}

/* One vCPU and what its thread needs. */
struct vcpu {
	int fd;
	struct kvm_run *run;
	struct counters counters;
	pthread_t thread;
};

static void *vcpu_thread(void *arg)
{
	struct vcpu *vcpu = arg;

	run_loop(vcpu->fd, vcpu->run, &vcpu->counters);
	return NULL;
}

/* Run every vCPU to the end of its loop: vCPU 0 alone in this thread, or one thread each. */
static void run_vcpus(struct vcpu *vcpus, unsigned cpus)
{
	unsigned i;
	int error;

	if (cpus == 1) {
		run_loop(vcpus[0].fd, vcpus[0].run, &vcpus[0].counters);
		return;
	}
	for (i = 0; i < cpus; i++) {
		error = pthread_create(&vcpus[i].thread, NULL, vcpu_thread, &vcpus[i]);
		if (error)
			die("pthread_create failed: %s", strerror(error));
	}
	for (i = 0; i < cpus; i++)
		pthread_join(vcpus[i].thread, NULL);
}

/* One VM, created, run once and destroyed: pyvmm's build_machine + run + close. */
static void cycle(const char *kvm_path, const struct state *state, uint64_t ram_size,
		  unsigned cpus, struct counters *counters)
{
	int kvm, vm, mmap_size;
	unsigned char *ram;
	struct vcpu vcpus[MAX_CPUS];
	struct kvm_cpuid2 *cpuid;
	struct kvm_userspace_memory_region region;
	uint64_t identity_map = KVM_IDENTITY_MAP_GPA, started;
	unsigned cpu;
	size_t i;

	kvm = open(kvm_path, O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		die("cannot open %s: %s", kvm_path, strerror(errno));
	if (ioctl(kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION)
		die("%s: unexpected KVM API version", kvm_path);
	mmap_size = xioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE");
	vm = xioctl(kvm, KVM_CREATE_VM, 0, "KVM_CREATE_VM");
	xioctl(vm, KVM_SET_TSS_ADDR, (void *)(uintptr_t)KVM_TSS_GPA, "KVM_SET_TSS_ADDR");
	xioctl(vm, KVM_SET_IDENTITY_MAP_ADDR, &identity_map, "KVM_SET_IDENTITY_MAP_ADDR");

	ram = mmap(NULL, ram_size, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (ram == MAP_FAILED)
		die_errno("mmap of guest RAM");
	region = (struct kvm_userspace_memory_region){
		.slot = 0,
		.guest_phys_addr = 0,
		.memory_size = ram_size,
		.userspace_addr = (uintptr_t)ram,
	};
	xioctl(vm, KVM_SET_USER_MEMORY_REGION, &region, "KVM_SET_USER_MEMORY_REGION");
	for (i = 0; i < state->nchunks; i++) {
		const struct chunk *chunk = &state->chunks[i];

		if (chunk->gpa > ram_size || chunk->size > ram_size - chunk->gpa)
			die("state chunk at 0x%llx does not fit in guest RAM",
			    (unsigned long long)chunk->gpa);
		memcpy(ram + chunk->gpa, chunk->data, chunk->size);
	}

	if (state->flags & STATE_SPLIT_IRQCHIP) {
		/* pyvmm's default: KVM's LAPICs, the PIC and IOAPIC in the VMM (no guest
		   here programs them: the exit guests take no interrupt). */
		struct kvm_enable_cap cap = {.cap = KVM_CAP_SPLIT_IRQCHIP, .args = {24}};

		xioctl(vm, KVM_ENABLE_CAP, &cap, "KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)");
	} else if (state->flags & STATE_IRQCHIP) {
		struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};

		xioctl(vm, KVM_CREATE_IRQCHIP, 0, "KVM_CREATE_IRQCHIP");
		if (state->flags & STATE_KERNEL_PIT)
			xioctl(vm, KVM_CREATE_PIT2, &pit, "KVM_CREATE_PIT2");
		if (!(state->sregs.cr0 & 1)) /* real mode: what a BIOS leaves */
			set_bios_pic_state(vm);
	}

	for (cpu = 0; cpu < cpus; cpu++) {
		struct vcpu *vcpu = &vcpus[cpu];

		memset(vcpu, 0, sizeof(*vcpu));
		vcpu->fd = xioctl(vm, KVM_CREATE_VCPU, (void *)(uintptr_t)cpu, "KVM_CREATE_VCPU");
		vcpu->run = mmap(NULL, mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu->fd, 0);
		if (vcpu->run == MAP_FAILED)
			die_errno("mmap of kvm_run");
		cpuid = supported_cpuid(kvm, cpu);
		xioctl(vcpu->fd, KVM_SET_CPUID2, cpuid, "KVM_SET_CPUID2");
		free(cpuid);
	}
	/* Only the boot CPU starts at the entry point; the others wait for INIT/SIPI. */
	xioctl(vcpus[0].fd, KVM_SET_SREGS, (void *)&state->sregs, "KVM_SET_SREGS");
	xioctl(vcpus[0].fd, KVM_SET_REGS, (void *)&state->regs, "KVM_SET_REGS");
	xioctl(vcpus[0].fd, KVM_SET_FPU, (void *)&state->fpu, "KVM_SET_FPU");

	started = now_ns();
	run_vcpus(vcpus, cpus);
	counters->run_ns += now_ns() - started;

	for (cpu = 0; cpu < cpus; cpu++) {
		struct counters *each = &vcpus[cpu].counters;

		counters->exits += each->exits;
		counters->io_out += each->io_out;
		counters->io_in += each->io_in;
		counters->mmio_write += each->mmio_write;
		counters->mmio_read += each->mmio_read;
		counters->done += each->done;
		if (each->debug_exits) {
			counters->debug_exits += each->debug_exits;
			counters->debug_exit = each->debug_exit;
		}
		munmap(vcpus[cpu].run, mmap_size);
		close(vcpus[cpu].fd);
	}
	close(vm);
	munmap(ram, ram_size);
	close(kvm);
}

__attribute__((noreturn))
static void usage(void)
{
	fputs("usage: ref_vmm --state FILE [--ram-size BYTES] [--cycles N] [--cpus N] "
	      "[--kvm PATH]\n",
	      stderr);
	exit(2);
}

static uint64_t parse_number(const char *text)
{
	char *end;
	unsigned long long value;

	errno = 0;
	value = strtoull(text, &end, 0);
	if (errno || end == text || *end)
		usage();
	return value;
}

int main(int argc, char **argv)
{
	const char *state_path = NULL, *kvm_path = "/dev/kvm";
	uint64_t ram_size = 128ULL << 20, cycles = 1, cpus = 1, i, started, total_ns;
	struct counters counters = {0};
	struct state state;
	int arg;

	for (arg = 1; arg < argc; arg++) {
		if (arg + 1 >= argc)
			usage();
		if (!strcmp(argv[arg], "--state"))
			state_path = argv[++arg];
		else if (!strcmp(argv[arg], "--ram-size"))
			ram_size = parse_number(argv[++arg]);
		else if (!strcmp(argv[arg], "--cycles"))
			cycles = parse_number(argv[++arg]);
		else if (!strcmp(argv[arg], "--cpus"))
			cpus = parse_number(argv[++arg]);
		else if (!strcmp(argv[arg], "--kvm"))
			kvm_path = argv[++arg];
		else
			usage();
	}
	if (!state_path || cycles == 0 || cpus == 0)
		usage();
	if (cpus > MAX_CPUS)
		die("--cpus %llu: at most %d", (unsigned long long)cpus, MAX_CPUS);
	if (ram_size == 0 || ram_size > MMIO_GAP_START || ram_size % 4096)
		die("--ram-size must be a multiple of 4 KiB up to 0x%llx (one slot below the hole)",
		    MMIO_GAP_START);
	load_state(state_path, &state);
	if (cpus > 1 && !(state.flags & STATE_IRQCHIP))
		die("--cpus %llu needs the in-kernel irqchip: INIT/SIPI go through the LAPICs",
		    (unsigned long long)cpus);

	started = now_ns();
	for (i = 0; i < cycles; i++)
		cycle(kvm_path, &state, ram_size, (unsigned)cpus, &counters);
	total_ns = now_ns() - started;

	fflush(stdout);
	fprintf(stderr,
		"ref_vmm: cycles=%llu cpus=%llu exits=%llu io_out=%llu io_in=%llu mmio_write=%llu "
		"mmio_read=%llu debug_exit=%llu debug_exits=%llu done=%llu run_ns=%llu "
		"total_ns=%llu\n",
		(unsigned long long)cycles, (unsigned long long)cpus,
		(unsigned long long)counters.exits,
		(unsigned long long)counters.io_out, (unsigned long long)counters.io_in,
		(unsigned long long)counters.mmio_write, (unsigned long long)counters.mmio_read,
		(unsigned long long)counters.debug_exit, (unsigned long long)counters.debug_exits,
		(unsigned long long)counters.done, (unsigned long long)counters.run_ns,
		(unsigned long long)total_ns);
	free(state.chunks);
	free(state.file);
	return 0;
}
