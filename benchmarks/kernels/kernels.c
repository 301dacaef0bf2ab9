/*
 * kernels.c - the benchmark kernels, one machine code for host and guest.
 *
 * Each kernel is `uint64_t k(uint64_t n, uint64_t base)` (System V AMD64:
 * n in rdi, base in rsi, result in rax). They are leaf functions with no
 * globals and no calls, built with -fPIE and -mgeneral-regs-only, so the
 * same bytes run anywhere they are mapped: at 0x100000 in a guest (at CPL0
 * or CPL3, where the VMM never enables SSE), or in an executable mmap in
 * the benchmark's own process. `base` is a buffer address in whatever
 * address space the caller lives in.
 *
 * The Python reimplementations in tests/unit/test_kernel_images.py must
 * match these definitions bit for bit.
 */
#include <stdint.h>

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL
#define GOLDEN 0x9e3779b97f4a7c15ULL

/* Keeps the compiler from folding a fill loop into the loop that reads it. */
#define MEMORY_BARRIER() __asm__ volatile("" ::: "memory")

/* xorshift64 mixed with the counter, n times: a dependent chain of ALU ops. */
uint64_t int_loop(uint64_t n, uint64_t base)
{
	(void)base;
	uint64_t x = GOLDEN ^ n;
	for (uint64_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		x += i;
	}
	return x;
}

/* The fill pattern: word w of the buffer (little-endian) is this. */
static inline uint64_t pattern_word(uint64_t w)
{
	return (w * GOLDEN) ^ (w >> 3);
}

/*
 * Fill n bytes at base with the little-endian stream pattern_word(0),
 * pattern_word(1), ... truncated to n bytes; then fold each 8-byte
 * little-endian word (the last one zero-padded) into an FNV-style hash:
 * h = (h ^ word) * FNV_PRIME, starting from FNV_OFFSET ^ n.
 */
uint64_t mem_checksum(uint64_t n, uint64_t base)
{
	uint64_t *words = (uint64_t *)base;
	uint8_t *bytes = (uint8_t *)base;
	uint64_t full = n / 8;
	uint64_t tail = n % 8;

	for (uint64_t w = 0; w < full; w++)
		words[w] = pattern_word(w);
	uint64_t last = pattern_word(full);
	for (uint64_t i = 0; i < tail; i++)
		bytes[full * 8 + i] = (uint8_t)(last >> (8 * i));
	MEMORY_BARRIER();

	uint64_t h = FNV_OFFSET ^ n;
	for (uint64_t w = 0; w < full; w++)
		h = (h ^ words[w]) * FNV_PRIME;
	if (tail) {
		uint64_t word = 0;
		for (uint64_t i = 0; i < tail; i++)
			word |= (uint64_t)bytes[full * 8 + i] << (8 * i);
		h = (h ^ word) * FNV_PRIME;
	}
	return h;
}

/* Sieve of Eratosthenes over bytes base[0..n]; returns how many primes are <= n. */
uint64_t sieve(uint64_t n, uint64_t base)
{
	uint8_t *composite = (uint8_t *)base;
	if (n < 2)
		return 0;
	for (uint64_t i = 0; i <= n; i++)
		composite[i] = 0;
	MEMORY_BARRIER();
	for (uint64_t i = 2; i * i <= n; i++) {
		if (composite[i])
			continue;
		for (uint64_t j = i * i; j <= n; j += i)
			composite[j] = 1;
	}
	uint64_t count = 0;
	for (uint64_t i = 2; i <= n; i++)
		count += composite[i] == 0;
	return count;
}

/*
 * CPUID leaf 0, n times. What CPUID returns differs between host and guest
 * (that is its purpose), so only the count is returned.
 */
uint64_t cpuid_loop(uint64_t n, uint64_t base)
{
	(void)base;
	uint64_t done = 0;
	for (uint64_t i = 0; i < n; i++) {
		uint32_t eax = 0, ebx, ecx = 0, edx;
		__asm__ volatile("cpuid" : "+a"(eax), "=b"(ebx), "+c"(ecx), "=d"(edx));
		done++;
	}
	return done;
}

/*
 * CPUID leaf n (subleaf 0): returns EAX | EBX << 32. Not a benchmark: it
 * shows whose CPUID a guest sees at each privilege level.
 */
uint64_t cpuid_leaf(uint64_t n, uint64_t base)
{
	(void)base;
	uint32_t eax = (uint32_t)n, ebx, ecx = 0, edx;
	__asm__ volatile("cpuid" : "+a"(eax), "=b"(ebx), "+c"(ecx), "=d"(edx));
	return eax | (uint64_t)ebx << 32;
}
