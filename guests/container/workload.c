/*
 * workload.c - one workload for `pyvmm demo containers`: run as a plain
 * process, as the process of an OCI container and (its kernel, int_loop) in
 * a pyvmm guest. A static x86-64 Linux executable in freestanding C: no C
 * library, raw syscalls only, so the same file runs in an empty root file
 * system. int_loop is benchmarks/kernels/kernels.c, compiled on its own with
 * the kernels' flags and linked in: the same machine code as the guest runs.
 *
 * Every mode but `spawn` first writes one byte, '+', to stdout: the parent
 * timestamps its arrival on the pipe as the workload's first instruction.
 * Results follow as `key value` lines.
 *
 *   workload bench N REPEAT COUNT  int_loop(N), best of REPEAT (ns), and COUNT
 *                                  getpid syscalls, best of REPEAT (ns in all)
 *   workload world                 what it sees of its world: pid, ppid, uname
 *                                  release and nodename; then waits for EOF on
 *                                  stdin, so the parent can look at it running
 *   workload touch LIMIT_MIB       wait for a byte (or EOF) on stdin, then map
 *                                  and write memory page by page, printing the
 *                                  KiB touched after each MiB, until killed (or
 *                                  LIMIT_MIB is reached: status 3)
 *   workload spawn PATH ARG...     fork, execve PATH with ARGs, wait4 it; print
 *                                  its wait status and peak RSS (ru_maxrss, KiB):
 *                                  a parent this small adds nothing to that
 *                                  peak, as a Python parent's would (what a
 *                                  child execs from a vfork or fork starts
 *                                  with its parent's RSS as its high mark)
 */
#include <stdint.h>

uint64_t int_loop(uint64_t n, uint64_t base);

#define SYS_read 0
#define SYS_write 1
#define SYS_mmap 9
#define SYS_getpid 39
#define SYS_fork 57
#define SYS_execve 59
#define SYS_wait4 61
#define SYS_uname 63
#define SYS_getppid 110
#define SYS_clock_gettime 228
#define SYS_exit_group 231

#define CLOCK_MONOTONIC 1
#define PROT_READ 1
#define PROT_WRITE 2
#define MAP_PRIVATE 2
#define MAP_ANONYMOUS 0x20
#define PAGE 4096
#define MIB (1024 * 1024)

static inline long syscall6(long n, long a, long b, long c, long d, long e, long f)
{
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	long ret;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
}

#define syscall3(n, a, b, c) syscall6(n, (long)(a), (long)(b), (long)(c), 0, 0, 0)

struct timespec64 {
	int64_t sec;
	int64_t nsec;
};

struct utsname {
	char sysname[65], nodename[65], release[65], version[65], machine[65], domainname[65];
};

/* struct rusage: two struct timevals, then 14 longs; ru_maxrss (KiB) is the first. */
struct rusage {
	int64_t utime[2], stime[2];
	long maxrss, rest[13];
};

static uint64_t now_ns(void)
{
	struct timespec64 t;
	syscall3(SYS_clock_gettime, CLOCK_MONOTONIC, &t, 0);
	return (uint64_t)t.sec * 1000000000u + (uint64_t)t.nsec;
}

static unsigned long length(const char *s)
{
	unsigned long n = 0;
	while (s[n])
		n++;
	return n;
}

static void put(const char *s)
{
	syscall3(SYS_write, 1, s, length(s));
}

/* `key value\n` with the value in decimal, or in hex with a 0x prefix. */
static void put_number(const char *key, uint64_t value, int hex)
{
	char digits[24];
	int i = sizeof(digits);
	digits[--i] = 0;
	do {
		unsigned d = value % (hex ? 16 : 10);
		digits[--i] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
		value /= hex ? 16 : 10;
	} while (value);
	if (hex) {
		digits[--i] = 'x';
		digits[--i] = '0';
	}
	put(key);
	put(" ");
	put(digits + i);
	put("\n");
}

