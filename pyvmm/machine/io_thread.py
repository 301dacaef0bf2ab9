"""An I/O thread: device work started by an eventfd, outside the vCPU threads.

With an ioeventfd (KVM_IOEVENTFD, KVM API doc 4.59) a guest's write to a
notification register does not exit: KVM signals an eventfd and the vCPU goes
on. Someone must then do the work the write asked for; here it is this thread,
which waits on every such eventfd with epoll and calls the callback bound to
the one that fired. QEMU's iothreads and Firecracker's event manager have the
same shape. The callbacks touch device state that vCPU threads touch too
(the device's registers), so each device guards itself with a lock (see
`VirtioMmio.lock`); the thread itself holds none while it waits.

A callback that raises ends the run through `on_error` (the machine's
`request_stop`) with the error's text: a bug in a device must not end this
thread silently and leave the guest waiting for an answer that never comes.
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable

from pyvmm.errors import Log

log = Log(__name__)


class IoThread:
    """Runs `callback()` in one thread each time eventfd `fd` of an `add(fd, callback)` fires.

    `start` starts the thread (after the last `add`), `close` ends and joins
    it and closes the eventfds it was given. `on_error(message)` is called
    (from this thread) when a callback raises; the thread then goes on.
    `wakeups` counts the callbacks run.
    """

    def __init__(self, on_error: Callable[[str], None], name: str = "pyvmm I/O") -> None:
        self._on_error = on_error
        self._name = name
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._epoll = select.epoll()
        self._stop = os.eventfd(0, os.EFD_CLOEXEC)
        self._epoll.register(self._stop, select.EPOLLIN)
        self._thread: threading.Thread | None = None
        self.wakeups = 0

    def add(self, fd: int, callback: Callable[[], None]) -> None:
        """Call `callback` when the eventfd `fd` is signalled; `close` closes `fd`."""
        self._callbacks[fd] = callback
        self._epoll.register(fd, select.EPOLLIN)

    def start(self) -> None:
        if self._thread is None and self._callbacks:
            self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
            self._thread.start()

    def _serve(self) -> None:
        while True:
            for fd, _ in self._epoll.poll():
                if fd == self._stop:
                    return
                try:
                    os.eventfd_read(fd)  # resets the count: n writes, one wakeup
                except BlockingIOError:
                    continue
                self.wakeups += 1
                try:
                    self._callbacks[fd]()
                except Exception as error:  # reported, and the run ends
                    log.warning("I/O thread: %s", error)
                    self._on_error(f"I/O thread: {type(error).__name__}: {error}")

    def close(self) -> None:
        """End the thread (after the callback it is in, if any), then close every eventfd.

        A second call does nothing.
        """
        if self._stop < 0:
            return
        if self._thread is not None:
            os.eventfd_write(self._stop, 1)
            self._thread.join()
            self._thread = None
        for fd in list(self._callbacks):
            os.close(fd)
        self._callbacks.clear()
        self._epoll.close()
        os.close(self._stop)
        self._stop = -1
