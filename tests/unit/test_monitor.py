"""The monitor (--monitor unix:PATH): its option, its commands and its socket, without KVM.

The commands run against a stand-in for the machine (`FakeControl`); the
machine's side (`MachineControl`) against a stand-in vCPU group whose posted
work runs in a thread of its own, as vCPU 0's would; the socket is a real
UNIX socket in a temporary directory.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pyvmm.cli import main
from pyvmm.cli.arguments import normalize_arguments
from pyvmm.cli.parser import build_parser, check_combinations
from pyvmm.errors import UsageError
from pyvmm.machine import monitor as monitor_module
from pyvmm.machine.monitor import (
    BANNER,
    MAX_LINE,
    PROMPT,
    Hmp,
    MachineControl,
    Monitor,
    MonitorError,
    parse_monitor,
)
from pyvmm.machine.outcome import EXIT_HALTED, OutcomeKind, RunOutcome

MIB = 1 << 20
HELLO = "guests/hello.bin"


class FakeControl:
    """What the commands need of a machine, recorded."""

    def __init__(self, ram_size: int = 128 * MIB, balloon: bool = True) -> None:
        self.ram_size = ram_size
        self.has_balloon = balloon
        self.targets: list[int] = []
        self.actual = 0
        self.quits = 0
        self.detached = False

    def set_balloon_target(self, pages: int) -> None:
        self.targets.append(pages)

    def balloon_actual(self) -> int:
        return self.actual

    def pic_info(self) -> str:
        return "pic0: irr=00 imr=fb isr=00 hprio=0 irq_base=08 rr_sel=0 elcr=00 fnm=0\n"

    def quit(self) -> None:
        self.quits += 1

    def detach(self) -> None:
        self.detached = True


def answer(line: str, control: Any = None) -> str:
    return Hmp().execute(line, control if control is not None else FakeControl()).text


# --- the option --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ("unix:/run/vm/mon.sock", "/run/vm/mon.sock"),
        ("unix:mon.sock,server,nowait", "mon.sock"),  # QEMU's old spelling
        ("unix:mon.sock,server=on,wait=off", "mon.sock"),  # and its new one
        ("unix:a,,b,server", "a,b"),  # QEMU's ,, is a comma in PATH
        ("none", None),
    ],
)
def test_the_monitor_option_takes_qemus_unix_spelling(spec: str, path: str | None) -> None:
    assert parse_monitor(spec) == path


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("stdio", "listens on a UNIX socket only (--monitor unix:PATH[,server][,nowait])"),
        ("tcp::4444,server,nowait", "listens on a UNIX socket only"),
        ("telnet:localhost:4444", "listens on a UNIX socket only"),
        ("unix:", "needs a PATH"),
        ("unix", "the socket's path goes after 'unix:'"),
        ("unix:m.sock,server=off", "always the server and never waits"),
        ("unix:m.sock,server,wait", "always the server and never waits"),
        ("unix:m.sock,abstract=on", "unknown option 'abstract=on'"),
        ("unix:" + "d/" * 60, "more than the 107 a UNIX socket's address holds"),
    ],
)
def test_other_monitors_are_one_line(spec: str, says: str) -> None:
    with pytest.raises(UsageError) as error:
        parse_monitor(spec)
    message = str(error.value)
    assert message.startswith(f"--monitor {spec}: ") and "\n" not in message
    assert says in message


def parse(*argv: str) -> Any:
    parser = build_parser()
    args = parser.parse_args(normalize_arguments(parser.commands, list(argv)))
    check_combinations(args)
    return args


def test_the_cli_takes_the_monitor_in_pyvmms_and_qemus_spelling() -> None:
    assert parse("boot", "--monitor", "unix:m.sock", HELLO).monitor_path == "m.sock"
    assert parse("boot", "-monitor", "unix:m.sock,server,nowait", HELLO).monitor_path == "m.sock"
    assert parse("boot", "--monitor=unix:m.sock", HELLO).monitor_path == "m.sock"
    assert parse("boot", "-monitor", "none", HELLO).monitor_path is None
    assert parse("boot", HELLO).monitor_path is None


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["boot", "--monitor", "tcp::4444", HELLO],
            "pyvmm boot: --monitor tcp::4444: pyvmm's monitor listens on a UNIX socket only "
            "(--monitor unix:PATH[,server][,nowait])",
        ),
        (
            ["boot", "--monitor", "unix:a", "--monitor", "unix:b", HELLO],
            "pyvmm boot: --monitor: pyvmm has one monitor, not 2",
        ),
        (
            ["boot", "-monitor", "stdio", HELLO],
            "pyvmm boot: cannot use -monitor stdio: pyvmm's monitor is a human monitor (HMP) on "
            "a UNIX socket: -monitor unix:PATH[,server][,nowait], or --monitor unix:PATH; no "
            "other backend",
        ),
        (
            ["memmap", "-monitor", "unix:m.sock", HELLO],
            "pyvmm memmap: cannot use -monitor: pyvmm memmap has no --monitor (pyvmm boot has)",
        ),
    ],
)
def test_a_refused_monitor_is_one_line_and_status_2(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err == line + "\n"


def test_a_path_that_exists_is_refused_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # No KVM is opened: the socket is bound first, and this KVM does not exist anyway.
    monkeypatch.setenv("PYVMM_KVM_PATH", str(tmp_path / "no-kvm"))
    taken = tmp_path / "taken"
    taken.write_text("someone's file")
    assert main(["boot", "--monitor", f"unix:{taken}", HELLO]) == 2
    assert capsys.readouterr().err == (
        f"pyvmm boot: --monitor unix:{taken}: {taken} exists: remove it (a socket left by "
        "another run?) or give another path\n"
    )
    assert taken.read_text() == "someone's file"
    assert main(["boot", "--monitor", f"unix:{tmp_path}", HELLO]) == 2
    assert capsys.readouterr().err == (
        f"pyvmm boot: --monitor unix:{tmp_path}: {tmp_path} is a directory: give the path "
        "of a socket to make\n"
    )
    missing = tmp_path / "no-such-dir" / "m.sock"
    assert main(["boot", "--monitor", f"unix:{missing}", HELLO]) == 2
    assert capsys.readouterr().err == (
        f"pyvmm boot: --monitor unix:{missing}: cannot listen at {missing}: "
        "No such file or directory\n"
    )


def test_the_socket_file_goes_when_the_run_cannot_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.sock"
    assert main(["boot", "--monitor", f"unix:{path}", str(tmp_path / "absent.bin")]) == 2
    assert "absent.bin" in capsys.readouterr().err
    assert not path.exists()


# --- the commands --------------------------------------------------------------------------


def test_balloon_sets_num_pages_as_qemu_does() -> None:
    """QEMU's virtio_balloon_to_target: num_pages = (RAM - target) / 4 KiB."""
    control = FakeControl(ram_size=128 * MIB)
    for line in ("balloon 64", "balloon 128", "balloon 1", "balloon 96M", "balloon 65536K"):
        assert answer(line, control) == ""
    assert control.targets == [16384, 0, 32512, 8192, 16384]
    big = FakeControl(ram_size=4 << 30)
    assert answer("balloon 1G", big) == "" and big.targets == [3 << 18]


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("balloon 129", "Error: balloon 129: more than the guest's 128 MiB of RAM"),
        ("balloon 1T", "Error: balloon 1T: more than the guest's 128 MiB of RAM"),
        ("balloon 0", "Error: balloon 0: the guest needs at least 1 MiB"),
        ("balloon -5", "Error: balloon -5: the guest needs at least 1 MiB"),
        ("balloon 512K", "Error: balloon 512K: the guest needs at least 1 MiB"),
        (
            "balloon lots",
            "Error: invalid size 'lots': give the guest's memory in MiB (balloon 64), "
            "or with a suffix K, M, G, T",
        ),
        ("balloon", "Error: balloon: missing the target, the guest's memory in MiB (balloon N)"),
        ("balloon 64 32", "Error: balloon: extraneous characters at the end of line"),
    ],
)
def test_a_refused_balloon_is_one_line_and_changes_nothing(line: str, says: str) -> None:
    control = FakeControl()
    assert answer(line, control) == says + "\n"
    assert control.targets == []


