"""The gdb session state machine against an in-memory target, packet by packet."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET

import pytest

from pyvmm.errors import PyvmmError
from pyvmm.gdb import MemoryAccessError, NoFreeDebugRegister, UnknownCpuMode
from pyvmm.gdb.packets import Packet, PacketReader, encode_packet
from pyvmm.gdb.registers import (
    I386,
    I8086,
    X86_64,
    CpuMode,
    CpuView,
    RegisterFile,
    layout_for,
    pack_registers,
    unpack_registers,
)
from pyvmm.gdb.session import (
    Breakpoint,
    BreakpointKind,
    Exited,
    GdbSession,
    Interrupted,
    Killed,
    SessionState,
    Stepped,
    StopReason,
    Watchpoint,
    stop_reply,
)
from pyvmm.gdb.target_xml import render_target_xml

PAGE = 0x1000

LONG_MODE_REGS = {
    "rax": 0x1122334455667788,
    "rbx": 0x1,
    "rcx": 0x2,
    "rdx": 0x3,
    "rsi": 0x0,
    "rdi": 0x0,
    "rbp": 0x8000,
    "rsp": 0x7FF0,
    **{f"r{n}": 0 for n in range(8, 15)},
    "r15": 0xDEADBEEF,
    "rip": 0xFFFFFFFF81000000,
    "eflags": 0x246,
    "cs": 0x10,
    "ss": 0x18,
    "ds": 0x18,
    "es": 0x18,
    "fs": 0x0,
    "gs": 0x0,
    "fs_base": 0x1000,
    "gs_base": 0xFFFF888000000000,
    "cr0": 0x80050033,
    "cr2": 0x0,
    "cr3": 0x1000,
    "cr4": 0x20,
    "efer": 0xD01,
}

# The `g` reply for LONG_MODE_REGS, worked out by hand: each register
# little-endian, in target.xml order.
LONG_MODE_G = (
    "8877665544332211"  # rax
    "0100000000000000"  # rbx
    "0200000000000000"  # rcx
    "0300000000000000"  # rdx
    "0000000000000000"  # rsi
    "0000000000000000"  # rdi
    "0080000000000000"  # rbp
    "f07f000000000000"  # rsp
    + "0000000000000000"
    * 7  # r8..r14
    + "efbeadde00000000"  # r15
    "00000081ffffffff"  # rip
    "46020000"  # eflags
    "10000000"  # cs
    "18000000"  # ss
    "18000000"  # ds
    "18000000"  # es
    "00000000"  # fs
    "00000000"  # gs
    + "00"
    * (8 * 10 + 8 * 4)  # st0..st7, fctrl..fop: not reported, zero
    + "0010000000000000"  # fs_base
    "000000008088ffff"  # gs_base
    "3300058000000000"  # cr0
    "0000000000000000"  # cr2
    "0010000000000000"  # cr3
    "2000000000000000"  # cr4
    "010d000000000000"  # efer
)


class FakeTarget:
    """A vCPU in a dict and guest memory in pages; records every call."""

    def __init__(self, mode: CpuMode = "long", regs: dict[str, int] | None = None) -> None:
        self.mode: CpuMode = mode
        self.regs = dict(LONG_MODE_REGS if regs is None else regs)
        self.pages: dict[int, bytearray] = {}
        self.breakpoints: set[tuple[int, int, int]] = set()
        self.supported_kinds = {0, 1, 2, 3, 4}
        self.calls: list[tuple[object, ...]] = []
        self.fail_set_register = False

    def map(self, gva: int, data: bytes) -> None:
        for offset, byte in enumerate(data):
            page = self.pages.setdefault((gva + offset) // PAGE, bytearray(PAGE))
            page[(gva + offset) % PAGE] = byte

    def _check(self, gva: int, size: int) -> None:
        for address in range(gva, gva + size):
            if address // PAGE not in self.pages:
                raise MemoryAccessError(gva, size)

    def registers(self) -> dict[str, int]:
        return dict(self.regs)

    def set_register(self, name: str, value: int) -> None:
        if self.fail_set_register:
            raise PyvmmError("KVM_SET_SREGS failed: EINVAL (Invalid argument)")
        self.calls.append(("set_register", name, value))
        self.regs[name] = value

    def read_memory(self, gva: int, size: int) -> bytes:
        self._check(gva, size)
        return bytes(self.pages[a // PAGE][a % PAGE] for a in range(gva, gva + size))

    def write_memory(self, gva: int, data: bytes) -> None:
        self._check(gva, len(data))
        self.calls.append(("write_memory", gva, data))
        self.map(gva, data)

    def insert_breakpoint(self, kind: int, gva: int, length: int) -> bool:
        if kind not in self.supported_kinds:
            return False
        if kind != 0:
            if gva == 0xBAD:
                raise NoFreeDebugRegister("DR0-DR3 are in use")
            hardware = [bp for bp in self.breakpoints if bp[0] != 0]
            if len(hardware) >= 4 and (kind, gva, length) not in self.breakpoints:
                raise NoFreeDebugRegister("DR0-DR3 are in use")
        else:
            self._check(gva, 1)
        self.calls.append(("insert_breakpoint", kind, gva, length))
        self.breakpoints.add((kind, gva, length))
        return True

    def remove_breakpoint(self, kind: int, gva: int, length: int) -> bool:
        if kind not in self.supported_kinds:
            return False
        self.calls.append(("remove_breakpoint", kind, gva, length))
        self.breakpoints.discard((kind, gva, length))
        return True

    def resume(self, step: bool) -> None:
        self.calls.append(("resume", step))

    def interrupt(self) -> None:
        self.calls.append(("interrupt",))

    def detach(self) -> None:
        self.calls.append(("detach",))

    def kill(self) -> None:
        self.calls.append(("kill",))

    def cpu_view(self) -> CpuView:
        return CpuView(self.mode)


def payloads(out: list[bytes]) -> list[bytes]:
    """The packets in what the session sent, decoded; acks dropped."""
    reader = PacketReader()
    events = reader.feed(b"".join(out))
    return [event.payload for event in events if isinstance(event, Packet)]


def new_session(target: FakeTarget | None = None, ack: bool = False) -> GdbSession:
    session = GdbSession(target or FakeTarget())
    if not ack:
        session.receive(encode_packet(b"QStartNoAckMode"))
        session.receive(b"+")  # gdb acks our OK, then both sides stop acking
    return session


def ask(session: GdbSession, payload: bytes) -> bytes | None:
    """Send one packet; return the single reply payload, or None if there was none."""
    replies = payloads(session.receive(encode_packet(payload)))
    assert len(replies) <= 1, replies
    return replies[0] if replies else None


# --- connection, acks ----------------------------------------------------------


def test_qsupported_advertises_features_and_packet_size() -> None:
    session = new_session()
    reply = ask(session, b"qSupported:multiprocess+;swbreak+;hwbreak+;xmlRegisters=i386")
    assert reply == b"PacketSize=10000;qXfer:features:read+;swbreak+;hwbreak+;QStartNoAckMode+"


def test_ack_mode_then_no_ack_mode() -> None:
    session = GdbSession(FakeTarget())
    assert session.ack_mode
    assert session.receive(encode_packet(b"?")) == [b"+", encode_packet(b"T05thread:1;")]
    assert session.receive(encode_packet(b"QStartNoAckMode")) == [b"+", b"$OK#9a"]
    assert not session.ack_mode
    assert session.receive(b"+") == []  # gdb's ack of our OK is ignored
    assert session.receive(encode_packet(b"?")) == [encode_packet(b"T05thread:1;")]
    assert session.receive(b"$?#00") == []  # a bad checksum gets no `-` any more


def test_nack_retransmits_the_last_packet() -> None:
    session = GdbSession(FakeTarget())
    first = session.receive(encode_packet(b"qC"))
    assert first == [b"+", encode_packet(b"QC1")]
    assert session.receive(b"-") == [encode_packet(b"QC1")]
    assert session.receive(b"+") == []


def test_bad_packet_is_nacked_in_ack_mode() -> None:
    session = GdbSession(FakeTarget())
    assert session.receive(b"$g#00") == [b"-"]
    assert session.bad_packets == 1
    assert session.receive(b"-") == []  # nothing sent yet, nothing to resend


def test_thread_queries() -> None:
    session = new_session()
    assert ask(session, b"qAttached") == b"1"
    assert ask(session, b"qAttached:1") == b"1"
    assert ask(session, b"qC") == b"QC1"
    assert ask(session, b"qfThreadInfo") == b"m1"
    assert ask(session, b"qsThreadInfo") == b"l"
    assert ask(session, b"Hg0") == b"OK"
    assert ask(session, b"Hc-1") == b"OK"
    assert ask(session, b"Hg1") == b"OK"
    assert ask(session, b"Hg2") == b"E22"
    assert ask(session, b"Hx0") == b"E22"
    assert ask(session, b"T1") == b"OK"
    assert ask(session, b"T7") == b"E22"


@pytest.mark.parametrize(
    "payload", [b"vMustReplyEmpty", b"qTStatus", b"qOffsets", b"!", b"vFile:open:", b"QFoo", b""]
)
def test_unknown_packets_get_the_empty_reply(payload: bytes) -> None:
    session = new_session()
    assert session.receive(encode_packet(payload)) == [b"$#00"]


# --- registers ------------------------------------------------------------------


def test_g_long_mode_hand_computed() -> None:
    session = new_session()
    reply = ask(session, b"g")
    assert reply == LONG_MODE_G.encode()
    assert len(reply) == 2 * X86_64.size == 664


def test_g_protected_mode_shows_the_low_halves() -> None:
    regs = dict(LONG_MODE_REGS, rip=0x7C00, eflags=0x2)
    session = new_session(FakeTarget("protected", regs))
    reply = ask(session, b"g")
    assert reply is not None
    expected = (
        "88776655"  # eax = low half of rax
        "02000000"  # ecx
        "03000000"  # edx
        "01000000"  # ebx
        "f07f0000"  # esp
        "00800000"  # ebp
        "00000000"  # esi
        "00000000"  # edi
        "007c0000"  # eip
        "02000000"  # eflags
    )
    assert reply.startswith(expected.encode())
    assert len(reply) == 2 * I386.size
    # No fs_base/gs_base in the 32-bit layouts: the x87 block, then cr0.
    segments = "100000001800000018000000180000000000000000000000"
    assert reply[len(expected) :].startswith(segments.encode() + b"00" * 112 + b"33000580")
    assert reply.endswith(b"010d000000000000")


def test_layout_follows_the_cpu_mode() -> None:
    assert layout_for(CpuView("long")) is X86_64
    assert layout_for(CpuView("protected")) is I386
    assert layout_for(CpuView("real")) is I8086
    with pytest.raises(UnknownCpuMode):
        CpuView("smm")  # type: ignore[arg-type]


def test_pack_and_unpack_round_trip() -> None:
    packed = pack_registers(LONG_MODE_REGS, X86_64)
    values = unpack_registers(packed, X86_64)
    assert values["rax"] == LONG_MODE_REGS["rax"]
    assert values["gs_base"] == LONG_MODE_REGS["gs_base"]
    assert values["st0"] == 0
    assert pack_registers(values, X86_64) == packed


def test_p_reads_one_register_by_number() -> None:
    session = new_session()
    assert ask(session, b"p0") == b"8877665544332211"
    assert ask(session, b"p10") == b"00000081ffffffff"  # 0x10 = rip
    assert ask(session, b"p11") == b"46020000"  # eflags
    assert ask(session, b"p%x" % X86_64.number("efer")) == b"010d000000000000"
    assert ask(session, b"p%x" % X86_64.number("st7")) == b"00" * 10
    assert ask(session, b"p%x" % len(X86_64)) == b"E22"
    assert ask(session, b"pzz") == b"E22"
    assert ask(session, b"p") == b"E22"


def test_P_writes_one_register() -> None:
    target = FakeTarget()
    session = new_session(target)
    assert ask(session, b"P0=efcdab8967452301") == b"OK"
    assert target.regs["rax"] == 0x0123456789ABCDEF
    assert ask(session, b"P%x=01000000" % X86_64.number("cs")) == b"OK"
    assert target.regs["cs"] == 1
    # Registers the VMM does not report accept the write and drop it.
    assert ask(session, b"P%x=%s" % (X86_64.number("st0"), b"11" * 10)) == b"OK"
    assert "st0" not in target.regs
    assert ask(session, b"P0=0102") == b"E22"  # wrong width
    assert ask(session, b"P0=zz00000000000000") == b"E22"
    assert ask(session, b"P0") == b"E22"
    assert ask(session, b"P99=00") == b"E22"


def test_P_eax_keeps_the_high_half_of_rax() -> None:
    target = FakeTarget("real")
    session = new_session(target)
    assert ask(session, b"P0=44332211") == b"OK"
    assert target.regs["rax"] == 0x1122334411223344


def test_G_writes_only_changed_registers() -> None:
    target = FakeTarget()
    session = new_session(target)
    data = bytearray(bytes.fromhex(LONG_MODE_G))
    data[0:8] = (0x42).to_bytes(8, "little")  # rax
    assert ask(session, b"G" + bytes(data).hex().encode()) == b"OK"
    assert target.calls == [("set_register", "rax", 0x42)]
    assert ask(session, b"G" + bytes(data[:-1]).hex().encode()) == b"E22"
    assert ask(session, b"G" + b"0g" * X86_64.size) == b"E22"
    assert ask(session, b"G0") == b"E22"


def test_register_write_refused_by_the_target() -> None:
    target = FakeTarget()
    target.fail_set_register = True
    session = new_session(target)
    assert ask(session, b"P0=0000000000000000") == b"E05"


# --- memory ---------------------------------------------------------------------


def test_m_reads_memory() -> None:
    target = FakeTarget()
    target.map(0x1000, b"\x55\x48\x89\xe5")
    session = new_session(target)
    assert ask(session, b"m1000,4") == b"554889e5"
    assert ask(session, b"m1001,2") == b"4889"


def test_m_unmapped_is_E14() -> None:
    session = new_session()
    assert ask(session, b"mdead0000,4") == b"E14"


def test_m_returns_the_readable_prefix_across_a_page_end() -> None:
    target = FakeTarget()
    target.map(0x1FFE, b"\xaa\xbb")
    session = new_session(target)
    assert ask(session, b"m1ffe,4") == b"aabb"


def test_m_caps_huge_lengths() -> None:
    target = FakeTarget()
    target.map(0, bytes(0x10000))
    session = new_session(target)
    reply = ask(session, b"m0,ffffffff")
    assert reply is not None and 0 < len(reply) < 0x10000


@pytest.mark.parametrize(
    "payload", [b"m", b"m1000", b"m1000,", b"mxyz,4", b"m 10,4", b"m0x10,4", b"m1,1,1", b"m1,-1"]
)
def test_m_malformed_is_E22(payload: bytes) -> None:
    assert ask(new_session(), payload) == b"E22"


def test_m_range_past_2_to_the_64_is_E22() -> None:
    assert ask(new_session(), b"mffffffffffffffff,2") == b"E22"
    assert ask(new_session(), b"m10000000000000000,1") == b"E22"


def test_M_writes_hex_data() -> None:
    target = FakeTarget()
    target.map(0x2000, bytes(4))
    session = new_session(target)
    assert ask(session, b"M2000,2:cc90") == b"OK"
    assert target.read_memory(0x2000, 2) == b"\xcc\x90"
    assert ask(session, b"M2000,3:cc90") == b"E22"
    assert ask(session, b"M2000,2:cc9") == b"E22"
    assert ask(session, b"M2000,2") == b"E22"
    assert ask(session, b"M9000,1:00") == b"E14"


def test_X_writes_binary_data_with_escapes() -> None:
    target = FakeTarget()
    target.map(0x3000, bytes(8))
    session = new_session(target)
    data = b"#$}*\x03\x00\xff+"
    assert ask(session, b"X3000,8:" + data) == b"OK"
    assert target.read_memory(0x3000, 8) == data
    assert ask(session, b"X3000,0:") == b"OK"  # gdb's probe: writes nothing
    assert ask(session, b"X3000,2:a") == b"E22"
    assert ask(session, b"X9000,1:a") == b"E14"


# --- breakpoints ------------------------------------------------------------------


@pytest.mark.parametrize("kind", [0, 1, 2, 3, 4])
def test_Z_and_z_every_kind(kind: int) -> None:
    target = FakeTarget()
    target.map(0x1000, bytes(16))
    session = new_session(target)
    assert ask(session, b"Z%d,1000,1" % kind) == b"OK"
    assert (kind, 0x1000, 1) in target.breakpoints
    assert ask(session, b"z%d,1000,1" % kind) == b"OK"
    assert not target.breakpoints
    inserted = target.calls[0]
    assert inserted == ("insert_breakpoint", kind, 0x1000, 1)
    assert isinstance(inserted[1], BreakpointKind)


def test_Z_with_conditions_ignores_them() -> None:
    target = FakeTarget()
    target.map(0x1000, bytes(16))
    session = new_session(target)
    assert ask(session, b"Z0,1000,1;X3,220027") == b"OK"


def test_Z_unsupported_kind_is_empty() -> None:
    target = FakeTarget()
    target.supported_kinds = {0}
    session = new_session(target)
    assert ask(session, b"Z1,1000,1") == b""
    assert ask(session, b"z1,1000,1") == b""
    assert ask(session, b"Z5,1000,1") == b""  # not a gdb type we know


def test_Z_no_free_debug_register_is_E28() -> None:
    session = new_session()
    assert ask(session, b"Z2,bad,4") == b"E28"


def test_Z_fifth_watchpoint_finds_no_debug_register() -> None:
    session = new_session()
    for n in range(4):
        assert ask(session, b"Z2,%x,8" % (0x100 * (n + 1))) == b"OK"
    assert ask(session, b"Z2,500,8") == b"E28"


def test_Z0_on_unmapped_memory_is_E14() -> None:
    assert ask(new_session(), b"Z0,dead0000,1") == b"E14"


@pytest.mark.parametrize("payload", [b"Z", b"Z0", b"Z0,1000", b"Zq,1000,1", b"z0,1000,", b"Z,,"])
def test_Z_malformed_is_E22(payload: bytes) -> None:
    assert ask(new_session(), payload) == b"E22"


# --- execution and stop replies ----------------------------------------------------


def test_continue_runs_and_the_stop_is_reported() -> None:
    target = FakeTarget()
    session = new_session(target)
    assert ask(session, b"c") is None
    assert session.state is SessionState.RUNNING
    assert target.calls == [("resume", False)]
    packet = session.stopped(Breakpoint())
    assert packet == encode_packet(b"T05thread:1;")
    assert session.state is SessionState.STOPPED


def test_continue_at_an_address_moves_rip() -> None:
    target = FakeTarget()
    session = new_session(target)
    assert ask(session, b"c1000") is None
    assert target.regs["rip"] == 0x1000
    assert target.calls[-1] == ("resume", False)


def test_step_at_an_address_in_real_mode_keeps_rip_high_bits() -> None:
    target = FakeTarget("real", dict(LONG_MODE_REGS, rip=0x7C00))
    session = new_session(target)
    assert ask(session, b"s7c05") is None
    assert target.regs["rip"] == 0x7C05
    assert target.calls[-1] == ("resume", True)
    assert session.stopped(Stepped()) == encode_packet(b"T05thread:1;")


def test_continue_with_a_bad_address_stays_stopped() -> None:
    session = new_session()
    assert ask(session, b"cxyz") == b"E22"
    assert session.state is SessionState.STOPPED


def test_signal_variants_ignore_the_signal() -> None:
    target = FakeTarget()
    session = new_session(target)
    assert ask(session, b"C02") is None
    session.stopped(Interrupted())
    assert ask(session, b"S05;2000") is None
    assert target.regs["rip"] == 0x2000
    assert target.calls[-1] == ("resume", True)
    session.stopped(Stepped())
    assert ask(session, b"C") == b"E22"


def test_packets_while_running_are_acked_and_ignored() -> None:
    target = FakeTarget()
    session = GdbSession(target)
    session.receive(encode_packet(b"c"))
    assert session.receive(encode_packet(b"g")) == [b"+"]
    assert session.ignored_packets == 1
    assert target.calls == [("resume", False)]


def test_ctrl_c_interrupts_a_running_target() -> None:
    target = FakeTarget()
    session = new_session(target)
    ask(session, b"c")
    assert session.receive(b"\x03") == []
    assert target.calls[-1] == ("interrupt",)
    assert session.stopped(Interrupted()) == encode_packet(b"S02")
    assert ask(session, b"?") == b"S02"


def test_ctrl_c_while_stopped_is_ignored() -> None:
    target = FakeTarget()
    session = new_session(target)
    assert session.receive(b"\x03") == []
    assert target.calls == []


def test_vcont() -> None:
    target = FakeTarget()
    session = new_session(target)
    assert ask(session, b"vCont?") == b"vCont;c;C;s;S"
    for payload, step in [
        (b"vCont;c", False),
        (b"vCont;s:1;c", True),
        (b"vCont;c:-1", False),
        (b"vCont;c:2;s:1", True),  # the leftmost action naming thread 1 wins
        (b"vCont;C05", False),
        (b"vCont;S02:1", True),
    ]:
        assert ask(session, payload) is None, payload
        assert target.calls[-1] == ("resume", step), payload
        session.stopped(Stepped())
    for payload in [b"vCont;t", b"vCont;", b"vCont;c2", b"vCont;Cxx", b"vCont;c:2", b"vCont;r1,2"]:
        assert ask(session, payload) == b"E22", payload
    assert session.state is SessionState.STOPPED


@pytest.mark.parametrize(
    ("reason", "reply"),
    [
        (Breakpoint(), b"T05thread:1;"),
        (Stepped(), b"T05thread:1;"),
        (Watchpoint("watch", 0x1000), b"T05watch:1000;thread:1;"),
        (Watchpoint("rwatch", 0xFFFF888000001234), b"T05rwatch:ffff888000001234;thread:1;"),
        (Watchpoint("awatch", 0x10), b"T05awatch:10;thread:1;"),
        (Interrupted(), b"S02"),
        (Exited(0), b"W00"),
        (Exited(0x1FF), b"Wff"),
        (Killed(), b"X09"),
    ],
)
def test_stop_replies(reason: StopReason, reply: bytes) -> None:
    assert stop_reply(reason) == reply


def test_swbreak_and_hwbreak_only_when_gdb_asked() -> None:
    assert stop_reply(Breakpoint("sw")) == b"T05thread:1;"
    features = frozenset({"swbreak", "hwbreak"})
    assert stop_reply(Breakpoint("sw"), features) == b"T05swbreak:;thread:1;"
    assert stop_reply(Breakpoint("hw"), features) == b"T05hwbreak:;thread:1;"
    session = new_session()
    ask(session, b"qSupported:swbreak+;hwbreak-")
    ask(session, b"c")
    assert session.stopped(Breakpoint("sw")) == encode_packet(b"T05swbreak:;thread:1;")
    ask(session, b"c")
    assert session.stopped(Breakpoint("hw")) == encode_packet(b"T05thread:1;")


def test_stop_while_stopped_sends_nothing() -> None:
    session = new_session()
    assert session.stopped(Breakpoint()) == b""
    assert session.state is SessionState.STOPPED


def test_guest_exit_ends_the_session() -> None:
    session = new_session()
    ask(session, b"c")
    assert session.stopped(Exited(3)) == encode_packet(b"W03")
    assert session.state is SessionState.EXITED
    assert ask(session, b"?") == b"W03"
    for payload in [b"g", b"p0", b"m0,1", b"M0,1:00", b"X0,0:", b"Z0,0,1", b"c", b"vCont;c", b"D"]:
        assert ask(session, payload) == b"E03", payload
    assert ask(session, b"qC") == b"QC1"  # queries still answer


def test_killed_while_running() -> None:
    session = new_session()
    ask(session, b"c")
    assert session.stopped(Killed()) == encode_packet(b"X09")
    assert session.state is SessionState.EXITED


def test_k_kills_without_a_reply() -> None:
    target = FakeTarget()
    session = GdbSession(target)
    assert session.receive(encode_packet(b"k")) == [b"+"]
    assert target.calls == [("kill",)]
    assert session.state is SessionState.EXITED
    assert payloads(session.receive(encode_packet(b"?"))) == [b"X09"]


def test_D_detaches() -> None:
    target = FakeTarget()
    session = new_session(target)
    assert ask(session, b"D") == b"OK"
    assert target.calls == [("detach",)]
    assert session.state is SessionState.DETACHED
    assert ask(session, b"g") == b"E03"
    assert session.stopped(Breakpoint()) == b""


def test_D_with_pid() -> None:
    target = FakeTarget()
    assert ask(new_session(target), b"D;1") == b"OK"
    assert ask(new_session(), b"Dx") == b"E22"


# --- target description ------------------------------------------------------------


def read_target_xml(session: GdbSession, chunk: int) -> bytes:
    document = b""
    while True:
        reply = ask(session, b"qXfer:features:read:target.xml:%x,%x" % (len(document), chunk))
        assert reply is not None and reply[:1] in (b"m", b"l"), reply
        document += reply[1:]
        assert len(reply) - 1 <= chunk
        if reply[:1] == b"l":
            return document


@pytest.mark.parametrize(
    ("mode", "architecture", "layout"),
    [("long", "i386:x86-64", X86_64), ("protected", "i386", I386), ("real", "i8086", I8086)],
)
def test_target_xml_in_chunks_is_well_formed(
    mode: CpuMode, architecture: str, layout: RegisterFile
) -> None:
    session = new_session(FakeTarget(mode))
    document = read_target_xml(session, 0x100)
    assert document == read_target_xml(session, 0xFFB)
    assert document == render_target_xml(layout_for(CpuView(mode)))
    root = ET.fromstring(document)
    assert root.tag == "target"
    assert root.findtext("architecture") == architecture
    features = [feature.get("name") for feature in root.findall("feature")]
    segments = ["org.gnu.gdb.i386.segments"] if mode == "long" else []
    assert features == ["org.gnu.gdb.i386.core", *segments, "org.pyvmm.x86.control"]
    regs = root.findall("feature/reg")
    assert [reg.get("name") for reg in regs] == [reg.name for reg in layout.registers]
    assert sum(int(reg.get("bitsize", "0")) for reg in regs) == 8 * layout.size


def test_target_xml_core_has_what_gdb_requires() -> None:
    root = ET.fromstring(render_target_xml(X86_64))
    core = root.find("feature[@name='org.gnu.gdb.i386.core']")
    assert core is not None
    names = [reg.get("name") for reg in core.findall("reg")]
    assert names[:16] == ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp"] + [
        f"r{n}" for n in range(8, 16)
    ]
    assert names[16:24] == ["rip", "eflags", "cs", "ss", "ds", "es", "fs", "gs"]
    x87_control = ["fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop"]
    assert names[24:] == [f"st{n}" for n in range(8)] + x87_control
    control = root.find("feature[@name='org.pyvmm.x86.control']")
    assert control is not None
    assert [(r.get("name"), r.get("bitsize")) for r in control.findall("reg")] == [
        (name, "64") for name in ("cr0", "cr2", "cr3", "cr4", "efer")
    ]
    i386_core = ET.fromstring(render_target_xml(I386)).find("feature")
    assert i386_core is not None
    names = [reg.get("name") for reg in i386_core.findall("reg")][:16]
    gprs = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"]
    assert names == [*gprs, "eip", "eflags", "cs", "ss", "ds", "es", "fs", "gs"]


def test_target_xml_past_the_end_and_bad_requests() -> None:
    session = new_session()
    size = len(render_target_xml(X86_64))
    assert ask(session, b"qXfer:features:read:target.xml:%x,100" % size) == b"l"
    assert ask(session, b"qXfer:features:read:target.xml:%x,100" % (size + 1)) == b"E00"
    assert ask(session, b"qXfer:features:read:other.xml:0,100") == b"E00"
    assert ask(session, b"qXfer:features:read:target.xml:zz,100") == b"E00"
    assert ask(session, b"qXfer:features:read:target.xml") == b"E00"
    assert ask(session, b"qXfer:memory-map:read::0,100") == b""


def test_layout_is_fixed_for_the_connection() -> None:
    target = FakeTarget("real")
    session = new_session(target)
    first = read_target_xml(session, 0x1000)
    target.mode = "long"
    assert read_target_xml(session, 0x1000) == first
    assert len(ask(session, b"g") or b"") == 2 * I8086.size


# --- a whole conversation -------------------------------------------------------------


def test_scripted_gdb_conversation() -> None:
    """What `gdb -ex 'target remote :1234'`, `break`, `continue`, `x`, `stepi`,
    `delete`, `detach` put on the wire, acks included."""
    target = FakeTarget()
    target.map(0x100000, b"\x90\x90\xcc\xf4")
    session = GdbSession(target)

    def exchange(data: bytes) -> list[bytes]:
        return session.receive(data)

    assert exchange(b"+") == []
    out = exchange(encode_packet(b"qSupported:multiprocess+;swbreak+;hwbreak+;qRelocInsn+"))
    assert out == [
        b"+",
        encode_packet(b"PacketSize=10000;qXfer:features:read+;swbreak+;hwbreak+;QStartNoAckMode+"),
    ]
    assert exchange(b"+") == []
    assert exchange(encode_packet(b"vMustReplyEmpty")) == [b"+", b"$#00"]
    assert exchange(b"+") == []
    assert exchange(encode_packet(b"QStartNoAckMode")) == [b"+", b"$OK#9a"]
    assert exchange(b"+") == []
    # From here on, no acks either way.
    xml = payloads(exchange(encode_packet(b"qXfer:features:read:target.xml:0,ffb")))
    assert xml[0].startswith(b"l<?xml")
    assert payloads(exchange(encode_packet(b"Hg0"))) == [b"OK"]
    assert payloads(exchange(encode_packet(b"qfThreadInfo"))) == [b"m1"]
    assert payloads(exchange(encode_packet(b"qsThreadInfo"))) == [b"l"]
    assert payloads(exchange(encode_packet(b"qAttached"))) == [b"1"]
    assert payloads(exchange(encode_packet(b"?"))) == [b"T05thread:1;"]
    assert payloads(exchange(encode_packet(b"qC"))) == [b"QC1"]
    assert payloads(exchange(encode_packet(b"g"))) == [LONG_MODE_G.encode()]
    assert payloads(exchange(encode_packet(b"m100000,4"))) == [b"9090ccf4"]
    # break *0x100002; continue
    assert payloads(exchange(encode_packet(b"Z0,100002,1"))) == [b"OK"]
    assert payloads(exchange(encode_packet(b"vCont?"))) == [b"vCont;c;C;s;S"]
    assert exchange(encode_packet(b"vCont;c")) == []
    assert session.state is SessionState.RUNNING
    target.regs["rip"] = 0x100002
    assert session.stopped(Breakpoint("sw")) == encode_packet(b"T05swbreak:;thread:1;")
    assert payloads(exchange(encode_packet(b"p10"))) == [b"0200100000000000"]
    assert payloads(exchange(encode_packet(b"m100002,1"))) == [b"cc"]
    # stepi, with the breakpoint lifted the way gdb does it
    assert payloads(exchange(encode_packet(b"z0,100002,1"))) == [b"OK"]
    assert exchange(encode_packet(b"vCont;s:1;c")) == []
    target.regs["rip"] = 0x100003
    assert session.stopped(Stepped()) == encode_packet(b"T05thread:1;")
    # continue, then Ctrl-C
    assert exchange(encode_packet(b"c")) == []
    assert exchange(b"\x03") == []
    assert session.stopped(Interrupted()) == encode_packet(b"S02")
    # detach: gdb removes its breakpoints first, then D
    assert payloads(exchange(encode_packet(b"D"))) == [b"OK"]
    assert session.state is SessionState.DETACHED
    assert target.breakpoints == set()
    assert [call[0] for call in target.calls] == [
        "insert_breakpoint",
        "resume",
        "remove_breakpoint",
        "resume",
        "resume",
        "interrupt",
        "detach",
    ]


# --- robustness -----------------------------------------------------------------------


def test_fuzz_random_packets_never_raise() -> None:
    rng = random.Random(0x6DB)
    letters = b"?gGpPmMXZzcCsSHTDkqQv"
    tails = [b"", b",", b":", b";", b"=", b"-1", b"ffffffffffffffffff", b"0,0", b"1,1:00"]
    for _ in range(3000):
        target = FakeTarget(rng.choice(["real", "protected", "long"]))
        target.map(0x1000, bytes(32))
        session = new_session(target, ack=rng.random() < 0.5)
        payload = bytes([rng.choice(letters)])
        for _ in range(rng.randrange(4)):
            if rng.random() < 0.5:
                payload += rng.choice(tails)
            else:
                payload += bytes(rng.randrange(256) for _ in range(rng.randrange(12)))
        out = session.receive(encode_packet(payload))
        assert all(isinstance(chunk, bytes) for chunk in out)
        if session.state is SessionState.RUNNING:
            session.stopped(Stepped())
        for prefix in (b"qXfer:features:read:", b"qSupported:", b"vCont;", b"qC"):
            session.receive(encode_packet(prefix + payload[1:]))
