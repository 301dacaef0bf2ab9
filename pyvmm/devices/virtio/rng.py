"""virtio-rng, the entropy device (Virtio 1.2 §5.4).

One request queue of device-writable buffers, no features, no configuration
space. Each buffer gets one or more bytes from the injected `entropy(n)`
callable (the host's os.urandom in pyvmm, a fake in tests); the used length
says how many (§5.4.6.2: "one or more random bytes", maybe fewer than asked).

An optional rate limit, in bytes per second, is a token bucket that holds at
most one second's worth and refills from the injected `clock()` (seconds,
monotonic). When it is empty the request waits in the ring: `retry_time()`
says when a byte will be available again and `resume()` (called then, e.g.
from a timer) fills the waiting buffers.
"""

from __future__ import annotations

from collections.abc import Callable

from pyvmm.devices.virtio.device import VIRTIO_ID_ENTROPY, VirtioDeviceBase
from pyvmm.devices.virtio.queue import BufferWriter, MalformedRequest, Virtqueue

REQUESTQ = 0
QUEUE_SIZE = 64
MAX_REQUEST = 64 * 1024  # bytes given to one buffer at most, however large it is


class VirtioRng(VirtioDeviceBase):
    """The entropy device.

    `entropy(n)` returns up to n random bytes. `rate` limits the bytes per
    second (None: no limit); it needs `clock`. ValueError for a rate below 1
    or a rate without a clock.
    """

    device_id = VIRTIO_ID_ENTROPY
    queue_max_sizes = (QUEUE_SIZE,)

    def __init__(
        self,
        entropy: Callable[[int], bytes],
        *,
        rate: int | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__()
        if rate is not None and (rate < 1 or clock is None):
            raise ValueError("a rate limit needs a rate of at least 1 byte/s and a clock")
        self._entropy = entropy
        self._rate = rate
        self._clock = clock
        self._budget = float(rate or 0)  # bytes that may go out now
        self._refilled_at = clock() if clock is not None else 0.0
        self.waiting = False  # a request is waiting for the budget
        self.bytes_supplied = 0

    def process(self, queue_index: int, queue: Virtqueue) -> bool:
        used = False
        while (chain := queue.pop()) is not None:
            if chain.readable:  # §5.4.6.1: the driver places only device-writable buffers
                raise queue.refuse(MalformedRequest(f"request {chain.head}: a readable buffer"))
            wanted = min(chain.writable_size, MAX_REQUEST, self._allowance())
            data = self._entropy(wanted)[:wanted] if wanted else b""
            if not data:
                queue.undo_pop()  # no byte to give yet; zero would break §5.4.6.2
                self.waiting = True
                break
            written = BufferWriter(queue.memory, chain.writable).write(data)
            self._budget -= written
            self.bytes_supplied += written
            queue.push(chain.head, written)
            used = True
        return used

    def reset(self) -> None:
        super().reset()
        self.waiting = False

    def retry_time(self) -> float | None:
        """The clock time at which a waiting request can get a byte, or None if none waits."""
        if not self.waiting or self._rate is None:
            return None
        return self._refilled_at + max(0.0, 1 - self._budget) / self._rate

    def resume(self) -> None:
        """Try the waiting requests again (after `retry_time`)."""
        if self.waiting:
            self.waiting = False
            self.transport.notify(REQUESTQ)

    def _allowance(self) -> int:
        """Whole bytes the rate limit lets out now."""
        if self._rate is None or self._clock is None:
            return MAX_REQUEST
        now = self._clock()
        elapsed = max(0.0, now - self._refilled_at)
        self._budget = min(float(self._rate), self._budget + elapsed * self._rate)
        self._refilled_at = now
        return int(self._budget)