def test_without_a_balloon_or_a_guest_the_answer_says_so() -> None:
    no_balloon = FakeControl(balloon=False)
    for line in ("balloon 64", "info balloon"):
        assert answer(line, no_balloon) == (
            "Error: No balloon device has been activated (pyvmm boot --balloon)\n"
        )
        assert Hmp().execute(line, None).text == "Error: the guest is not running\n"


def test_info_balloon_is_the_guests_memory_less_its_balloon() -> None:
    control = FakeControl(ram_size=128 * MIB)
    assert answer("info balloon", control) == "balloon: actual=128\n"
    control.actual = 16384  # pages, as the driver writes `actual`
    assert answer("info balloon", control) == "balloon: actual=64\n"
    control.actual = 0xFFFF_FFFF  # a driver's nonsense never reads as a negative size
    assert answer("info balloon", control) == "balloon: actual=0\n"
    assert answer("info", control) == (
        "info balloon -- show balloon information\ninfo pic -- show PIC state\n"
    )
    assert answer("info cpus", control) == "unknown command: 'info cpus'\n"
    assert answer("info balloon now", control).startswith("Error: info balloon: extraneous")


def test_help_lists_the_commands_as_qemu_does() -> None:
    text = answer("help")
    assert text.splitlines() == [
        "balloon target -- request VM to change its memory allocation (in MB)",
        "help|? [cmd] -- show the help",
        "info balloon -- show balloon information",
        "info pic -- show PIC state",
        "quit|q -- quit the emulator: end the run (exit status 0)",
    ]
    assert answer("?") == text
    assert answer("help quit") == "quit|q -- quit the emulator: end the run (exit status 0)\n"
    assert answer("help q") == answer("help quit")
    assert answer("help frob") == "unknown command: 'frob'\n"


