"""`--gdb tcp::PORT`: drive a running guest from a real gdb.

The vCPU runs in the main thread, as without gdb. A reader thread receives
what gdb sends and hands it over through a queue; a Ctrl-C byte also kicks
the vCPU out of KVM_RUN with a signal. One connection; when gdb goes away
the guest keeps running without it.

As in QEMU, `-S` waits for gdb before the first instruction; without it the
guest runs at once, and a gdb that connects later stops it where it is
(stop reply SIGINT, as after a Ctrl-C) and takes over.
"""

from __future__ import annotations

import errno
import queue
import signal
import socket
import threading
from typing import TYPE_CHECKING

from pyvmm.errors import Log, UsageError
from pyvmm.gdb.packets import Interrupt, PacketReader
from pyvmm.gdb.session import Exited, GdbSession, Interrupted, Killed, SessionState
from pyvmm.gdb.vcpu_target import VcpuTarget, host_reports_data_breakpoints, host_reports_int3
from pyvmm.machine.outcome import OutcomeKind, RunOutcome, interrupted
from pyvmm.machine.run_signals import stop_signals_raise

if TYPE_CHECKING:
    from pyvmm.machine.builder import Machine
    from pyvmm.machine.vcpu_loop import ExitObserver

log = Log(__name__)
KICK_SIGNAL = signal.SIGUSR1
_DISCONNECTED = object()


def parse_gdb_address(text: str) -> tuple[str, int]:
    """QEMU's `tcp::1234` or `tcp:HOST:PORT` (also plain `:1234` and `1234`)."""
    spec = text.removeprefix("tcp:")
    host, _, port_text = spec.rpartition(":")
    try:
        port = int(port_text)
    except ValueError:
        raise UsageError(f"--gdb: expected tcp::PORT, got '{text}'") from None
    if not 0 < port < 65536:
        raise UsageError(f"--gdb: port {port} is out of range")
    host = host.removeprefix("[").removesuffix("]")  # tcp:[::1]:1234
    return host or "127.0.0.1", port


UNPRIVILEGED_PORT_START = "/proc/sys/net/ipv4/ip_unprivileged_port_start"


def first_unprivileged_port() -> int:
    """The lowest port a non-root process may listen on (Linux: a sysctl, 1024 by default)."""
    try:
        with open(UNPRIVILEGED_PORT_START) as sysctl:
            return int(sysctl.read())
    except (OSError, ValueError):
        return 1024


def listen(address: tuple[str, int]) -> socket.socket:
    """A listening TCP socket on (host, port), or a UsageError that names the port and why not.

    Binding fails for reasons the user fixes on the command line: the port is in
    use (EADDRINUSE), is privileged (EACCES), the host is unknown (a resolver
    error) or is not an address of this machine (EADDRNOTAVAIL).
    """
    host, port = address
    where = f"--gdb tcp:{host}:{port}"
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as error:
        raise UsageError(f"{where}: unknown host '{host}' ({error.strerror})") from None
    try:
        return socket.create_server(address, family=family)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            why = f"port {port} is in use; choose another with --gdb tcp::PORT"
        elif error.errno == errno.EACCES:
            lowest = first_unprivileged_port()
            why = (
                f"port {port} is privileged (below {lowest}): run as root, or choose a port "
                f"from {lowest} up"
                if port < lowest
                else f"not allowed to listen on port {port} ({error.strerror})"
            )
        elif error.errno == errno.EADDRNOTAVAIL:
            why = f"{host} is not an address of this machine"
        else:
            why = f"cannot listen on port {port}: {error.strerror or error}"
        raise UsageError(f"{where}: {why}") from None


