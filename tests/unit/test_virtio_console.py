"""virtio-console: port 0's transmitq to the host, host input into the receiveq."""

from __future__ import annotations

from pyvmm.devices.virtio.console import (
    INPUT_CAPACITY,
    OUTPUT_CHUNK,
    RECEIVEQ,
    TRANSMITQ,
    VIRTIO_CONSOLE_F_EMERG_WRITE,
    VIRTIO_CONSOLE_F_MULTIPORT,
    VIRTIO_CONSOLE_F_SIZE,
    VirtioConsole,
)
from pyvmm.devices.virtio.device import (
    DEVICE_NEEDS_RESET,
    VIRTIO_ID_CONSOLE,
    feature,
)
from pyvmm.devices.virtio.mmio import (
    VIRTIO_MMIO_CONFIG,
    VIRTIO_MMIO_DEVICE_ID,
    VIRTIO_MMIO_INT_CONFIG,
    VIRTIO_MMIO_INT_VRING,
    VIRTIO_MMIO_STATUS,
    VirtioMmio,
)
from tests.unit.virtio_rings import DriverRing, FakeMemory, MmioDriver, RecordingIrq


class Console:
    def __init__(self, size: tuple[int, int] | None = None) -> None:
        self.output: list[bytes] = []
        self.memory = FakeMemory()
        self.irq = RecordingIrq()
        self.device = VirtioConsole(self.output.append, size)
        self.transport = VirtioMmio(self.device, self.memory, self.irq)
        self.driver = MmioDriver(self.transport, self.memory)

    def start(self) -> tuple[DriverRing, DriverRing]:
        receiveq, transmitq = self.driver.start()
        return receiveq, transmitq


def test_it_is_a_console_with_two_queues_and_no_multiport() -> None:
    console = Console()
    assert console.driver.read(VIRTIO_MMIO_DEVICE_ID) == VIRTIO_ID_CONSOLE == 3
    console.start()
    assert len(console.transport.queues) == 2
    assert console.driver.features & feature(VIRTIO_CONSOLE_F_EMERG_WRITE)
    assert not console.driver.features & feature(VIRTIO_CONSOLE_F_MULTIPORT, VIRTIO_CONSOLE_F_SIZE)


def test_what_the_guest_transmits_reaches_the_output() -> None:
    console = Console()
    _, transmitq = console.start()
    request = transmitq.add([b"Linux ", b"version"])  # hvc's put_chars: one readable buffer each
    transmitq.add([b"\r\n"], indirect=True)
    console.driver.kick(TRANSMITQ)
    assert b"".join(console.output) == b"Linux version\r\n"
    assert transmitq.get_used() == [(request.head, 0), (request.head + 2, 0)]
    assert console.driver.take_interrupt() == VIRTIO_MMIO_INT_VRING


def test_a_long_transmit_stops_at_the_next_piece_once_the_run_ends() -> None:
    """A chain of several 64 KiB pieces to a slow terminal: when the run ends during it
    (`stopping`, set from another thread), the device writes no further piece."""
    console = Console()
    _, transmitq = console.start()

    def terminal(data: bytes) -> None:
        console.output.append(data)
        console.transport.stopping = True  # the run's timeout, during the first piece

    console.device._output = terminal  # type: ignore[attr-defined]
    transmitq.add([bytes(OUTPUT_CHUNK)] * 3)
    console.driver.kick(TRANSMITQ)
    assert [len(piece) for piece in console.output] == [OUTPUT_CHUNK]
    assert transmitq.get_used() == []  # not used: the run is over


def test_host_input_fills_receive_buffers_as_they_come() -> None:
    console = Console()
    receiveq, _ = console.start()
    first = receiveq.add(writable=[4])  # Linux's fill_queue posts one page per buffer
    assert console.device.push_input(b"hello") == 5
    assert receiveq.get_used() == [(first.head, 4)]
    assert receiveq.written(first, 4) == b"hell"
    assert console.driver.take_interrupt() == VIRTIO_MMIO_INT_VRING
    # The rest waits for the next buffer the driver adds.
    second = receiveq.add(writable=[16])
    console.driver.kick(RECEIVEQ)
    assert receiveq.get_used() == [(second.head, 1)]
    assert receiveq.written(second, 1) == b"o"


def test_input_before_the_driver_is_ready_arrives_at_driver_ok() -> None:
    console = Console()
    console.device.push_input(b"early")
    receiveq, _ = console.start()  # no buffer yet: nothing used
    request = receiveq.add(writable=[8])
    console.driver.kick(RECEIVEQ)
    assert receiveq.written(request, 5) == b"early"


def test_input_beyond_the_buffer_capacity_is_not_taken() -> None:
    console = Console()
    assert console.device.push_input(b"x" * (INPUT_CAPACITY + 10)) == INPUT_CAPACITY
    assert console.device.input_space == 0
    assert console.device.push_input(b"more") == 0


def test_the_window_size_is_offered_and_a_resize_is_a_config_change() -> None:
    console = Console(size=(80, 25))
    console.start()
    assert console.driver.features & feature(VIRTIO_CONSOLE_F_SIZE)
    assert console.transport.read(VIRTIO_MMIO_CONFIG, 2) == 80
    assert console.transport.read(VIRTIO_MMIO_CONFIG + 2, 2) == 25
    console.device.resize(132, 43)
    assert console.driver.take_interrupt() == VIRTIO_MMIO_INT_CONFIG
    assert console.transport.read(VIRTIO_MMIO_CONFIG, 4) == 43 << 16 | 132


def test_emergency_write_prints_even_before_the_driver_starts() -> None:
    console = Console()
    console.transport.write(VIRTIO_MMIO_CONFIG + 8, 4, ord("!"))
    console.transport.write(VIRTIO_MMIO_CONFIG + 8, 1, ord("?"))
    assert console.output == [b"!", b"?"]


def test_a_broken_transmit_chain_needs_a_reset_and_prints_nothing() -> None:
    console = Console()
    _, transmitq = console.start()
    transmitq.write_desc(0, 0x8000_0000, 16)  # in the hole
    transmitq.publish(0)
    console.driver.kick(TRANSMITQ)
    assert console.output == []
    assert console.driver.read(VIRTIO_MMIO_STATUS) & DEVICE_NEEDS_RESET
    assert console.transport.queues[TRANSMITQ].refusals == {"BadDescriptor": 1}


def test_the_terminal_feeds_the_receiveq_through_a_vcpu_thread() -> None:
    """--console virtio: stdin's buffer reaches the receive buffers when input comes
    (posted to a vCPU thread) and whenever the guest touches the window."""
    from pyvmm.console.input import DeviceWithInput, InputBuffer

    console = Console()
    receiveq, _ = console.start()
    posted: list[object] = []
    buffer = InputBuffer(1 << 20)
    window = DeviceWithInput(
        console.transport,
        lambda: console.device.input_space,
        console.device.push_input,
        buffer,
        posted.append,
    )
    first = receiveq.add(writable=[8])
    window.write(0x050, 4, RECEIVEQ)  # QueueNotify through the bus device
    buffer.put(b"typed\n")
    assert len(posted) == 1  # asked a vCPU thread to move it
    posted.pop()()  # ... which runs it between two KVM_RUNs
    assert receiveq.get_used() == [(first.head, 6)]
    assert receiveq.written(first, 6) == b"typed\n"
    buffer.put(b"x" * (INPUT_CAPACITY + 100))  # more than the device keeps
    posted.pop()()
    assert len(buffer) == 100  # the rest waits in the host's buffer, nothing lost
    assert console.device.input_space == 0
