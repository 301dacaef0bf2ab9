"""The gdb command state machine: packets in, replies out, calls on a `Target`.

`GdbSession` holds no socket, thread or vCPU. The VMM feeds it what gdb sent
(`receive(bytes)` or `handle(event)`), sends back the bytes it returns, and
reports guest stops with `stopped(reason)`. Everything about the vCPU goes
through the `Target` protocol, so the whole conversation is testable with an
in-memory fake.

States (all-stop mode, one thread, thread id 1):

- ``stopped``: the vCPU is halted; every command is served.
- ``running``: after ``c``/``s``/``vCont``. Only the Ctrl-C byte means
  something (it calls `Target.interrupt`); any packet is acknowledged (in ack
  mode) and then *ignored*, because gdb in all-stop mode sends none until it
  has our stop reply, so one arriving is noise, not a command to queue.
- ``detached``/``exited``: after ``D``, ``k``, or a ``W``/``X`` stop. Queries
  still answer; commands that need the guest answer ``E03``.

Error replies. The protocol leaves the number free and gdb only checks for the
``E``; like QEMU's stub we use the Linux errno, in decimal digits:

- ``E22`` (EINVAL): malformed arguments (bad hex, missing field, wrong
  length), a register number outside the layout, a thread other than 1.
- ``E14`` (EFAULT): `MemoryAccessError` from the target (unmapped memory).
- ``E28`` (ENOSPC): `NoFreeDebugRegister`, all of DR0-DR3 are taken.
- ``E05`` (EIO): any other `PyvmmError` the target raised (e.g. KVM refusing
  a register value); the VMM keeps running.
- ``E03`` (ESRCH): a command that needs the guest after detach/exit/kill.
- ``E00``: a bad ``qXfer:features:read`` request, as the manual specifies.

An empty reply means "not supported": any unknown packet, a ``Z``/``z`` type
outside 0-4, or a breakpoint type the target declines (`insert_breakpoint`
returned False).

Not thread-safe: the VMM must serialize `receive`/`handle`/`stopped`. Target
calls must not block; `resume`, `detach` and `interrupt` only *schedule* the
vCPU, and the VMM sends the returned bytes before letting it run.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from pyvmm.errors import Log, PyvmmError
from pyvmm.gdb import GdbError, MemoryAccessError, NoFreeDebugRegister
from pyvmm.gdb.packets import (
    PACKET_SIZE_LIMIT,
    AckEvent,
    BadPacket,
    Event,
    Interrupt,
    Packet,
    PacketReader,
    encode_packet,
)
from pyvmm.gdb.registers import (
    PC_SOURCE,
    CpuView,
    Register,
    RegisterFile,
    decode_register,
    encode_register,
    layout_for,
    merge_register,
    pack_registers,
    unpack_registers,
)
from pyvmm.gdb.target_xml import ANNEX, read_chunk, render_target_xml

logger = Log(__name__)

ERROR_INVALID = b"E22"
ERROR_FAULT = b"E14"
ERROR_NO_SPACE = b"E28"
ERROR_IO = b"E05"
ERROR_NO_PROCESS = b"E03"
ERROR_XFER = b"E00"
OK = b"OK"

THREAD_ID = 1
SIGINT = 2
SIGTRAP = 5
SIGKILL = 9

# Largest `m` read served in one reply: its hex must fit in PacketSize.
MAX_MEMORY_READ = PACKET_SIZE_LIMIT // 2 - 16
# Memory is retried page by page after a fault so gdb gets the readable prefix.
PAGE_SIZE = 0x1000
ADDRESS_LIMIT = 1 << 64

SUPPORTED_FEATURES = (
    f"PacketSize={PACKET_SIZE_LIMIT:x};qXfer:features:read+;swbreak+;hwbreak+;QStartNoAckMode+"
).encode()
# gdb only uses vCont when c, C, s and S are all listed (remote_vcont_probe);
# C and S are accepted and their signal ignored: a VM has no signal to deliver.
VCONT_ACTIONS = b"vCont;c;C;s;S"


class SessionState(enum.Enum):
    STOPPED = "stopped"
    RUNNING = "running"
    DETACHED = "detached"
    EXITED = "exited"


class BreakpointKind(enum.IntEnum):
    """The ``Z``/``z`` type field, passed to `Target.insert_breakpoint` as `kind`."""

    SOFTWARE = 0
    HARDWARE = 1
    WRITE_WATCH = 2
    READ_WATCH = 3
    ACCESS_WATCH = 4


# --- stop reasons ---------------------------------------------------------


@dataclass(frozen=True)
class Breakpoint:
    """The vCPU hit a breakpoint. `kind` says which, when the VMM knows.

    With "sw" the reply carries ``swbreak:`` (if gdb asked for it), which tells
    gdb that the PC already points *at* the int3, not after it: the VMM must
    report it that way (KVM's #BP exit does).
    """

    kind: Literal["sw", "hw"] | None = None


@dataclass(frozen=True)
class Stepped:
    """A single step (``s``) completed."""


@dataclass(frozen=True)
class Watchpoint:
    """A data watchpoint fired on the access to `gva`."""

    kind: Literal["watch", "rwatch", "awatch"]
    gva: int


@dataclass(frozen=True)
class Interrupted:
    """The vCPU stopped because gdb sent Ctrl-C (`Target.interrupt`)."""


@dataclass(frozen=True)
class Exited:
    """The guest ended on its own (debug-exit port, shutdown); `code` is 0-255."""

    code: int


@dataclass(frozen=True)
class Killed:
    """The guest was terminated by the VMM rather than exiting."""

    signal: int = SIGKILL


StopReason = Breakpoint | Stepped | Watchpoint | Interrupted | Exited | Killed


def stop_reply(reason: StopReason, gdb_features: frozenset[str] = frozenset()) -> bytes:
    """The stop-reply payload for `reason` (``T05thread:1;``, ``S02``, ``W00``...).

    `gdb_features` are the ``+`` features gdb sent in qSupported; the optional
    ``swbreak``/``hwbreak`` reasons are only sent to a gdb that announced them.
    """
    thread = b"thread:%x;" % THREAD_ID
    if isinstance(reason, Breakpoint):
        detail = b""
        if reason.kind == "sw" and "swbreak" in gdb_features:
            detail = b"swbreak:;"
        elif reason.kind == "hw" and "hwbreak" in gdb_features:
            detail = b"hwbreak:;"
        return b"T%02x" % SIGTRAP + detail + thread
    if isinstance(reason, Stepped):
        return b"T%02x" % SIGTRAP + thread
    if isinstance(reason, Watchpoint):
        return b"T%02x%s:%x;" % (SIGTRAP, reason.kind.encode(), reason.gva) + thread
    if isinstance(reason, Interrupted):
        return b"S%02x" % SIGINT
    if isinstance(reason, Exited):
        return b"W%02x" % (reason.code & 0xFF)
    return b"X%02x" % (reason.signal & 0xFF)


# --- the target -------------------------------------------------------------


class Target(Protocol):
    """What the session needs from the VMM, for the one debugged vCPU.

    Addresses are guest-virtual (`gva`): gdb sees what the guest sees.
    Breakpoint insertion and removal must be idempotent (gdb may resend them).
    """

    def registers(self) -> dict[str, int]:
        """All register values by 64-bit name: rax.., rip, eflags, cs.., cr0.., efer."""
        ...

    def set_register(self, name: str, value: int) -> None:
        """Write one register (a key of `registers()`)."""
        ...

    def read_memory(self, gva: int, size: int) -> bytes:
        """`size` bytes at `gva`; raise `MemoryAccessError` if any is unmapped."""
        ...

    def write_memory(self, gva: int, data: bytes) -> None:
        """Write `data` at `gva`; raise `MemoryAccessError` if unmapped."""
        ...

    def insert_breakpoint(self, kind: int, gva: int, length: int) -> bool:
        """Plant a `BreakpointKind`; False if that kind is unsupported.

        Raise `NoFreeDebugRegister` when a hardware slot is needed and none is free.
        """
        ...

    def remove_breakpoint(self, kind: int, gva: int, length: int) -> bool:
        """Undo `insert_breakpoint`; False if that kind is unsupported."""
        ...

    def resume(self, step: bool) -> None:
        """Let the vCPU run (one instruction if `step`); report via `stopped`."""
        ...

    def interrupt(self) -> None:
        """Stop the running vCPU soon; the VMM then reports `Interrupted()`."""
        ...

    def detach(self) -> None:
        """Drop all debug state (breakpoints, single-step) and let the guest run."""
        ...

    def kill(self) -> None:
        """Terminate the guest."""
        ...

    def cpu_view(self) -> CpuView:
        """The vCPU's mode, which picks the register layout gdb is given."""
        ...


# --- argument parsing ---------------------------------------------------------


class _BadArguments(GdbError):
    """Internal: the packet's arguments do not parse. Answered with E22."""


_HEX = re.compile(rb"[0-9a-fA-F]+")
# Addresses and lengths are at most 64 bits: 16 hex digits.
_MAX_HEX_DIGITS = 16


def _hex_int(text: bytes) -> int:
    if len(text) > _MAX_HEX_DIGITS or not _HEX.fullmatch(text):
        raise _BadArguments(f"not a hex number: {text[:32]!r}")
    return int(text, 16)


def _hex_bytes(text: bytes) -> bytes:
    if len(text) % 2 or (text and not _HEX.fullmatch(text)):
        raise _BadArguments("bad hex data")
    return bytes.fromhex(text.decode("ascii"))


def _split(text: bytes, separator: bytes, count: int) -> list[bytes]:
    parts = text.split(separator, count - 1)
    if len(parts) != count:
        raise _BadArguments(f"expected {count} fields in {text[:32]!r}")
    return parts


def _address_range(text: bytes) -> tuple[int, int]:
    """``addr,length`` -> (gva, size), rejecting ranges past 2**64."""
    address, length = (_hex_int(field) for field in _split(text, b",", 2))
    if address + length > ADDRESS_LIMIT:
        raise _BadArguments("range wraps past 2**64")
    return address, length


def _thread_ok(text: bytes) -> bool:
    """Thread ids gdb may name for our single thread: -1 (all), 0 (any), 1."""
    return text == b"-1" or _hex_int(text) in (0, THREAD_ID)


# --- the session --------------------------------------------------------------

_Reply = bytes | None  # None: nothing to send besides the ack


class GdbSession:
    """One gdb connection: the protocol state machine over one `Target`."""

    def __init__(self, target: Target) -> None:
        self._target = target
        self._reader = PacketReader()
        self._state = SessionState.STOPPED
        self._ack_mode = True
        self._last_packet: bytes | None = None
        self._last_stop = stop_reply(Stepped())
        self._gdb_features: frozenset[str] = frozenset()
        self._layout: RegisterFile | None = None
        self._target_xml: bytes | None = None
        self.ignored_packets = 0
        self.bad_packets = 0
        self._commands: dict[int, Callable[[bytes], _Reply]] = {
            ord("?"): self._cmd_stop_reason,
            ord("g"): self._cmd_read_registers,
            ord("G"): self._cmd_write_registers,
            ord("p"): self._cmd_read_register,
            ord("P"): self._cmd_write_register,
            ord("m"): self._cmd_read_memory,
            ord("M"): self._cmd_write_memory,
            ord("X"): self._cmd_write_memory_binary,
            ord("Z"): self._cmd_insert_breakpoint,
            ord("z"): self._cmd_remove_breakpoint,
            ord("c"): self._cmd_continue,
            ord("C"): self._cmd_continue_signal,
            ord("s"): self._cmd_step,
            ord("S"): self._cmd_step_signal,
            ord("H"): self._cmd_set_thread,
            ord("T"): self._cmd_thread_alive,
            ord("D"): self._cmd_detach,
            ord("k"): self._cmd_kill,
            ord("q"): self._cmd_query,
            ord("Q"): self._cmd_set,
            ord("v"): self._cmd_v,
        }

    # -- public API --

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def ack_mode(self) -> bool:
        """False once gdb and we agreed on QStartNoAckMode."""
        return self._ack_mode

    @property
    def layout(self) -> RegisterFile:
        """The register layout of this connection, fixed at first use.

        gdb reads target.xml once per connection, so the layout cannot follow
        later mode switches; reconnect to see e.g. 64-bit registers after the
        guest entered long mode.
        """
        if self._layout is None:
            self._layout = layout_for(self._target.cpu_view())
        return self._layout

    def receive(self, data: bytes) -> list[bytes]:
        """Feed raw bytes from gdb; return the bytes to send back, in order."""
        out: list[bytes] = []
        for event in self._reader.feed(data):
            out.extend(self.handle(event))
        return out

    def handle(self, event: Event) -> list[bytes]:
        """React to one reader event; return the bytes to send back, in order."""
        if isinstance(event, Packet):
            return self._on_packet(event.payload)
        if isinstance(event, Interrupt):
            return self._on_interrupt()
        if isinstance(event, AckEvent):
            return self._on_ack(event.ok)
        return self._on_bad_packet(event)

    def stopped(self, reason: StopReason) -> bytes:
        """The VMM reports that the vCPU stopped; returns the packet to send gdb.

        Only a running session has a gdb waiting for a stop reply. Otherwise
        the reason is only recorded (for ``?``) and b"" is returned.
        """
        reply = stop_reply(reason, self._gdb_features)
        was_running = self._state is SessionState.RUNNING
        if self._state in (SessionState.STOPPED, SessionState.RUNNING):
            self._last_stop = reply
            ends = isinstance(reason, Exited | Killed)
            self._state = SessionState.EXITED if ends else SessionState.STOPPED
        if not was_running:
            return b""
        return self._send(reply)

    # -- events --

    def _send(self, payload: bytes) -> bytes:
        packet = encode_packet(payload)
        self._last_packet = packet
        return packet

    def _on_packet(self, payload: bytes) -> list[bytes]:
        out = [b"+"] if self._ack_mode else []
        if self._state is SessionState.RUNNING:
            self.ignored_packets += 1
            logger.debug("gdb packet while running ignored: %r", payload[:32])
            return out
        reply = self._dispatch(payload)
        if reply is not None:
            out.append(self._send(reply))
        return out

    def _on_interrupt(self) -> list[bytes]:
        if self._state is SessionState.RUNNING:
            self._target.interrupt()
        return []

    def _on_ack(self, ok: bool) -> list[bytes]:
        if ok or not self._ack_mode or self._last_packet is None:
            return []
        return [self._last_packet]

    def _on_bad_packet(self, event: BadPacket) -> list[bytes]:
        self.bad_packets += 1
        logger.debug("bad gdb packet: %s", event.reason)
        return [b"-"] if self._ack_mode else []

    def _dispatch(self, payload: bytes) -> _Reply:
        if not payload:
            return b""
        command = self._commands.get(payload[0])
        if command is None:
            return b""
        try:
            return command(payload[1:])
        except _BadArguments as error:
            logger.debug("gdb packet %r: %s", payload[:32], error)
            return ERROR_INVALID
        except MemoryAccessError as error:
            logger.debug("gdb packet %r: %s", payload[:32], error)
            return ERROR_FAULT
        except NoFreeDebugRegister:
            return ERROR_NO_SPACE
        except PyvmmError as error:
            logger.warning("gdb packet %r failed: %s", payload[:32], error)
            return ERROR_IO

    # -- registers --

    def _cmd_stop_reason(self, _args: bytes) -> _Reply:
        return self._last_stop

    def _cmd_read_registers(self, _args: bytes) -> _Reply:
        if self._state is not SessionState.STOPPED:
            return ERROR_NO_PROCESS
        return pack_registers(self._target.registers(), self.layout).hex().encode()

    def _cmd_write_registers(self, args: bytes) -> _Reply:
        if self._state is not SessionState.STOPPED:
            return ERROR_NO_PROCESS
        data = _hex_bytes(args)
        if len(data) != self.layout.size:
            raise _BadArguments(f"G carries {len(data)} bytes, layout has {self.layout.size}")
        new = unpack_registers(data, self.layout)
        current = self._target.registers()
        for reg in self.layout.registers:
            self._write_register(reg, new[reg.name], current)
        return OK

    def _register(self, text: bytes) -> Register:
        number = _hex_int(text)
        if number >= len(self.layout):
            raise _BadArguments(f"no register {number}")
        return self.layout.registers[number]

    def _cmd_read_register(self, args: bytes) -> _Reply:
        if self._state is not SessionState.STOPPED:
            return ERROR_NO_PROCESS
        reg = self._register(args)
        value = self._target.registers().get(reg.source, 0)
        return encode_register(reg, value).hex().encode()

    def _cmd_write_register(self, args: bytes) -> _Reply:
        if self._state is not SessionState.STOPPED:
            return ERROR_NO_PROCESS
        number, value_hex = _split(args, b"=", 2)
        reg = self._register(number)
        data = _hex_bytes(value_hex)
        if len(data) != reg.size:
            raise _BadArguments(f"{reg.name} takes {reg.size} bytes, got {len(data)}")
        self._write_register(reg, decode_register(reg, data), self._target.registers())
        return OK

    def _write_register(self, reg: Register, value: int, current: Mapping[str, int]) -> None:
        """Write `reg` through its source; drop writes to registers the VMM lacks."""
        if reg.source not in current:
            return
        merged = merge_register(reg, current[reg.source], value)
        if merged != current[reg.source]:
            self._target.set_register(reg.source, merged)

    # -- memory --

    def _cmd_read_memory(self, args: bytes) -> _Reply:
        if self._state is not SessionState.STOPPED:
            return ERROR_NO_PROCESS
        gva, size = _address_range(args)
        data = self._read_prefix(gva, min(size, MAX_MEMORY_READ))
        if size and not data:
            return ERROR_FAULT
        return data.hex().encode()

    def _read_prefix(self, gva: int, size: int) -> bytes:
        """The readable prefix of [gva, gva+size): gdb accepts short reads."""
        try:
            return self._target.read_memory(gva, size)
        except MemoryAccessError:
            pass
        out = bytearray()
        while len(out) < size:
            address = gva + len(out)
            piece = min(size - len(out), PAGE_SIZE - address % PAGE_SIZE)
            try:
                out += self._target.read_memory(address, piece)
            except MemoryAccessError:
                break
        return bytes(out)

    def _cmd_write_memory(self, args: bytes) -> _Reply:
        if self._state is not SessionState.STOPPED:
            return ERROR_NO_PROCESS
        header, data_hex = _split(args, b":", 2)
        gva, size = _address_range(header)
        data = _hex_bytes(data_hex)
        return self._write_memory(gva, size, data)

    def _cmd_write_memory_binary(self, args: bytes) -> _Reply:
        if self._state is not SessionState.STOPPED:
            return ERROR_NO_PROCESS
        header, data = _split(args, b":", 2)
        gva, size = _address_range(header)
        return self._write_memory(gva, size, data)

    def _write_memory(self, gva: int, size: int, data: bytes) -> _Reply:
        if len(data) != size:
            raise _BadArguments(f"length {size} but {len(data)} bytes of data")
        if size:  # `X addr,0:` is gdb probing for X support.
            self._target.write_memory(gva, data)
        return OK

    # -- breakpoints --

    def _breakpoint_args(self, args: bytes) -> tuple[int, int, int] | None:
        kind_text, address_text, length_text = _split(args.split(b";", 1)[0], b",", 3)
        kind = _hex_int(kind_text)
        address, length = _hex_int(address_text), _hex_int(length_text)
        if kind > BreakpointKind.ACCESS_WATCH:
            return None
        return kind, address, length

    def _cmd_insert_breakpoint(self, args: bytes) -> _Reply:
        if self._state is not SessionState.STOPPED:
            return ERROR_NO_PROCESS
        parsed = self._breakpoint_args(args)
        if parsed is None:
            return b""
        kind, address, length = parsed
        if not self._target.insert_breakpoint(BreakpointKind(kind), address, length):
            return b""
        return OK

    def _cmd_remove_breakpoint(self, args: bytes) -> _Reply:
        if self._state is not SessionState.STOPPED:
            return ERROR_NO_PROCESS
        parsed = self._breakpoint_args(args)
        if parsed is None:
            return b""
        kind, address, length = parsed
        if not self._target.remove_breakpoint(BreakpointKind(kind), address, length):
            return b""
        return OK

    # -- execution --

    def _resume(self, step: bool, address: bytes | None) -> _Reply:
        if self._state is not SessionState.STOPPED:
            return ERROR_NO_PROCESS
        if address:
            pc = next(reg for reg in self.layout.registers if reg.source == PC_SOURCE)
            self._write_register(pc, _hex_int(address), self._target.registers())
        # Running before the call: a target may report the stop from inside resume().
        self._state = SessionState.RUNNING
        try:
            self._target.resume(step)
        except PyvmmError:
            self._state = SessionState.STOPPED
            raise
        return None

    def _cmd_continue(self, args: bytes) -> _Reply:
        return self._resume(False, args)

    def _cmd_step(self, args: bytes) -> _Reply:
        return self._resume(True, args)

    def _cmd_continue_signal(self, args: bytes) -> _Reply:
        signal, _, address = args.partition(b";")
        _hex_int(signal)
        return self._resume(False, address)

    def _cmd_step_signal(self, args: bytes) -> _Reply:
        signal, _, address = args.partition(b";")
        _hex_int(signal)
        return self._resume(True, address)

    def _cmd_v(self, args: bytes) -> _Reply:
        if args == b"Cont?":
            return VCONT_ACTIONS
        if args.startswith(b"Cont;"):
            return self._resume(self._vcont_step(args[len(b"Cont;") :]), None)
        return b""  # vMustReplyEmpty and everything we do not implement

    @staticmethod
    def _vcont_step(actions: bytes) -> bool:
        """Whether our thread steps: the leftmost action naming it wins."""
        for action in actions.split(b";"):
            verb, _, thread = action.partition(b":")
            if not verb or verb[:1] not in b"cCsS":
                raise _BadArguments(f"vCont action {action[:16]!r}")
            if len(verb) > 1:
                if verb[:1] in b"cs":
                    raise _BadArguments(f"vCont action {action[:16]!r}")
                _hex_int(verb[1:])  # the signal, ignored
            if not thread or _thread_ok(thread):
                return verb[:1] in b"sS"
        raise _BadArguments("no vCont action for thread 1")

    def _cmd_detach(self, args: bytes) -> _Reply:
        if self._state is not SessionState.STOPPED:
            return ERROR_NO_PROCESS
        if args and not args.startswith(b";"):
            raise _BadArguments("D takes ;pid")
        self._target.detach()
        self._state = SessionState.DETACHED
        return OK

    def _cmd_kill(self, _args: bytes) -> _Reply:
        if self._state is SessionState.STOPPED:
            self._target.kill()
            self._state = SessionState.EXITED
            self._last_stop = stop_reply(Killed())
        return None  # `k` has no reply

    # -- threads and queries --

    def _cmd_set_thread(self, args: bytes) -> _Reply:
        if args[:1] not in (b"g", b"c") or not args[1:] or not _thread_ok(args[1:]):
            raise _BadArguments(f"H{args[:16]!r}")
        return OK

    def _cmd_thread_alive(self, args: bytes) -> _Reply:
        if not _thread_ok(args):
            raise _BadArguments(f"T{args[:16]!r}")
        return OK

    def _cmd_query(self, args: bytes) -> _Reply:
        name, _, rest = args.partition(b":")
        if name == b"Supported":
            self._gdb_features = frozenset(
                feature[:-1].decode("latin-1")
                for feature in rest.split(b";")
                if feature.endswith(b"+")
            )
            return SUPPORTED_FEATURES
        if name == b"Attached":
            return b"1"  # we attached to a VM that already existed: detach, not kill
        if name == b"C":
            return b"QC%x" % THREAD_ID
        if name == b"fThreadInfo":
            return b"m%x" % THREAD_ID
        if name == b"sThreadInfo":
            return b"l"
        if name == b"Xfer":
            return self._xfer(rest)
        return b""

    def _xfer(self, args: bytes) -> _Reply:
        parts = args.split(b":")
        if parts[:2] != [b"features", b"read"]:
            return b""
        if len(parts) != 4 or parts[2] != ANNEX.encode():
            return ERROR_XFER
        try:
            offset, length = (_hex_int(field) for field in _split(parts[3], b",", 2))
        except _BadArguments:
            return ERROR_XFER
        if self._target_xml is None:
            self._target_xml = render_target_xml(self.layout)
        if offset > len(self._target_xml):
            return ERROR_XFER
        return read_chunk(self._target_xml, offset, length)

    def _cmd_set(self, args: bytes) -> _Reply:
        if args == b"StartNoAckMode":
            # The `+` for this packet is already queued; from now on, none.
            self._ack_mode = False
            return OK
        return b""
