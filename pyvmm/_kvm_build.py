"""cffi API-mode builder for pyvmm's KVM binding (compiled at install time).

Every ioctl number, constant and struct layout is taken from <linux/kvm.h> by
the C compiler: the cdef below says `#define KVM_RUN ...` and declares partial
structs ending in `...;`, so nothing here is copied from the header by hand.
Only the fields pyvmm reads or writes are declared.
"""

from __future__ import annotations

from cffi import FFI

# ioctl request numbers, capabilities and exit reasons used by pyvmm.
_CONSTANTS = """
#define KVM_API_VERSION ...
#define KVM_GET_API_VERSION ...
#define KVM_CHECK_EXTENSION ...
#define KVM_CREATE_VM ...
#define KVM_GET_VCPU_MMAP_SIZE ...
#define KVM_GET_SUPPORTED_CPUID ...
#define KVM_SET_USER_MEMORY_REGION ...
#define KVM_SET_TSS_ADDR ...
#define KVM_SET_IDENTITY_MAP_ADDR ...
#define KVM_CREATE_VCPU ...
#define KVM_RUN ...
#define KVM_GET_REGS ...
#define KVM_SET_REGS ...
#define KVM_GET_SREGS ...
#define KVM_SET_SREGS ...
#define KVM_SET_CPUID2 ...
#define KVM_TRANSLATE ...
#define KVM_GET_FPU ...
#define KVM_SET_GUEST_DEBUG ...
#define KVM_CREATE_IRQCHIP ...
#define KVM_ENABLE_CAP ...
#define KVM_CAP_SPLIT_IRQCHIP ...
#define KVM_SIGNAL_MSI ...
#define KVM_CAP_SIGNAL_MSI ...
#define KVM_INTERRUPT ...
#define KVM_IRQ_ROUTING_MSI ...
#define KVM_CREATE_PIT2 ...
#define KVM_IRQ_LINE ...
#define KVM_GET_IRQCHIP ...
#define KVM_SET_IRQCHIP ...
#define KVM_IRQCHIP_PIC_MASTER ...
#define KVM_IRQCHIP_PIC_SLAVE ...
#define KVM_IRQCHIP_IOAPIC ...
#define KVM_IRQFD ...
#define KVM_SET_GSI_ROUTING ...
#define KVM_IRQ_ROUTING_IRQCHIP ...
#define KVM_IRQCHIP_PIC_MASTER ...
#define KVM_IRQCHIP_PIC_SLAVE ...
#define KVM_IRQCHIP_IOAPIC ...
#define KVM_IRQFD_FLAG_DEASSIGN ...
#define KVM_IRQFD_FLAG_RESAMPLE ...
#define KVM_CAP_IRQFD ...
#define KVM_CAP_IRQFD_RESAMPLE ...
#define KVM_IOEVENTFD ...
#define KVM_IOEVENTFD_FLAG_DATAMATCH ...
#define KVM_IOEVENTFD_FLAG_PIO ...
#define KVM_IOEVENTFD_FLAG_DEASSIGN ...
#define KVM_CAP_IOEVENTFD ...
#define KVM_PIT_SPEAKER_DUMMY ...
#define KVM_CAP_IRQCHIP ...
#define KVM_CAP_PIT2 ...
#define KVM_GET_MP_STATE ...
#define KVM_MP_STATE_RUNNABLE ...
#define KVM_MP_STATE_UNINITIALIZED ...
#define KVM_MP_STATE_HALTED ...
#define KVM_MP_STATE_INIT_RECEIVED ...
#define KVM_MP_STATE_SIPI_RECEIVED ...
#define KVM_GUESTDBG_ENABLE ...
#define KVM_GUESTDBG_SINGLESTEP ...
#define KVM_GUESTDBG_USE_SW_BP ...
#define KVM_GUESTDBG_USE_HW_BP ...
#define KVM_CAP_SET_GUEST_DEBUG ...
#define KVM_SET_FPU ...
#define KVM_GET_VCPU_EVENTS ...
#define KVM_SET_VCPU_EVENTS ...
#define KVM_CAP_VCPU_EVENTS ...
#define KVM_GET_XSAVE ...
#define KVM_SET_XSAVE ...
#define KVM_GET_MSRS ...
#define KVM_GET_DIRTY_LOG ...
#define KVM_MEM_LOG_DIRTY_PAGES ...

/* pyvmm_run_fast's answers (defined in the C source below). */
#define PYVMM_FAST_OTHER ...
#define PYVMM_FAST_IO_OUT ...
#define PYVMM_FAST_IO_IN ...
#define PYVMM_FAST_MMIO_WRITE ...
#define PYVMM_FAST_MMIO_READ ...
#define PYVMM_FAST_BAD_VALUE ...

#define KVM_CAP_USER_MEMORY ...
#define KVM_CAP_SET_TSS_ADDR ...
#define KVM_CAP_EXT_CPUID ...
#define KVM_CAP_NR_MEMSLOTS ...
#define KVM_CAP_NR_VCPUS ...
#define KVM_CAP_MAX_VCPUS ...
#define KVM_CAP_IMMEDIATE_EXIT ...
#define KVM_CAP_INTERNAL_ERROR_DATA ...
#define KVM_CAP_SET_IDENTITY_MAP_ADDR ...

#define KVM_EXIT_UNKNOWN ...
#define KVM_EXIT_EXCEPTION ...
#define KVM_EXIT_IO ...
#define KVM_EXIT_HYPERCALL ...
#define KVM_EXIT_DEBUG ...
#define KVM_EXIT_HLT ...
#define KVM_EXIT_MMIO ...
#define KVM_EXIT_IRQ_WINDOW_OPEN ...
#define KVM_EXIT_SHUTDOWN ...
#define KVM_EXIT_FAIL_ENTRY ...
#define KVM_EXIT_INTR ...
#define KVM_EXIT_SET_TPR ...
#define KVM_EXIT_TPR_ACCESS ...
#define KVM_EXIT_NMI ...
#define KVM_EXIT_INTERNAL_ERROR ...
#define KVM_EXIT_OSI ...
#define KVM_EXIT_WATCHDOG ...
#define KVM_EXIT_EPR ...
#define KVM_EXIT_SYSTEM_EVENT ...
#define KVM_EXIT_IOAPIC_EOI ...
#define KVM_EXIT_HYPERV ...
#define KVM_EXIT_X86_RDMSR ...
#define KVM_EXIT_X86_WRMSR ...
#define KVM_EXIT_DIRTY_RING_FULL ...
#define KVM_EXIT_AP_RESET_HOLD ...
#define KVM_EXIT_X86_BUS_LOCK ...
#define KVM_EXIT_XEN ...
#define KVM_EXIT_NOTIFY ...

#define KVM_EXIT_IO_IN ...
#define KVM_EXIT_IO_OUT ...

#define KVM_INTERNAL_ERROR_EMULATION ...
#define KVM_INTERNAL_ERROR_SIMUL_EX ...
#define KVM_INTERNAL_ERROR_DELIVERY_EV ...
#define KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON ...
#define KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES ...

#define KVM_SYSTEM_EVENT_SHUTDOWN ...
#define KVM_SYSTEM_EVENT_RESET ...
#define KVM_SYSTEM_EVENT_CRASH ...


#define PROT_READ ...
#define PROT_WRITE ...
#define MAP_SHARED ...
#define MAP_PRIVATE ...
#define MAP_ANONYMOUS ...
#define MAP_NORESERVE ...
#define MADV_DONTNEED ...
#define O_RDWR ...
#define O_CLOEXEC ...
"""