class GdbServer:
    def __init__(self, machine: Machine, address: tuple[str, int], kvm_path: str) -> None:
        self.machine = machine
        self.address = address
        self.target = VcpuTarget(
            machine,
            software_breakpoints=host_reports_int3(kvm_path),
            data_breakpoints=host_reports_data_breakpoints(kvm_path),
        )
        self.session = GdbSession(self.target)
        for loop in machine.group.loops:  # gdb owns the debug registers now
            if loop.syscall_repair is not None:
                loop.syscall_repair.stop()
                loop.syscall_repair = None
        self.events: queue.Queue[object] = queue.Queue()
        self.connection: socket.socket | None = None
        main = threading.main_thread().ident
        assert main is not None
        self._main_thread = main
        self._closing = False
        self.observer: ExitObserver | None = None

    def _kick(self) -> None:
        if self._closing:
            return
        self.machine.loop.pause()
        signal.pthread_kill(self._main_thread, KICK_SIGNAL)

    def _send(self, chunks: list[bytes]) -> None:
        if self.connection is None:
            return
        try:
            for chunk in chunks:
                if chunk:
                    self.connection.sendall(chunk)
        except OSError:
            self.connection = None

    def _reader(self, connection: socket.socket) -> None:
        reader = PacketReader()
        while True:
            try:
                data = connection.recv(65536)
            except OSError:
                data = b""
            if not data:
                self.events.put(_DISCONNECTED)
                self._kick()
                return
            for event in reader.feed(data):
                if isinstance(event, Interrupt):
                    self._kick()
                self.events.put(event)

    def serve(
        self, stop_at_start: bool, timeout: float | None, observer: ExitObserver | None = None
    ) -> RunOutcome:
        """Run the guest under gdb's control until the guest ends.

        With `stop_at_start` (-S) gdb must connect before the first instruction;
        without it the guest starts at once and gdb may connect at any time.

        `observer` (--trace, --stats) sees every exit of every run, as without gdb.
        A port that cannot be listened on is a UsageError (see `listen`). A
        SIGTERM or SIGHUP while no run is going on (waiting for gdb to connect,
        or for its next command) raises StoppedBySignal, as during the build,
        so that the caller cleans up and ends as every stop ends; during a run
        it ends the run (OutcomeKind.INTERRUPTED).
        """
        with stop_signals_raise():
            return self._serve(stop_at_start, timeout, observer)

    def _serve(
        self, stop_at_start: bool, timeout: float | None, observer: ExitObserver | None
    ) -> RunOutcome:
        listener = listen(self.address)
        self.observer = observer
        # The handler does nothing: the signal is only there to interrupt KVM_RUN.
        # It stays installed, so that a late kick can never kill the process.
        signal.signal(KICK_SIGNAL, lambda signum, frame: None)
        self.target.on_interrupt = self._kick
        try:
            host, port = listener.getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host  # an IPv6 address
            if not stop_at_start:
                log.warning("gdb can attach on tcp:%s:%d (target remote :%d)", shown, port, port)
                outcome = self._run_until_attached(listener, timeout)
                if outcome is not None:
                    return outcome
                return self._drive(timeout)
            log.warning("waiting for gdb on tcp:%s:%d (target remote :%d)", shown, port, port)
            self._attach(listener.accept()[0])
            return self._drive(timeout)
        finally:
            self._closing = True
            listener.close()
            if self.connection is not None:
                self.connection.close()

    def _attach(self, connection: socket.socket) -> None:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connection = connection
        threading.Thread(target=self._reader, args=(connection,), daemon=True).start()

    def _run_until_attached(
        self, listener: socket.socket, timeout: float | None
    ) -> RunOutcome | None:
        """Run without gdb until one connects (None: stopped for it) or the guest ends."""
        attached = threading.Event()

        def accept() -> None:
            try:
                connection, _ = listener.accept()
            except OSError:  # the listener closed: the run ended first
                return
            self._attach(connection)
            attached.set()
            self._kick()

        threading.Thread(target=accept, daemon=True).start()
        outcome = self.machine.run(timeout, observer=self.observer)
        if outcome.kind is not OutcomeKind.DEBUG or not attached.is_set():
            return outcome
        self.session.stopped(Interrupted())  # what `?` answers, as QEMU on attach
        return None

    def _drive(self, timeout: float | None) -> RunOutcome:
        target = self.target
        while True:
            if target.pending is None:
                event = self.events.get()
                if event is _DISCONNECTED:
                    self.connection = None
                    target.pending = "detach"  # gdb went away: the guest runs on
                else:
                    if isinstance(event, Interrupt):
                        # Served while stopped: it came before the resume, or its
                        # stop was already reported. Either way it must not stop
                        # the next run.
                        self.machine.loop.clear_pause()
                    self._send(self.session.handle(event))  # type: ignore[arg-type]
                continue
            action, target.pending = target.pending, None
            if action == "kill":
                target.disable()
                return interrupted("SIGKILL", signal.SIGKILL, "killed from gdb")
            if action == "detach":
                target.remove_all()
                target.disable()
                self._closing = True  # no more kicks: the guest runs on its own
                while True:
                    self.machine.loop.clear_pause()
                    outcome = self.machine.run(timeout, observer=self.observer)
                    if outcome.kind is not OutcomeKind.DEBUG:
                        return outcome
            # A Ctrl-C already queued behind this resume stops it at once (S02).
            outcome = self._resume(step=action == "step", timeout=timeout)
            if outcome is None:
                continue
            ended = (
                Exited(outcome.exit_status)
                if outcome.kind
                in (
                    OutcomeKind.HALTED,
                    OutcomeKind.DEBUG_EXIT,
                    OutcomeKind.POWER_OFF,
                    OutcomeKind.RESET,
                    OutcomeKind.SYSTEM_EVENT,
                    OutcomeKind.QUIT,  # the monitor's quit: an exit with status 0, as QEMU's
                )
                else Killed()
            )
            if self.session.state is SessionState.RUNNING:
                self._send([self.session.stopped(ended)])
            return outcome

    def _resume(self, step: bool, timeout: float | None) -> RunOutcome | None:
        """Run until a stop gdb must hear about (None) or the guest's end (its outcome)."""
        target = self.target
        snapshots = target.watch_snapshots()
        while True:
            target.apply(step=step or bool(snapshots))
            outcome = self.machine.run(timeout, observer=self.observer)
            if outcome.kind is not OutcomeKind.DEBUG:
                return outcome
            reason = target.stop_reason(outcome.debug, snapshots, user_step=step)  # type: ignore[arg-type]
            if reason is not None:
                self._send([self.session.stopped(reason)])
                return None
