"""The I/O thread that serves ioeventfds: callbacks per eventfd, errors reported, clean close.

No KVM: the eventfds are written here, as KVM writes them when the guest
writes a notification register.
"""

from __future__ import annotations

import os
import threading

import pytest

from pyvmm.devices.virtio.console import VirtioConsole
from pyvmm.devices.virtio.mmio import VirtioMmio
from pyvmm.machine.io_thread import IoThread

WAIT = 5.0  # seconds: far above what a wakeup takes, so a failure is a hang caught


def eventfd() -> int:
    return os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)


def test_each_eventfd_runs_its_own_callback_in_the_thread() -> None:
    errors: list[str] = []
    thread = IoThread(errors.append)
    first, second = eventfd(), eventfd()
    seen: list[tuple[str, str]] = []
    done = threading.Semaphore(0)

    def callback(name: str) -> None:
        seen.append((name, threading.current_thread().name))
        done.release()

    thread.add(first, lambda: callback("first"))
    thread.add(second, lambda: callback("second"))
    thread.start()
    try:
        os.eventfd_write(second, 1)
        assert done.acquire(timeout=WAIT)
        os.eventfd_write(first, 1)
        assert done.acquire(timeout=WAIT)
    finally:
        thread.close()
    assert seen == [("second", "pyvmm I/O"), ("first", "pyvmm I/O")]
    assert (thread.wakeups, errors) == (2, [])


def test_signals_before_the_thread_looks_are_one_wakeup() -> None:
    thread = IoThread(lambda message: None)
    fd = eventfd()
    calls: list[int] = []
    done = threading.Event()
    thread.add(fd, lambda: (calls.append(1), done.set()))
    for _ in range(5):  # five guest notifications while nobody waits: the count adds up
        os.eventfd_write(fd, 1)
    thread.start()
    try:
        assert done.wait(WAIT)
    finally:
        thread.close()
    assert calls == [1]  # the device then serves everything the driver made available


def test_a_callback_that_raises_is_reported_and_the_thread_goes_on() -> None:
    errors: list[str] = []
    thread = IoThread(errors.append)
    bad, good = eventfd(), eventfd()
    done = threading.Event()

    def broken() -> None:
        raise ValueError("no such queue")

    thread.add(bad, broken)
    thread.add(good, done.set)
    thread.start()
    try:
        os.eventfd_write(bad, 1)
        os.eventfd_write(good, 1)
        assert done.wait(WAIT)
    finally:
        thread.close()
    assert errors == ["I/O thread: ValueError: no such queue"]


def test_close_ends_the_thread_and_closes_its_eventfds_once() -> None:
    thread = IoThread(lambda message: None)
    fd = eventfd()
    thread.add(fd, lambda: None)
    thread.start()
    thread.close()
    thread.close()  # the machine may close it twice (after a failure on the way)
    with pytest.raises(OSError):
        os.fstat(fd)
    assert not any(each.name == "pyvmm I/O" for each in threading.enumerate())


def test_an_unused_thread_never_starts() -> None:
    thread = IoThread(lambda message: None)
    thread.start()  # nothing to wait for
    assert not any(each.name == "pyvmm I/O" for each in threading.enumerate())
    thread.close()


def test_the_transport_serializes_a_notification_with_register_accesses() -> None:
    """The I/O thread's notify and a vCPU's register access never interleave: one lock."""
    memory = bytearray(1 << 16)

    class Ram:
        def read(self, gpa: int, size: int) -> bytes:
            return bytes(memory[gpa : gpa + size])

        def write(self, gpa: int, data: bytes) -> None:
            memory[gpa : gpa + len(data)] = data

    transport = VirtioMmio(VirtioConsole(lambda data: None), Ram())  # type: ignore[arg-type]
    held = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def hold_lock() -> None:
        with transport.lock:
            held.set()
            release.wait(WAIT)
            order.append("notify")

    notifier = threading.Thread(target=hold_lock)
    notifier.start()
    assert held.wait(WAIT)
    reader = threading.Thread(target=lambda: (transport.read(0x70, 4), order.append("read")))
    reader.start()
    reader.join(0.05)
    assert reader.is_alive()  # waiting for the notification to finish
    release.set()
    notifier.join(WAIT)
    reader.join(WAIT)
    assert order == ["notify", "read"]