_STRUCTS = """
struct kvm_userspace_memory_region {
    uint32_t slot;
    uint32_t flags;
    uint64_t guest_phys_addr;
    uint64_t memory_size;
    uint64_t userspace_addr;
    ...;
};

/* The bitmap pointer sits in an anonymous union with a __u64 pad. */
struct kvm_dirty_log {
    uint32_t slot;
    void *dirty_bitmap;
    ...;
};

struct kvm_regs {
    uint64_t rax, rbx, rcx, rdx;
    uint64_t rsi, rdi, rsp, rbp;
    uint64_t r8, r9, r10, r11;
    uint64_t r12, r13, r14, r15;
    uint64_t rip, rflags;
    ...;
};

struct kvm_segment {
    uint64_t base;
    uint32_t limit;
    uint16_t selector;
    uint8_t type;
    uint8_t present, dpl, db, s, l, g, avl;
    uint8_t unusable;
    ...;
};

struct kvm_dtable {
    uint64_t base;
    uint16_t limit;
    ...;
};

struct kvm_sregs {
    struct kvm_segment cs, ds, es, fs, gs, ss;
    struct kvm_segment tr, ldt;
    struct kvm_dtable gdt, idt;
    uint64_t cr0, cr2, cr3, cr4, cr8;
    uint64_t efer;
    uint64_t apic_base;
    ...;
};

struct kvm_fpu {
    uint16_t fcw;
    uint16_t fsw;
    uint32_t mxcsr;
    ...;
};

/* KVM_GET_VCPU_EVENTS / KVM_SET_VCPU_EVENTS (KVM API doc 4.31, 4.32): the exception
   to deliver at the next entry, in a typedef of the anonymous member (C source below). */
typedef struct {
    uint8_t injected;
    uint8_t nr;
    uint8_t has_error_code;
    uint8_t pending;
    uint32_t error_code;
    ...;
} pyvmm_vcpu_events_exception;

struct kvm_vcpu_events {
    pyvmm_vcpu_events_exception exception;
    uint32_t flags;
    ...;
};

/* KVM_GET_XSAVE / KVM_SET_XSAVE (KVM API doc 4.42, 4.43): the XSAVE image, whose legacy
   region (Intel SDM vol. 1, 10.5.1) holds the x87 words, MXCSR and the XMM registers:
   KVM_GET_FPU and KVM_SET_FPU do not carry MXCSR. */
struct kvm_xsave {
    uint32_t region[1024];
    ...;
};

struct kvm_translation {
    uint64_t linear_address;
    uint64_t physical_address;
    uint8_t valid;
    uint8_t writeable;
    uint8_t usermode;
    ...;
};

struct kvm_pit_config {
    uint32_t flags;
    ...;
};

/* KVM_ENABLE_CAP (KVM API doc 4.37): turn on capability `cap` with `args`. */
struct kvm_enable_cap {
    uint32_t cap;
    uint32_t flags;
    uint64_t args[4];
    ...;
};

/* KVM_SIGNAL_MSI (KVM API doc 4.71): one MSI message to the in-kernel local APICs. */
struct kvm_msi {
    uint32_t address_lo;
    uint32_t address_hi;
    uint32_t data;
    uint32_t flags;
    ...;
};

/* KVM_INTERRUPT (KVM API doc 4.16): an external interrupt's vector (the PIC's INTA answer). */
struct kvm_interrupt {
    uint32_t irq;
    ...;
};

struct kvm_irq_level {
    uint32_t irq;  /* in an anonymous union with `status` */
    uint32_t level;
    ...;
};

/* KVM_GET_IRQCHIP / KVM_SET_IRQCHIP (KVM API doc 4.26, 4.27): one 8259A's state. */
struct kvm_pic_state {
    uint8_t last_irr;
    uint8_t irr;
    uint8_t imr;
    uint8_t isr;
    uint8_t priority_add;
    uint8_t irq_base;
    uint8_t read_reg_select;
    uint8_t poll;
    uint8_t special_mask;
    uint8_t init_state;
    uint8_t auto_eoi;
    uint8_t rotate_on_auto_eoi;
    uint8_t special_fully_nested_mode;
    uint8_t init4;
    uint8_t elcr;
    uint8_t elcr_mask;
    ...;
};

/* kvm_irqchip's anonymous `chip` union, named by a typedef in the C source below. */
typedef union {
    char dummy[512];
    struct kvm_pic_state pic;
    ...;
} pyvmm_irqchip_state;

struct kvm_irqchip {
    uint32_t chip_id;
    pyvmm_irqchip_state chip;
    ...;
};

/* KVM_SET_GSI_ROUTING (KVM API doc 4.52): which irqchip pins each GSI drives. */
struct kvm_irq_routing_irqchip {
    uint32_t irqchip;
    uint32_t pin;
};
/* kvm_irq_routing_entry's anonymous `u` union, named by a typedef in the C source below. */
struct kvm_irq_routing_msi {
    uint32_t address_lo;
    uint32_t address_hi;
    uint32_t data;
    ...;
};
typedef union {
    struct kvm_irq_routing_irqchip irqchip;
    struct kvm_irq_routing_msi msi;
    uint32_t pad[8];
    ...;
} pyvmm_irq_routing_target;
struct kvm_irq_routing_entry {
    uint32_t gsi;
    uint32_t type;
    uint32_t flags;
    pyvmm_irq_routing_target u;
    ...;
};
struct kvm_irq_routing {
    uint32_t nr;
    uint32_t flags;
    struct kvm_irq_routing_entry entries[];
    ...;
};

/* KVM_IRQFD (KVM API doc 4.75). */
struct kvm_irqfd {
    uint32_t fd;
    uint32_t gsi;
    uint32_t flags;
    uint32_t resamplefd;
    ...;
};

/* KVM_IOEVENTFD (KVM API doc 4.59). */
struct kvm_ioeventfd {
    uint64_t datamatch;
    uint64_t addr;
    uint32_t len;
    int32_t fd;
    uint32_t flags;
    ...;
};

struct kvm_mp_state {
    uint32_t mp_state;
    ...;
};

struct kvm_guest_debug_arch {
    uint64_t debugreg[8];
    ...;
};

struct kvm_guest_debug {
    uint32_t control;
    struct kvm_guest_debug_arch arch;
    ...;
};

struct kvm_cpuid_entry2 {
    uint32_t function;
    uint32_t index;
    uint32_t flags;
    uint32_t eax;
    uint32_t ebx;
    uint32_t ecx;
    uint32_t edx;
    ...;
};

/* KVM_GET_MSRS (KVM API doc 4.18): `nmsrs` entries, each an MSR index and its value. */
struct kvm_msr_entry {
    uint32_t index;
    uint64_t data;
    ...;
};

struct kvm_msrs {
    uint32_t nmsrs;
    struct kvm_msr_entry entries[];
    ...;
};

struct kvm_cpuid2 {
    uint32_t nent;
    struct kvm_cpuid_entry2 entries[];
    ...;
};

/* The members of kvm_run's anonymous exit union, each named through a
   typedef made with __typeof__ in the C source below, so that they can be
   partial too. */
typedef struct { uint64_t hardware_exit_reason; ...; } pyvmm_exit_hw;
typedef struct { uint64_t hardware_entry_failure_reason; uint32_t cpu; ...; } pyvmm_exit_fail_entry;
typedef struct { uint32_t exception; uint32_t error_code; ...; } pyvmm_exit_ex;
struct kvm_debug_exit_arch {
    uint32_t exception;
    uint64_t pc;
    uint64_t dr6;
    uint64_t dr7;
    ...;
};
typedef struct { struct kvm_debug_exit_arch arch; ...; } pyvmm_exit_debug;
typedef struct {
    uint8_t direction;
    uint8_t size;
    uint16_t port;
    uint32_t count;
    uint64_t data_offset;
    ...;
} pyvmm_exit_io;
typedef struct {
    uint64_t phys_addr;
    uint8_t data[8];
    uint32_t len;
    uint8_t is_write;
    ...;
} pyvmm_exit_mmio;
typedef struct {
    uint32_t suberror;
    uint32_t ndata;
    unsigned long long data[16];
    ...;
} pyvmm_exit_internal;
typedef struct {
    uint32_t suberror;
    uint32_t ndata;
    uint64_t flags;
    uint8_t insn_size;
    uint8_t insn_bytes[15];
    ...;
} pyvmm_exit_emulation_failure;
typedef struct {
    uint32_t type;
    uint32_t ndata;
    unsigned long long data[16];
    ...;
} pyvmm_exit_system_event;
typedef struct { uint8_t vector; ...; } pyvmm_exit_eoi;

struct kvm_run {
    uint8_t request_interrupt_window;
    uint8_t immediate_exit;
    uint32_t exit_reason;
    uint8_t ready_for_interrupt_injection;
    uint8_t if_flag;
    uint16_t flags;
    uint64_t cr8;
    uint64_t apic_base;
    pyvmm_exit_hw hw;
    pyvmm_exit_fail_entry fail_entry;
    pyvmm_exit_ex ex;
    pyvmm_exit_io io;
    pyvmm_exit_debug debug;
    pyvmm_exit_mmio mmio;
    pyvmm_exit_internal internal;
    pyvmm_exit_emulation_failure emulation_failure;
    pyvmm_exit_system_event system_event;
    pyvmm_exit_eoi eoi;
    ...;
};
"""

