/* syscall_clock: how long a process spends inside the calls that make, run and
   free a VM. Loaded with LD_PRELOAD (built by benchmarks/syscall_clock.py); it
   wraps ioctl, close, mmap (mmap64) and munmap in clock_gettime(CLOCK_MONOTONIC)
   and, when the process exits, writes one line per call (per ioctl request)
   to the file named by $SYSCALL_CLOCK_OUT:

       ioctl <request in hex> <calls> <nanoseconds>
       close 0 <calls> <nanoseconds>

   syscall_clock_reset() zeroes the counts: a process may call it (ctypes) once
   its warm-up is over, as pyvmm's child does; ref_vmm does not, so its counts
   keep its one-off set-up (KVM_GET_SUPPORTED_CPUID). Counters are atomic, so
   threads may share them. The time of a call includes the wrapper's two clock
   reads (tens of nanoseconds, in the vDSO) and, for an ioctl, the lookup of
   its request's slot. */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

enum { CALL_CLOSE, CALL_MMAP, CALL_MUNMAP, CALL_COUNT };
static const char *const call_names[CALL_COUNT] = {"close", "mmap", "munmap"};
static uint64_t call_calls[CALL_COUNT], call_ns[CALL_COUNT];

/* ioctl requests, one slot each; a request past the table lands in the last slot. */
#define REQUESTS 64
static unsigned long requests[REQUESTS];
static uint64_t request_calls[REQUESTS], request_ns[REQUESTS];
static int request_slots;

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void add(uint64_t *calls, uint64_t *ns, uint64_t started)
{
    __atomic_fetch_add(calls, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(ns, now_ns() - started, __ATOMIC_RELAXED);
}

static int request_slot(unsigned long request)
{
    int slots = __atomic_load_n(&request_slots, __ATOMIC_ACQUIRE);
    for (int i = 0; i < slots; i++)
        if (requests[i] == request)
            return i;
    /* A new request: claim a slot (two threads may both claim one for it: the
       output then has two lines, which the reader adds up). */
    int slot = __atomic_fetch_add(&request_slots, 1, __ATOMIC_ACQ_REL);
    if (slot >= REQUESTS - 1) {
        __atomic_store_n(&request_slots, REQUESTS - 1, __ATOMIC_RELEASE);
        requests[REQUESTS - 1] = 0;
        return REQUESTS - 1;
    }
    requests[slot] = request;
    return slot;
}

static void *real(const char *name)
{
    void *function = dlsym(RTLD_NEXT, name);
    if (function == NULL) {
        fprintf(stderr, "syscall_clock: no %s after this library\n", name);
        abort();
    }
    return function;
}

int ioctl(int fd, unsigned long request, ...)
{
    static int (*next)(int, unsigned long, void *);
    if (next == NULL)
        next = (int (*)(int, unsigned long, void *))real("ioctl");
    va_list arguments;
    va_start(arguments, request);
    void *argument = va_arg(arguments, void *);
    va_end(arguments);
    uint64_t started = now_ns();
    int result = next(fd, request, argument);
    int slot = request_slot(request);
    add(&request_calls[slot], &request_ns[slot], started);
    return result;
}

int close(int fd)
{
    static int (*next)(int);
    if (next == NULL)
        next = (int (*)(int))real("close");
    uint64_t started = now_ns();
    int result = next(fd);
    add(&call_calls[CALL_CLOSE], &call_ns[CALL_CLOSE], started);
    return result;
}

void *mmap(void *address, size_t length, int protection, int flags, int fd, off_t offset)
{
    static void *(*next)(void *, size_t, int, int, int, off_t);
    if (next == NULL)
        next = (void *(*)(void *, size_t, int, int, int, off_t))real("mmap");
    uint64_t started = now_ns();
    void *result = next(address, length, protection, flags, fd, offset);
    add(&call_calls[CALL_MMAP], &call_ns[CALL_MMAP], started);
    return result;
}

/* Code built with _FILE_OFFSET_BITS=64 (CPython, and so cffi's modules) calls mmap64. */
void *mmap64(void *address, size_t length, int protection, int flags, int fd, off_t offset)
{
    return mmap(address, length, protection, flags, fd, offset);
}

int munmap(void *address, size_t length)
{
    static int (*next)(void *, size_t);
    if (next == NULL)
        next = (int (*)(void *, size_t))real("munmap");
    uint64_t started = now_ns();
    int result = next(address, length);
    add(&call_calls[CALL_MUNMAP], &call_ns[CALL_MUNMAP], started);
    return result;
}

void syscall_clock_reset(void)
{
    for (int i = 0; i < CALL_COUNT; i++) {
        __atomic_store_n(&call_calls[i], 0, __ATOMIC_RELAXED);
        __atomic_store_n(&call_ns[i], 0, __ATOMIC_RELAXED);
    }
    for (int i = 0; i < REQUESTS; i++) {
        __atomic_store_n(&request_calls[i], 0, __ATOMIC_RELAXED);
        __atomic_store_n(&request_ns[i], 0, __ATOMIC_RELAXED);
    }
}

__attribute__((destructor)) static void write_counts(void)
{
    const char *path = getenv("SYSCALL_CLOCK_OUT");
    if (path == NULL)
        return;
    FILE *out = fopen(path, "w");
    if (out == NULL)
        return;
    int slots = __atomic_load_n(&request_slots, __ATOMIC_ACQUIRE);
    for (int i = 0; i < slots && i < REQUESTS; i++)
        if (request_calls[i])
            fprintf(out, "ioctl %#lx %llu %llu\n", requests[i],
                    (unsigned long long)request_calls[i], (unsigned long long)request_ns[i]);
    for (int i = 0; i < CALL_COUNT; i++)
        fprintf(out, "%s 0 %llu %llu\n", call_names[i], (unsigned long long)call_calls[i],
                (unsigned long long)call_ns[i]);
    fclose(out);
}
