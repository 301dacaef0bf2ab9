"""A human monitor on a UNIX socket: QEMU's `-monitor unix:PATH,server,nowait`, a few commands.

`pyvmm boot --monitor unix:PATH` listens on PATH for the whole run. A client
(`socat - UNIX-CONNECT:PATH`, `nc -U PATH`) gets a banner and a prompt, and
types one command a line; the answers are those of QEMU's HMP:

    balloon N       the guest's memory target, N MiB (K, M, G, T suffixes as -m):
                    the balloon's num_pages becomes (RAM - N MiB) / 4 KiB
    info balloon    balloon: actual=<MiB>, the guest's memory less its balloon
    info pic        the 8259As' registers, and the IOAPIC's redirection table when
                    it is pyvmm's (the split irqchip; machine/irqchip_info.py)
    help            the commands
    quit            end the run (outcome quit, status 0), as QEMU's quit

Clients are served one after another; one that sends garbage, a line longer
than MAX_LINE bytes, nothing for ever, or goes away mid-line gets an error
line or is dropped, and pyvmm runs on. The socket file is removed when the
run ends.

Threads. The monitor has a thread of its own, and devices are only ever
touched from vCPU threads (VcpuGroup.post runs work in vCPU 0's thread
between two KVM_RUNs, as host input for the console is): `MachineControl`
posts each device access there and waits for it, a bounded time. The thread
blocks the process's signals, which stay the main thread's (--timeout,
Ctrl-C), and `close` wakes it through a pipe and joins it.

The pieces: `parse_monitor` reads the option, `Hmp` the commands (pure: no
socket, no machine; tested with a stand-in), `MachineControl` the machine's
side, `Monitor` the socket and the thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import select
import socket
import threading
import time

from pyvmm.closing import ClosesOnExit
from pyvmm.devices.virtio.balloon import BALLOON_PAGE_SIZE
from pyvmm.errors import Log, UsageError
from pyvmm.machine.outcome import quit_requested
from pyvmm.memory.size import MIB, format_size, parse_memory_size
from pyvmm.quiet_threads import signals_blocked

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Protocol

    from pyvmm.machine.builder import Machine

    class Control(Protocol):
        """What the commands need of a machine (MachineControl, or a stand-in in tests)."""

        ram_size: int
        has_balloon: bool

        def set_balloon_target(self, pages: int) -> None: ...
        def balloon_actual(self) -> int: ...
        def pic_info(self) -> str: ...
        def quit(self) -> None: ...


log = Log(__name__)

MAX_LINE = 4096  # bytes in a command line (QEMU's readline holds 4095)
READ_CHUNK = 4096
BANNER = "pyvmm monitor - type 'help' for more information\n"
PROMPT = "(pyvmm) "
# How long a command waits for vCPU 0 to run its device access, and for a
# client to take an answer, before giving up.
CALL_TIMEOUT = 2.0
SEND_TIMEOUT = 5.0
WAIT_SLICE = 0.05  # how often a waiting command looks whether the run ended
SUN_PATH_MAX = 107  # struct sockaddr_un's sun_path (108 bytes) less its NUL

# (usage, what it does): `help` prints them as QEMU's HMP does, "usage -- what".
COMMANDS = (
    ("balloon target", "request VM to change its memory allocation (in MB)"),
    ("help|? [cmd]", "show the help"),
    ("info balloon", "show balloon information"),
    ("info pic", "show PIC state"),
    ("quit|q", "quit the emulator: end the run (exit status 0)"),
)
INFO_COMMANDS = (("info balloon", "show balloon information"), ("info pic", "show PIC state"))

USAGE = "--monitor unix:PATH[,server][,nowait]"
# The kvm_pic_state fields `info pic` shows (KVM API doc 4.26, KVM_GET_IRQCHIP).
KVM_PIC_FIELDS = (
    "irr", "imr", "isr", "priority_add", "irq_base", "read_reg_select", "elcr",
    "special_fully_nested_mode",
)  # fmt: skip


def parse_monitor(text: str) -> str | None:
    """QEMU's `unix:PATH[,server][,nowait]` -> PATH; `none` -> None; UsageError otherwise.

    pyvmm is always the server and never waits for a client before the guest
    starts, so `server`, `nowait`, `server=on` and `wait=off` are taken and
    change nothing; `server=off` and `wait=on` are refused. A `,,` stands for
    a comma in PATH, as in QEMU.
    """
    if text == "none":
        return None
    backend, colon, rest = text.partition(":")
    if text == "unix":
        raise UsageError(f"--monitor {text}: the socket's path goes after 'unix:' ({USAGE})")
    if not colon or backend != "unix":
        raise UsageError(
            f"--monitor {text}: pyvmm's monitor listens on a UNIX socket only ({USAGE})"
        )
    path, *options = rest.replace(",,", "\0").split(",")
    path = path.replace("\0", ",")
    for option in options:
        if option in ("server", "nowait", "server=on", "wait=off"):
            continue
        if option in ("server=off", "wait", "wait=on", "nowait=off"):
            raise UsageError(
                f"--monitor {text}: {option}: pyvmm's monitor is always the server and "
                "never waits for a client before the guest starts"
            )
        raise UsageError(f"--monitor {text}: unknown option '{option}' ({USAGE})")
    if not path:
        raise UsageError(f"--monitor {text}: needs a PATH ({USAGE})")
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        raise UsageError(
            f"--monitor {text}: the path is {len(os.fsencode(path))} bytes, more than the "
            f"{SUN_PATH_MAX} a UNIX socket's address holds: choose a shorter one"
        )
    return path


class MonitorError(Exception):
    """A command that cannot be done: its answer is `Error: <message>`, as in QEMU's HMP."""