# Two non-variadic ioctl shims (pointer argument, integer argument), the
# KVM_RUN shim that returns -errno so the hot loop needs no ffi.errno read,
# the libc calls for opening /dev/kvm and mapping memory, and the halt
# watch's per-thread POSIX timer.
_FUNCTIONS = """
int pyvmm_ioctl_ptr(int fd, unsigned long request, void *arg);
int pyvmm_ioctl_int(int fd, unsigned long request, unsigned long arg);
int pyvmm_kvm_run(int fd);
int64_t pyvmm_run_fast(int fd, struct kvm_run *run, int complete, uint64_t value, uint64_t *out);
int pyvmm_complete_read(struct kvm_run *run, uint64_t value);
int64_t pyvmm_decode_fast(struct kvm_run *run, uint64_t *out);
int open(const char *path, int flags);
int close(int fd);
void *pyvmm_mmap(size_t length, int prot, int flags, int fd, int64_t offset);
int munmap(void *addr, size_t length);
int madvise(void *addr, size_t length, int advice);
int pyvmm_cmpxchg16b(uint64_t host_address, uint64_t *expected, uint64_t low, uint64_t high);
int pyvmm_kick_timer_create(int signo, void **timer);
int pyvmm_kick_timer_arm(void *timer, int64_t nanoseconds);
int pyvmm_kick_timer_delete(void *timer);
"""