def test_info_pic_asks_the_machine() -> None:
    assert answer("info pic").startswith("pic0: irr=00 imr=fb isr=00")
    assert Hmp().execute("info pic", None).text == "Error: the guest is not running\n"
    assert answer("info pic 1").startswith("Error: info pic: extraneous")


def test_quit_and_the_rest() -> None:
    reply = Hmp().execute("quit", FakeControl())
    assert (reply.text, reply.quit) == ("", True)
    assert Hmp().execute("q", None).quit  # no guest running: still ends the run
    refused = Hmp().execute("quit now", FakeControl())
    assert not refused.quit and refused.text.startswith("Error: quit: extraneous")
    assert answer("") == answer("   ") == ""
    assert answer("frob 1 2") == "unknown command: 'frob'\n"
    # What is echoed is cut short, and control characters do not reach the terminal.
    assert answer("\x1b[2J\x07") == "unknown command: '?[2J?'\n"
    assert answer("x" * 100) == f"unknown command: '{'x' * 64}...'\n"


# --- the machine's side: device work in vCPU 0's thread ----------------------------------


class FakeGroup:
    """A vCPU group whose vCPU 0 is a thread that runs posted work (or never does)."""

    def __init__(self, runs_posted: bool = True) -> None:
        self.loops = [SimpleNamespace(stopping=False)]
        self.stops: list[RunOutcome] = []
        self.posted: list[Any] = []
        self.runs_posted = runs_posted
        self.threads: list[str] = []

    def post(self, work: Any) -> None:
        self.posted.append(work)
        if self.runs_posted:
            thread = threading.Thread(target=work, name="vcpu0")
            thread.start()
            thread.join()

    def request_stop(self, outcome: RunOutcome) -> None:
        self.stops.append(outcome)
        self.loops[0].stopping = True


class FakeBalloon:
    def __init__(self, group: FakeGroup) -> None:
        self.group = group
        self.actual = 0

    def set_target(self, pages: int) -> None:
        self.group.threads.append(threading.current_thread().name)
        if pages < 0:
            raise ValueError("a bad target")
        self.actual = pages