class Reply:
    """A command's answer (`text`: whole lines, maybe none) and whether it ends the run."""

    __slots__ = ("quit", "text")

    def __init__(self, text: str = "", quit: bool = False) -> None:
        self.text = text
        self.quit = quit

    def __repr__(self) -> str:
        return f"Reply({self.text!r}, quit={self.quit})"


class Hmp:
    """The commands: a line in, the answer out (`execute`). No socket, no thread."""

    def execute(self, line: str, control: Control | None) -> Reply:
        """Answer one command line; `control` None: no guest runs (not yet, or no more)."""
        words = line.split()
        if not words:
            return Reply()
        name, arguments = words[0], words[1:]
        try:
            if name in ("help", "?"):
                return Reply(self._help(arguments))
            if name in ("quit", "q"):
                self._no_arguments(name, arguments)
                return Reply(quit=True)
            if name == "info":
                return Reply(self._info(arguments, control))
            if name == "balloon":
                self._balloon(arguments, control)
                return Reply()
        except MonitorError as error:
            return Reply(f"Error: {error}\n")
        return Reply(f"unknown command: '{printable(name)}'\n")

    def _help(self, arguments: list[str]) -> str:
        rows = COMMANDS
        if arguments:
            wanted = arguments[0]
            if wanted == "info":
                rows = INFO_COMMANDS
            else:
                rows = tuple(row for row in COMMANDS if wanted in row[0].split()[0].split("|"))
            if not rows:
                return f"unknown command: '{printable(wanted)}'\n"
        return "".join(f"{usage} -- {what}\n" for usage, what in rows)

    @staticmethod
    def _no_arguments(name: str, arguments: list[str]) -> None:
        if arguments:
            raise MonitorError(f"{name}: extraneous characters at the end of line")

    def _info(self, arguments: list[str], control: Control | None) -> str:
        if not arguments:
            return "".join(f"{usage} -- {what}\n" for usage, what in INFO_COMMANDS)
        if arguments[0] == "pic":
            self._no_arguments("info pic", arguments[1:])
            if control is None:
                raise MonitorError("the guest is not running")
            return control.pic_info()
        if arguments[0] != "balloon":
            return f"unknown command: 'info {printable(arguments[0])}'\n"
        self._no_arguments("info balloon", arguments[1:])
        control = self._balloon_control(control)
        actual = control.balloon_actual()  # pages the driver says the balloon holds
        # QEMU's answer: RAM less the balloon, in MiB (hw/virtio/virtio-balloon.c,
        # virtio_balloon_stat).
        return f"balloon: actual={max(0, control.ram_size - actual * BALLOON_PAGE_SIZE) // MIB}\n"

    def _balloon(self, arguments: list[str], control: Control | None) -> None:
        if not arguments:
            raise MonitorError("balloon: missing the target, the guest's memory in MiB (balloon N)")
        self._no_arguments("balloon", arguments[1:])
        control = self._balloon_control(control)
        size = target_size(arguments[0], control.ram_size)
        # QEMU's virtio_balloon_to_target: num_pages = (RAM - target) / 4 KiB.
        control.set_balloon_target((control.ram_size - size) // BALLOON_PAGE_SIZE)

    @staticmethod
    def _balloon_control(control: Control | None) -> Control:
        if control is None:
            raise MonitorError("the guest is not running")
        if not control.has_balloon:
            raise MonitorError("No balloon device has been activated (pyvmm boot --balloon)")
        return control


_NUMBER = re.compile(r"^\s*-?\d+(\.\d+)?\s*[KMGT]?(i?B)?\s*$", re.IGNORECASE)


def target_size(text: str, ram_size: int) -> int:
    """`balloon`'s argument in bytes: MiB or a K/M/G/T suffix, 1 MiB to the guest's RAM."""
    shown = printable(text)
    try:
        size = parse_memory_size(text)
    except UsageError:
        if _NUMBER.match(text):  # 0, or negative
            size = 0
        else:
            raise MonitorError(
                f"invalid size '{shown}': give the guest's memory in MiB (balloon 64), "
                "or with a suffix K, M, G, T"
            ) from None
    if size < MIB:
        raise MonitorError(f"balloon {shown}: the guest needs at least 1 MiB")
    if size > ram_size:
        raise MonitorError(f"balloon {shown}: more than the guest's {format_size(ram_size)} of RAM")
    return size


def printable(text: str, limit: int = 64) -> str:
    """`text` safe to echo: control characters and undecodable bytes as '?', cut short."""
    cut = "".join(char if char.isprintable() and char != "\ufffd" else "?" for char in text[:limit])
    return cut + ("..." if len(text) > limit else "")


class MachineControl:
    """The monitor's hands on a built machine: every device access runs in vCPU 0's thread.

    `call(work)` posts `work` (VcpuGroup.post) and waits for its result, at
    most `timeout` seconds; MonitorError when the run ended or is ending, or
    when vCPU 0 did not take it in time (a debugger holds it, or a guest
    with --kernel-irqchip off that never exits).
    """

    def __init__(self, machine: Machine, timeout: float = CALL_TIMEOUT) -> None:
        self._group = machine.group
        self._timeout = timeout
        config = machine.config
        self.ram_size = config.ram_size if config is not None else machine.memory.size
        balloons = [slot.device for slot in machine.virtio if slot.kind == "balloon"]
        self._balloon: Any = balloons[0] if balloons else None
        self.has_balloon = self._balloon is not None
        self._machine = machine
        self._detached = threading.Event()

    def detach(self) -> None:
        """The run is over: calls waiting now, and every later one, fail at once."""
        self._detached.set()

    @property
    def running(self) -> bool:
        return not self._detached.is_set() and not self._group.loops[0].stopping

    def call(self, work: Callable[[], Any]) -> Any:
        """`work()` run in vCPU 0's thread; its result, or its exception raised here."""
        if not self.running:
            raise MonitorError("the guest is not running")
        done = threading.Event()
        result: list[Any] = []

        def in_vcpu() -> None:
            try:
                result.append((True, work()))
            except Exception as error:  # raised in the monitor's thread, not the vCPU's
                result.append((False, error))
            finally:
                done.set()

        self._group.post(in_vcpu)
        deadline = time.monotonic() + self._timeout
        while not done.wait(WAIT_SLICE):
            if not self.running:
                raise MonitorError("the guest is not running")
            if time.monotonic() > deadline:
                raise MonitorError(
                    f"vCPU 0 did not take the command within {self._timeout:g} s (held by "
                    "a debugger?): it is done when vCPU 0 runs again"
                )
        ok, value = result[0]
        if not ok:
            raise MonitorError(str(value))
        return value

    def set_balloon_target(self, pages: int) -> None:
        self.call(lambda: self._balloon.set_target(pages))

    def balloon_actual(self) -> int:
        return self.call(lambda: self._balloon.actual)

    def pic_info(self) -> str:
        """`info pic`: pyvmm's PICs and IOAPIC, or KVM's PICs (KVM_GET_IRQCHIP)."""
        from pyvmm.machine.irqchip_info import ioapic_lines, pic_line

        if not self.running:
            raise MonitorError("the guest is not running")
        machine = self._machine
        split = machine.split_irqchip
        if split is not None:  # its own lock: no need for vCPU 0's thread
            state = split.state()
            pics = state["pic"]
            return (
                pic_line(0, pics["master"])
                + pic_line(1, pics["slave"])
                + ioapic_lines(state["ioapic"])
            )
        if machine.config is not None and machine.config.irqchip_mode != "on":
            raise MonitorError("this machine has no PIC (--kernel-irqchip off)")
        from pyvmm._kvm import lib

        lines = []
        for index, chip_id in enumerate((lib.KVM_IRQCHIP_PIC_MASTER, lib.KVM_IRQCHIP_PIC_SLAVE)):
            pic = machine.vm.get_irqchip(chip_id).chip.pic  # a VM ioctl: from any thread
            lines.append(pic_line(index, {name: getattr(pic, name) for name in KVM_PIC_FIELDS}))
        return "".join(lines)

    def quit(self) -> None:
        self._group.request_stop(quit_requested("the monitor's quit"))


class _ClientGone(Exception):
    """The client went away, or stopped reading its answers."""


class Monitor(ClosesOnExit):
    """The socket at `path`, listening from `listen()`; served by a thread once `attach`ed.

    `attach(control)` (a MachineControl) starts serving, or points the
    monitor at a new machine (`pyvmm boot --reboot`); `detach()` when the
    run is over; `close()` (idempotent) ends the thread, closes the socket
    and removes its file, if it is still the one made here.
    """

    def __init__(self, path: str, spec: str | None = None) -> None:
        self.path = path
        self.spec = spec or f"unix:{path}"
        self.hmp = Hmp()
        self.quit_requested = False
        self._control: MachineControl | None = None
        self._lock = threading.Lock()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._identity: tuple[int, int] | None = None
        self._wake_read, self._wake_write = os.pipe2(os.O_CLOEXEC)

    @classmethod
    def listen(cls, path: str, spec: str | None = None) -> Monitor:
        """Bind and listen at `path` (nothing served yet); UsageError, one line, if not."""
        monitor = cls(path, spec)
        try:
            monitor._bind()
        except BaseException:
            monitor.close()
            raise
        return monitor

    def _bind(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(self.path)
        except OSError as error:
            listener.close()
            if error.errno == errno.EADDRINUSE and os.path.isdir(self.path):
                why = f"{self.path} is a directory: give the path of a socket to make"
            elif error.errno == errno.EADDRINUSE:
                why = (
                    f"{self.path} exists: remove it (a socket left by another run?) "
                    "or give another path"
                )
            else:
                why = f"cannot listen at {self.path}: {error.strerror or error}"
            raise UsageError(f"--monitor {self.spec}: {why}") from None
        self._socket = listener
        status = os.stat(self.path)
        self._identity = (status.st_dev, status.st_ino)
        self.path = os.path.abspath(self.path)  # removed at the end, wherever we are then
        listener.listen(4)
        listener.setblocking(False)
        log.info("monitor listening on %s", self.spec)

    def attach(self, control: MachineControl) -> None:
        """Serve `control`'s machine; the first call starts the thread."""
        with self._lock:
            previous, self._control = self._control, control
        if previous is not None:
            previous.detach()
        if self.quit_requested:  # quit came while no machine ran (between two boots)
            control.quit()
        if self._thread is None and self._socket is not None:
            self._thread = threading.Thread(target=self._serve, name="monitor", daemon=True)
            with signals_blocked():
                self._thread.start()

    def detach(self) -> None:
        with self._lock:
            control, self._control = self._control, None
        if control is not None:
            control.detach()

    def execute(self, line: str) -> Reply:
        """One command against the machine attached now (the thread's work; tests call it too)."""
        with self._lock:
            control = self._control
        reply = self.hmp.execute(line, control)
        if reply.quit:
            self.quit_requested = True
            if control is not None:
                control.quit()
        return reply

    # -- the thread ------------------------------------------------------------

    def _serve(self) -> None:
        """Accept one client at a time until `close` or `quit`."""
        assert self._socket is not None
        while not self._closing and not self.quit_requested:
            if not self._wait(self._socket, select.POLLIN, None):
                return
            try:
                client, _ = self._socket.accept()
            except (BlockingIOError, ConnectionAbortedError):
                continue
            except OSError as error:  # out of file descriptors: try again a little later
                log.warning("monitor: cannot accept a client: %s", error.strerror)
                time.sleep(0.1)
                continue
            log.debug("monitor: a client connected")
            with client:
                client.setblocking(False)
                with contextlib.suppress(_ClientGone):
                    self._talk(client)
            log.debug("monitor: the client left")

    def _talk(self, client: socket.socket) -> None:
        """Banner, prompt, then one answer and a prompt per line, until EOF or quit."""
        self._send(client, BANNER + PROMPT)
        pending = bytearray()
        overlong = False  # the line being read is past MAX_LINE: drop it up to its newline
        while True:
            if not self._wait(client, select.POLLIN, None):
                return
            try:
                data = client.recv(READ_CHUNK)
            except BlockingIOError:
                continue
            except OSError:
                return
            if not data:
                return  # a line without its newline is dropped with the client
            pending += data
            while (end := pending.find(b"\n")) >= 0:
                line = bytes(pending[:end])
                del pending[: end + 1]
                if overlong or len(line) > MAX_LINE:
                    overlong = False
                    self._send(client, f"Error: line longer than {MAX_LINE} bytes\n{PROMPT}")
                    continue
                reply = self.execute(line.decode("utf-8", "replace"))
                if reply.quit:
                    return  # QEMU says nothing either: the connection closes as pyvmm ends
                self._send(client, reply.text + PROMPT)
            if len(pending) > MAX_LINE:
                overlong = True
                pending.clear()

    def _send(self, client: socket.socket, text: str) -> None:
        data = memoryview(text.encode())
        deadline = time.monotonic() + SEND_TIMEOUT
        while data:
            try:
                sent = client.send(data, socket.MSG_NOSIGNAL)
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0 or not self._wait(client, select.POLLOUT, left):
                    raise _ClientGone from None
                continue
            except OSError:
                raise _ClientGone from None
            data = data[sent:]

    def _wait(self, sock: socket.socket, events: int, timeout: float | None) -> bool:
        """Whether `sock` is ready for `events` (or hung up); False on `close` or timeout."""
        poller = select.poll()
        poller.register(sock, events)
        poller.register(self._wake_read, select.POLLIN)
        ready = dict(poller.poll(None if timeout is None else int(timeout * 1000) + 1))
        if self._closing or self._wake_read in ready:
            return False
        return bool(ready)

    # -- the end ---------------------------------------------------------------

    def close(self) -> None:
        """End the thread, close the socket, remove its file (idempotent)."""
        if self._wake_write < 0:
            return
        self._closing = True
        self.detach()
        os.write(self._wake_write, b"x")
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
            self._remove_file()
        os.close(self._wake_read)
        os.close(self._wake_write)
        self._wake_write = -1

    def _remove_file(self) -> None:
        """Remove the socket file, unless someone replaced it meanwhile."""
        try:
            status = os.stat(self.path)
            if (status.st_dev, status.st_ino) == self._identity:
                os.unlink(self.path)
        except OSError:
            pass