_SOURCE = r"""
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/kvm.h>

/* glibc (2.36 and before, at least) spells the member only by its private name. */
#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid
#endif

#define PYVMM_EXIT_TYPE(member) __typeof__(((struct kvm_run *)0)->member)
typedef PYVMM_EXIT_TYPE(hw) pyvmm_exit_hw;
typedef PYVMM_EXIT_TYPE(fail_entry) pyvmm_exit_fail_entry;
typedef PYVMM_EXIT_TYPE(ex) pyvmm_exit_ex;
typedef PYVMM_EXIT_TYPE(io) pyvmm_exit_io;
typedef PYVMM_EXIT_TYPE(debug) pyvmm_exit_debug;
typedef PYVMM_EXIT_TYPE(mmio) pyvmm_exit_mmio;
typedef PYVMM_EXIT_TYPE(internal) pyvmm_exit_internal;
typedef PYVMM_EXIT_TYPE(emulation_failure) pyvmm_exit_emulation_failure;
typedef PYVMM_EXIT_TYPE(system_event) pyvmm_exit_system_event;
typedef PYVMM_EXIT_TYPE(eoi) pyvmm_exit_eoi;
typedef __typeof__(((struct kvm_irqchip *)0)->chip) pyvmm_irqchip_state;
typedef __typeof__(((struct kvm_irq_routing_entry *)0)->u) pyvmm_irq_routing_target;
typedef __typeof__(((struct kvm_vcpu_events *)0)->exception) pyvmm_vcpu_events_exception;

static int pyvmm_ioctl_ptr(int fd, unsigned long request, void *arg)
{
    return ioctl(fd, request, arg);
}

static int pyvmm_ioctl_int(int fd, unsigned long request, unsigned long arg)
{
    return ioctl(fd, request, arg);
}

static int pyvmm_kvm_run(int fd)
{
    int ret = ioctl(fd, KVM_RUN, 0);
    return ret < 0 ? -errno : ret;
}

/* The exit path without a Python object per exit (pyvmm.machine.vcpu_loop).

   pyvmm_run_fast first completes the previous exit's read, when `complete`
   says there is one, with `value` (the device's answer), then runs KVM_RUN
   and decodes the common exits into one integer (pyvmm_decode_fast, which
   the unit tests call without KVM):

     bits 0-2   what: PYVMM_FAST_IO_OUT, _IO_IN, _MMIO_WRITE, _MMIO_READ
     bits 3-6   the access size in bytes (1, 2, 4; MMIO 1-8)
     bits 8-23  the port (port I/O)
     bits 24-55 the value written (port I/O out)
     bits 8-62  the guest-physical address (MMIO; MAXPHYADDR is at most 52)

   An MMIO write puts the value written in out[0]. An MMIO address that does
   not fit is decoded in Python (PYVMM_FAST_OTHER), as is any other exit,
   string I/O included. PYVMM_FAST_OTHER (0): decode
   the kvm_run itself. A negative answer is -errno of KVM_RUN, or
   PYVMM_FAST_BAD_VALUE when `value` does not fit the read's size (nothing is
   run then). KVM API doc 5 ("The kvm_run structure"): KVM_EXIT_IO's data is at
   data_offset in the kvm_run page, KVM_EXIT_MMIO's in mmio.data; x86 is
   little-endian, so a memcpy of the low bytes is the guest's order. */
#define PYVMM_FAST_OTHER 0
#define PYVMM_FAST_IO_OUT 1
#define PYVMM_FAST_IO_IN 2
#define PYVMM_FAST_MMIO_WRITE 3
#define PYVMM_FAST_MMIO_READ 4
#define PYVMM_FAST_BAD_VALUE (-65536)

static int pyvmm_complete_read(struct kvm_run *run, uint64_t value)
{
    uint8_t *data;
    unsigned size;

    if (run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_IN
        && run->io.count == 1) {
        data = (uint8_t *)run + run->io.data_offset;
        size = run->io.size;
    } else if (run->exit_reason == KVM_EXIT_MMIO && !run->mmio.is_write
               && run->mmio.len >= 1 && run->mmio.len <= 8) {
        data = run->mmio.data;
        size = run->mmio.len;
    } else {
        return -1;
    }
    if (size < 8 && value >> (8 * size))
        return -1;
    memcpy(data, &value, size);
    return 0;
}

static int64_t pyvmm_decode_fast(struct kvm_run *run, uint64_t *out)
{
    int64_t head;
    unsigned size;

    switch (run->exit_reason) {
    case KVM_EXIT_IO:
        if (run->io.count != 1)
            return PYVMM_FAST_OTHER;
        size = run->io.size;
        head = ((int64_t)run->io.port << 8) | ((int64_t)size << 3);
        if (run->io.direction == KVM_EXIT_IO_OUT) {
            uint32_t written = 0;
            memcpy(&written, (uint8_t *)run + run->io.data_offset, size > 4 ? 4 : size);
            return ((int64_t)written << 24) | head | PYVMM_FAST_IO_OUT;
        }
        return head | PYVMM_FAST_IO_IN;
    case KVM_EXIT_MMIO:
        size = run->mmio.len;
        if (size < 1 || size > 8 || run->mmio.phys_addr >> 55)
            return PYVMM_FAST_OTHER;
        head = ((int64_t)run->mmio.phys_addr << 8) | ((int64_t)size << 3);
        if (run->mmio.is_write) {
            uint64_t written = 0;
            memcpy(&written, run->mmio.data, size);
            out[0] = written;
            return head | PYVMM_FAST_MMIO_WRITE;
        }
        return head | PYVMM_FAST_MMIO_READ;
    default:
        return PYVMM_FAST_OTHER;
    }
}

static int64_t pyvmm_run_fast(int fd, struct kvm_run *run, int complete, uint64_t value,
                              uint64_t *out)
{
    if (complete && pyvmm_complete_read(run, value) < 0)
        return PYVMM_FAST_BAD_VALUE;
    if (ioctl(fd, KVM_RUN, 0) < 0)
        return -errno;
    return pyvmm_decode_fast(run, out);
}

/* LOCK CMPXCHG16B on 16 aligned bytes of this process (guest RAM), for the
   emulation assist layer (pyvmm.arch.x86_64.assist): other vCPUs see it happen
   at once, as they would the guest's own. expected[0..1] is RDX:RAX's value,
   low:high the new value; returns 1 (equal: stored) or 0 (not: expected[] then
   holds what memory held). */
static int pyvmm_cmpxchg16b(uint64_t host_address, uint64_t *expected, uint64_t low,
                            uint64_t high)
{
    uint64_t want_low = expected[0], want_high = expected[1];
    uint8_t equal;

    __asm__ __volatile__("lock cmpxchg16b %1\n\tsete %0"
                         : "=q"(equal), "+m"(*(volatile uint64_t(*)[2])(uintptr_t)host_address),
                           "+a"(want_low), "+d"(want_high)
                         : "b"(low), "c"(high)
                         : "memory", "cc");
    expected[0] = want_low;
    expected[1] = want_high;
    return equal;
}

/* The halt watch's kick timer (pyvmm.machine.kick_timer): a POSIX timer on
   CLOCK_MONOTONIC whose signal goes to the calling thread alone
   (SIGEV_THREAD_ID, timer_create(2)), so that it interrupts that thread's
   KVM_RUN and no other. Each returns 0 or -errno. */
static int pyvmm_kick_timer_create(int signo, void **timer)
{
    struct sigevent event;
    timer_t created;

    memset(&event, 0, sizeof event);
    event.sigev_notify = SIGEV_THREAD_ID;
    event.sigev_signo = signo;
    event.sigev_notify_thread_id = (pid_t)syscall(SYS_gettid);
    if (timer_create(CLOCK_MONOTONIC, &event, &created) != 0)
        return -errno;
    *timer = (void *)created;
    return 0;
}

/* First after `nanoseconds`, then every `nanoseconds`; 0 disarms. */
static int pyvmm_kick_timer_arm(void *timer, int64_t nanoseconds)
{
    struct itimerspec spec;

    spec.it_value.tv_sec = nanoseconds / 1000000000;
    spec.it_value.tv_nsec = nanoseconds % 1000000000;
    spec.it_interval = spec.it_value;
    return timer_settime((timer_t)timer, 0, &spec, NULL) != 0 ? -errno : 0;
}

static int pyvmm_kick_timer_delete(void *timer)
{
    return timer_delete((timer_t)timer) != 0 ? -errno : 0;
}

/* Returns NULL instead of MAP_FAILED so Python can test it simply. */
static void *pyvmm_mmap(size_t length, int prot, int flags, int fd, int64_t offset)
{
    void *ptr = mmap(NULL, length, prot, flags, fd, (off_t)offset);
    return ptr == MAP_FAILED ? NULL : ptr;
}
"""

ffibuilder = FFI()
ffibuilder.cdef(_CONSTANTS + _STRUCTS + _FUNCTIONS)
# librt: timer_create and its kin live there before glibc 2.34 (an empty stub after).
ffibuilder.set_source("pyvmm._kvm", _SOURCE, libraries=["rt"])

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