def fake_machine(group: FakeGroup, balloon: bool = True) -> Any:
    slots = [SimpleNamespace(kind="balloon", device=FakeBalloon(group))] if balloon else []
    return SimpleNamespace(
        group=group, config=SimpleNamespace(ram_size=128 * MIB), virtio=slots, memory=None
    )


def test_device_work_runs_in_vcpu_0s_thread_and_its_result_comes_back() -> None:
    group = FakeGroup()
    control = MachineControl(fake_machine(group))
    assert (control.ram_size, control.has_balloon) == (128 * MIB, True)
    control.set_balloon_target(100)
    assert group.threads == ["vcpu0"]
    assert control.balloon_actual() == 100
    with pytest.raises(MonitorError, match="a bad target"):  # raised here, not in the vCPU
        control.set_balloon_target(-1)
    assert not MachineControl(fake_machine(group, balloon=False)).has_balloon


def test_a_command_never_waits_for_ever() -> None:
    idle = FakeGroup(runs_posted=False)  # a debugger holds vCPU 0, say
    control = MachineControl(fake_machine(idle), timeout=0.2)
    started = time.monotonic()
    with pytest.raises(MonitorError, match=r"vCPU 0 did not take the command within 0\.2 s"):
        control.balloon_actual()
    assert time.monotonic() - started < 2
    idle.loops[0].stopping = True  # the run is ending: no wait at all
    with pytest.raises(MonitorError, match="the guest is not running"):
        control.balloon_actual()
    fresh = MachineControl(fake_machine(FakeGroup()))
    fresh.detach()
    with pytest.raises(MonitorError, match="the guest is not running"):
        fresh.balloon_actual()


def test_quit_stops_the_run_with_status_0() -> None:
    group = FakeGroup()
    MachineControl(fake_machine(group)).quit()
    [outcome] = group.stops
    assert (outcome.kind, outcome.exit_status) == (OutcomeKind.QUIT, EXIT_HALTED)
    assert not outcome.kind.is_abnormal
    assert outcome.message == "the monitor's quit ended the run"


# --- the socket -----------------------------------------------------------------------------


class Client:
    """A monitor client: reads the banner, then asks one line at a time."""

    def __init__(self, path: Path, read_banner: bool = True) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(str(path))
        self.pending = b""
        self.banner = self.until_prompt() if read_banner else ""

    def until_prompt(self) -> str:
        """What the monitor said up to its next prompt."""
        prompt = PROMPT.encode()
        while prompt not in self.pending:
            chunk = self.sock.recv(65536)
            assert chunk, f"the monitor closed the connection after {self.pending!r}"
            self.pending += chunk
        said, _, self.pending = self.pending.partition(prompt)
        return said.decode()

    def ask(self, line: str | bytes) -> str:
        self.sock.sendall((line if isinstance(line, bytes) else line.encode()) + b"\n")
        return self.until_prompt()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def served(tmp_path: Path) -> Any:
    """(monitor, control, socket path): a monitor serving a FakeControl."""
    path = tmp_path / "m.sock"
    monitor = Monitor.listen(str(path))
    control = FakeControl()
    monitor.attach(control)  # type: ignore[arg-type]
    yield monitor, control, path
    monitor.close()


def test_a_client_gets_the_banner_and_qemus_answers(served: Any) -> None:
    _, control, path = served
    client = Client(path)
    assert client.banner == BANNER
    assert client.ask("info balloon") == "balloon: actual=128\n"
    assert client.ask("balloon 64") == ""
    assert client.ask("balloon 64\r") == ""  # a line from telnet or a terminal: CRLF
    assert control.targets == [16384, 16384]
    assert client.ask("frob") == "unknown command: 'frob'\n"
    client.close()