static void put_text(const char *key, const char *value)
{
	put(key);
	put(" ");
	put(value);
	put("\n");
}

static int equal(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return *a == *b;
}

static uint64_t parse(const char *s)
{
	uint64_t n = 0;
	while (*s >= '0' && *s <= '9')
		n = n * 10 + (uint64_t)(*s++ - '0');
	return n;
}

static int bench(uint64_t n, uint64_t repeat, uint64_t count)
{
	uint64_t best_loop = UINT64_MAX, best_getpid = UINT64_MAX, result = 0;
	for (uint64_t r = 0; r < repeat; r++) {
		uint64_t start = now_ns();
		result = int_loop(n, 0);
		uint64_t took = now_ns() - start;
		if (took < best_loop)
			best_loop = took;
		start = now_ns();
		for (uint64_t i = 0; i < count; i++)
			syscall3(SYS_getpid, 0, 0, 0);
		took = now_ns() - start;
		if (took < best_getpid)
			best_getpid = took;
	}
	put_number("int_loop_n", n, 0);
	put_number("int_loop_result", result, 1);
	put_number("int_loop_ns", best_loop, 0);
	put_number("getpid_count", count, 0);
	put_number("getpid_ns", best_getpid, 0);
	return 0;
}

static int world(void)
{
	struct utsname uts;
	char byte;
	put_number("pid", (uint64_t)syscall3(SYS_getpid, 0, 0, 0), 0);
	put_number("ppid", (uint64_t)syscall3(SYS_getppid, 0, 0, 0), 0);
	if (syscall3(SYS_uname, &uts, 0, 0) == 0) {
		put_text("release", uts.release);
		put_text("nodename", uts.nodename);
	}
	put_text("waiting", "stdin");
	while (syscall3(SYS_read, 0, &byte, 1) > 0)
		;
	return 0;
}

static int touch(uint64_t limit_mib)
{
	char byte;
	put_text("waiting", "stdin");
	syscall3(SYS_read, 0, &byte, 1);
	for (uint64_t mib = 1; mib <= limit_mib; mib++) {
		long chunk = syscall6(SYS_mmap, 0, MIB, PROT_READ | PROT_WRITE,
				      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (chunk < 0 && chunk > -4096) {
			put_number("mmap_failed_after_kib", (mib - 1) * 1024, 0);
			return 2;
		}
		for (long page = 0; page < MIB; page += PAGE)
			*(volatile char *)(chunk + page) = 1;
		put_number("touched_kib", mib * 1024, 0);
	}
	put_text("limit", "not reached");
	return 3;
}

static int spawn(char **argv, char **envp)
{
	struct rusage usage;
	int status = 0;
	long pid = syscall3(SYS_fork, 0, 0, 0);
	if (pid == 0) {
		syscall3(SYS_execve, argv[0], argv, envp);
		syscall3(SYS_exit_group, 127, 0, 0);
	}
	if (pid < 0)
		return 126;
	if (syscall6(SYS_wait4, pid, (long)&status, 0, (long)&usage, 0, 0) != pid)
		return 125;
	put_number("spawn_status", (uint64_t)(unsigned)status, 0);
	put_number("spawn_maxrss_kib", (uint64_t)usage.maxrss, 0);
	return 0;
}

int workload_main(long *stack)
{
	long argc = stack[0];
	char **argv = (char **)(stack + 1);
	char **envp = argv + argc + 1;

	if (argc >= 3 && equal(argv[1], "spawn"))
		return spawn(argv + 2, envp);
	put("+");
	if (argc == 5 && equal(argv[1], "bench"))
		return bench(parse(argv[2]), parse(argv[3]), parse(argv[4]));
	if (argc == 2 && equal(argv[1], "world"))
		return world();
	if (argc == 3 && equal(argv[1], "touch"))
		return touch(parse(argv[2]));
	put("\nusage: workload bench N REPEAT COUNT | world | touch LIMIT_MIB | spawn PATH ARG...\n");
	return 2;
}
