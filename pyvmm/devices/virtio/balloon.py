"""The traditional memory balloon (Virtio 1.2 §5.5).

The host sets a target (`set_target`, the num_pages field, in 4 KiB pages);
the driver inflates the balloon by sending the frame numbers of pages it
gives up on the inflateq, and deflates it on the deflateq; it reports its
balloon size in `actual`. Pages given up are handed to the injected
`release(gpa, size)` callable, which pyvmm implements with
madvise(MADV_DONTNEED) on the host mapping: the host gets the memory back and
the guest finds zeros if it touches the page again. A deflate needs nothing
from the host (VIRTIO_BALLOON_F_MUST_TELL_HOST is not offered).

With VIRTIO_BALLOON_F_STATS_VQ the driver keeps one buffer of statistics in
the statsq; the device holds it and gives it back when it wants fresh ones
(`request_stats`, §5.5.6.3). With VIRTIO_BALLOON_F_PAGE_REPORTING (Linux's
VIRTIO_BALLOON_F_REPORTING) the driver reports free page ranges on the
reporting_vq (§5.5.6.7); they are released the same way.

Queue numbers: §5.5.2 lists inflateq 0, deflateq 1, statsq 2, free_page_vq 3,
reporting_vq 4, each present only with its feature. Linux's virtio_mmio
numbers only the queues that exist (vm_find_vqs skips the absent ones), so
the reporting_vq is queue 2 when the statsq is not negotiated. The device
numbers them the same way, from the features the driver accepted.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from pyvmm.devices.virtio.device import VIRTIO_ID_BALLOON, VirtioDeviceBase, feature
from pyvmm.devices.virtio.queue import BufferReader, DescriptorChain, MalformedRequest, Virtqueue
from pyvmm.memory.addr import PAGE_SIZE, align_down, align_up

# §5.5.3 feature bits.
VIRTIO_BALLOON_F_MUST_TELL_HOST = 0
VIRTIO_BALLOON_F_STATS_VQ = 1
VIRTIO_BALLOON_F_DEFLATE_ON_OOM = 2
VIRTIO_BALLOON_F_FREE_PAGE_HINT = 3
VIRTIO_BALLOON_F_PAGE_POISON = 4
VIRTIO_BALLOON_F_PAGE_REPORTING = 5

# §5.5.4 struct virtio_balloon_config: le32 num_pages, le32 actual (the rest needs
# FREE_PAGE_HINT or PAGE_POISON, not offered).
BALLOON_CONFIG = struct.Struct("<II")
ACTUAL_OFFSET = 4  # the only field the driver writes
MAX_PAGES = 0xFFFF_FFFF  # num_pages and actual are le32
VIRTIO_BALLOON_PFN_SHIFT = 12  # §5.5.6: page numbers are in 4 KiB units, whatever the guest's
BALLOON_PAGE_SIZE = 1 << VIRTIO_BALLOON_PFN_SHIFT
PFN = struct.Struct("<I")
PFN_CHUNK = 1024  # page numbers read from guest memory at a time
MAX_STATS = 64  # entries read from a statistics buffer: more than any driver sends

# §5.5.6.3 struct virtio_balloon_stat (packed: le16 tag, le64 val) and its tags.
BALLOON_STAT = struct.Struct("<HQ")
STAT_NAMES = {
    0: "swap-in",
    1: "swap-out",
    2: "major-faults",
    3: "minor-faults",
    4: "free-memory",
    5: "total-memory",
    6: "available-memory",
    7: "disk-caches",
    8: "hugetlb-allocations",
    9: "hugetlb-failures",
}

INFLATEQ, DEFLATEQ, STATSQ, REPORTINGQ = "inflateq", "deflateq", "statsq", "reporting_vq"
QUEUE_SIZE = 128  # Linux's page reporting needs at least 32 (PAGE_REPORTING_CAPACITY)


class VirtioBalloon(VirtioDeviceBase):
    """A balloon that hands the pages the guest gives up to `release(gpa, size)`.

    `stats`, `reporting` and `deflate_on_oom` offer VIRTIO_BALLOON_F_STATS_VQ,
    _PAGE_REPORTING and _DEFLATE_ON_OOM. Counters: `inflated_pages`,
    `deflated_pages`, `reported_pages` (4 KiB pages), `released_pages`
    (inflated plus reported: what went to `release`), `bad_pfns` (page
    numbers outside guest RAM, skipped). `stats` maps STAT_NAMES to the
    driver's last statistics.
    """

    device_id = VIRTIO_ID_BALLOON

    def __init__(
        self,
        release: Callable[[int, int], None],
        *,
        stats: bool = True,
        reporting: bool = True,
        deflate_on_oom: bool = False,
        max_pages: int | None = None,
    ) -> None:
        super().__init__()
        self._release = release
        # No driver gives more pages than the guest has RAM: page numbers beyond that in
        # one notification are refused instead of walked (a hostile buffer of millions).
        self.max_pages = max_pages
        self._budget = max_pages
        self.features = 0
        if stats:
            self.features |= feature(VIRTIO_BALLOON_F_STATS_VQ)
        if reporting:
            self.features |= feature(VIRTIO_BALLOON_F_PAGE_REPORTING)
        if deflate_on_oom:
            self.features |= feature(VIRTIO_BALLOON_F_DEFLATE_ON_OOM)
        self.queue_max_sizes = (QUEUE_SIZE,) * len(self._queue_roles(self.features))
        self.num_pages = 0  # the host's target
        self.stats: dict[str, int] = {}
        self.inflated_pages = self.deflated_pages = self.reported_pages = 0
        self.released_pages = self.bad_pfns = 0
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.actual = 0
        self.roles = self._queue_roles(self.features)
        self._stats_chain: DescriptorChain | None = None  # the buffer the device holds
        self._stats_wanted = False

    @staticmethod
    def _queue_roles(features: int) -> tuple[str, ...]:
        """The queues that exist with `features`, in queue-number order (see the module doc)."""
        roles = [INFLATEQ, DEFLATEQ]
        if features & feature(VIRTIO_BALLOON_F_STATS_VQ):
            roles.append(STATSQ)
        if features & feature(VIRTIO_BALLOON_F_PAGE_REPORTING):
            roles.append(REPORTINGQ)
        return tuple(roles)

    def ack_features(self, features: int) -> None:
        super().ack_features(features)
        self.roles = self._queue_roles(features)

    @property
    def queue_count(self) -> int:
        # The queues are numbered as the accepted features leave them (as Linux
        # numbers them): a queue past those reads QueueNumMax 0, "not there".
        return len(self.roles)

    # -- the host side -----------------------------------------------------

    def set_target(self, pages: int) -> None:
        """Ask the guest to hold `pages` 4 KiB pages in the balloon (a configuration change).

        num_pages is a le32 (§5.5.4): ValueError for a count it cannot hold.
        Like every device method, call it from a vCPU thread (VcpuGroup.post).
        """
        if not 0 <= pages <= MAX_PAGES:
            raise ValueError(f"a balloon of {pages} pages: num_pages holds 0 to {MAX_PAGES}")
        self.num_pages = pages
        self.transport.signal_config_change()

    def request_stats(self) -> bool:
        """Ask the driver for fresh statistics; False if it has no buffer with the device yet."""
        if STATSQ not in self.roles or self._stats_chain is None:
            return False
        self._stats_wanted = True
        self.transport.notify(self.roles.index(STATSQ))
        return True

    # -- the device side ---------------------------------------------------

    def config(self) -> bytes:
        return BALLOON_CONFIG.pack(self.num_pages, self.actual)

    def write_config(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        if offset < ACTUAL_OFFSET or end > BALLOON_CONFIG.size:
            return  # num_pages is the device's
        image = bytearray(self.config())
        image[offset:end] = data
        self.actual = BALLOON_CONFIG.unpack(image)[1]

    def process(self, queue_index: int, queue: Virtqueue) -> bool:
        role = self.roles[queue_index] if queue_index < len(self.roles) else None
        if role == STATSQ:
            return self._process_stats(queue)
        self._budget = self.max_pages
        used = False
        while role is not None and (chain := queue.pop()) is not None:
            if role == INFLATEQ:
                self._inflate(queue, chain)
            elif role == DEFLATEQ:
                self.deflated_pages += chain.readable_size // PFN.size
            else:
                self._report(chain)
            queue.push(chain.head, 0)
            used = True
        return used

    def _inflate(self, queue: Virtqueue, chain: DescriptorChain) -> None:
        """Release the pages the request names (once each), a run of consecutive pages
        with one call; page numbers outside RAM are counted in `bad_pfns`.

        Raises MalformedRequest, releasing nothing, when the notification names
        more page numbers than the guest has pages of RAM (`max_pages`).
        """
        count = chain.readable_size // PFN.size
        if self._budget is not None:
            if count > self._budget:
                raise MalformedRequest(
                    f"inflate requests of more page numbers than the guest's "
                    f"{self.max_pages} pages of RAM"
                )
            self._budget -= count
        reader = BufferReader(queue.memory, chain.readable)
        pfns: set[int] = set()
        while reader.remaining >= PFN.size:
            data = reader.read(min(reader.remaining, PFN_CHUNK * PFN.size) // PFN.size * PFN.size)
            pfns.update(pfn for (pfn,) in PFN.iter_unpack(data))
        # Released before the chain is used: the driver may take the pages back after.
        released = 0
        for first, pages in page_runs(sorted(pfns)):
            gpa = first << VIRTIO_BALLOON_PFN_SHIFT
            if queue.memory.contains(gpa, pages * BALLOON_PAGE_SIZE):
                self._release(gpa, pages * BALLOON_PAGE_SIZE)
                released += pages
                continue
            for page in range(pages):  # a run that leaves RAM or spans a hole
                page_gpa = gpa + page * BALLOON_PAGE_SIZE
                if queue.memory.contains(page_gpa, BALLOON_PAGE_SIZE):
                    self._release(page_gpa, BALLOON_PAGE_SIZE)
                    released += 1
                else:
                    self.bad_pfns += 1
        self.inflated_pages += released
        self.released_pages += released

    def _report(self, chain: DescriptorChain) -> None:
        # The driver reports free ranges as device-writable buffers (Linux's
        # virtqueue_add_inbuf); the queue checked that they are RAM. Only whole
        # host pages can be released.
        for gpa, length in chain.writable:
            start, end = align_up(gpa, PAGE_SIZE), align_down(gpa + length, PAGE_SIZE)
            if end > start:
                self._release(start, end - start)
                self.reported_pages += (end - start) // BALLOON_PAGE_SIZE
                self.released_pages += (end - start) // BALLOON_PAGE_SIZE

    def _process_stats(self, queue: Virtqueue) -> bool:
        """Take the driver's statistics buffer and keep it; give it back when stats are wanted."""
        used = False
        while (chain := queue.pop()) is not None:
            if self._stats_chain is not None:  # §5.5.6.3.1 allows one buffer: return the older
                queue.push(self._stats_chain.head, 0)
                used = True
            self._stats_chain = chain
            self._read_stats(queue, chain)
        if self._stats_wanted and self._stats_chain is not None:
            queue.push(self._stats_chain.head, 0)
            self._stats_chain = None
            self._stats_wanted = False
            used = True
        return used

    def _read_stats(self, queue: Virtqueue, chain: DescriptorChain) -> None:
        reader = BufferReader(queue.memory, chain.readable)
        count = min(reader.remaining // BALLOON_STAT.size, MAX_STATS)
        for tag, value in BALLOON_STAT.iter_unpack(reader.read(count * BALLOON_STAT.size)):
            if tag in STAT_NAMES:  # §5.5.6.3.2: unknown tags are ignored
                self.stats[STAT_NAMES[tag]] = value


def page_runs(pfns: list[int]) -> list[tuple[int, int]]:
    """(first page number, page count) of each run of consecutive numbers in sorted `pfns`."""
    runs: list[tuple[int, int]] = []
    for pfn in pfns:
        if runs and runs[-1][0] + runs[-1][1] == pfn:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((pfn, 1))
    return runs