def test_garbage_huge_lines_and_clients_that_leave_mid_line_change_nothing(served: Any) -> None:
    _, control, path = served
    client = Client(path)
    assert client.ask(b"\xff\xfe\x00\x01garbage") == "unknown command: '????garbage'\n"
    # A line past MAX_LINE is refused as a whole, however it arrives, and the next one works.
    client.sock.sendall(b"balloon 64 " + b"9" * (4 * MAX_LINE))
    client.sock.sendall(b"9" * (4 * MAX_LINE) + b"\nhelp\n")
    assert client.until_prompt() == f"Error: line longer than {MAX_LINE} bytes\n"
    assert client.until_prompt().startswith("balloon target -- ")
    client.sock.sendall(b"balloon 32")  # and no newline: gone mid-line
    client.close()
    # The next client is served as the first was; the half line was never run.
    second = Client(path)
    assert second.ask("info balloon") == "balloon: actual=128\n"
    assert control.targets == [] and control.quits == 0
    second.close()


def test_clients_are_served_one_after_another(served: Any) -> None:
    _, control, path = served
    first = Client(path)
    waiting = Client(path, read_banner=False)  # connected, in the backlog meanwhile
    assert first.ask("balloon 100") == ""
    first.close()
    assert waiting.until_prompt() == BANNER
    assert waiting.ask("balloon 50") == ""
    waiting.close()
    for _ in range(3):
        Client(path).close()  # come and go without a word
    assert control.targets == [7168, 19968]


def test_a_client_that_never_reads_is_dropped(served: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    *_, path = served
    monkeypatch.setattr(monitor_module, "SEND_TIMEOUT", 0.3)
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.connect(str(path))
    stuck.setblocking(False)
    sent, started = 0, time.monotonic()
    while time.monotonic() - started < 5:  # help lines until neither side takes more
        try:
            sent += stuck.send(b"help\n" * 1000)
        except BlockingIOError:
            time.sleep(0.05)
            try:
                sent += stuck.send(b"help\n" * 1000)
            except BlockingIOError:
                break
        except OSError:
            break  # dropped already
    assert sent > 0
    time.sleep(0.5)  # the monitor gives up on it after SEND_TIMEOUT
    client = Client(path)
    assert client.ask("info balloon") == "balloon: actual=128\n"
    client.close()
    stuck.close()


def test_quit_ends_the_run_and_closes_the_connection(served: Any) -> None:
    monitor, control, path = served
    client = Client(path)
    client.sock.sendall(b"quit\n")
    assert client.sock.recv(100) == b""  # no answer: QEMU has none, pyvmm ends
    assert control.quits == 1 and monitor.quit_requested
    client.close()


def test_a_quit_between_two_machines_stops_the_next(tmp_path: Path) -> None:
    """--reboot: the monitor follows each new machine, and a quit meanwhile is not lost."""
    monitor = Monitor.listen(str(tmp_path / "m.sock"))
    first, second = FakeControl(), FakeControl()
    try:
        monitor.attach(first)  # type: ignore[arg-type]
        monitor.attach(second)  # type: ignore[arg-type]
        assert first.detached and not second.detached
        monitor.detach()
        assert monitor.execute("quit").quit
        third = FakeControl()
        monitor.attach(third)  # type: ignore[arg-type]
        assert third.quits == 1
    finally:
        monitor.close()


def test_close_is_prompt_and_removes_only_its_own_file(tmp_path: Path) -> None:
    path = tmp_path / "m.sock"
    monitor = Monitor.listen(str(path))
    group = FakeGroup(runs_posted=False)
    monitor.attach(MachineControl(fake_machine(group), timeout=30))
    client = Client(path)
    client.sock.sendall(b"info balloon\n")  # waits for a vCPU that never takes it
    time.sleep(0.2)
    started = time.monotonic()
    monitor.close()
    assert time.monotonic() - started < 1
    assert not path.exists()
    monitor.close()  # idempotent
    client.close()
    # A file put in the socket's place meanwhile is someone else's: it stays.
    other = Monitor.listen(str(path))
    path.unlink()
    path.write_text("not ours")
    other.close()
    assert path.read_text() == "not ours"


def test_an_unattached_monitor_only_listens(tmp_path: Path) -> None:
    path = tmp_path / "m.sock"
    with Monitor.listen(str(path)) as monitor:
        assert path.exists() and monitor.execute("balloon 64").text == (
            "Error: the guest is not running\n"
        )
    assert not path.exists()
