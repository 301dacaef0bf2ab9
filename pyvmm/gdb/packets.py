"""Framing of the GDB remote serial protocol: `$data#cs`, acks and Ctrl-C.

A packet is ``$`` + data + ``#`` + two lower-case hex digits, the sum of the
data bytes modulo 256 (GDB manual, "Overview" of the remote protocol). Inside
the data, ``#``, ``$``, ``}`` and ``*`` are sent as ``}`` followed by the byte
xor 0x20, and ``X*Y`` means "the byte X, then Y - 29 more copies of it"
(run-length encoding). Outside packets, gdb sends ``+``/``-`` to acknowledge
our packets and the single byte 0x03 to interrupt a running target.

`PacketReader` turns an arbitrary byte stream into events. It is fed whatever
the socket returned, never raises, and never holds more than one packet of
`PACKET_SIZE_LIMIT` bytes: anything longer is dropped whole and reported, so a
confused or hostile peer cannot make the VMM buffer without bound.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Largest packet data we accept (between `$` and `#`, escaped) and the largest
# payload after decoding. Advertised to gdb as `PacketSize` in qSupported, so a
# well-behaved gdb never sends more.
PACKET_SIZE_LIMIT = 0x10000

INTERRUPT_BYTE = 0x03
PACKET_START = ord("$")
PACKET_END = ord("#")
ESCAPE = ord("}")
RUN_LENGTH = ord("*")
ACK = ord("+")
NACK = ord("-")

# A run-length count character c stands for c - 29 extra copies.
RUN_LENGTH_BIAS = 29
ESCAPE_XOR = 0x20

_FRAME_DELIMITER = re.compile(rb"[#$]")
_NEEDS_ESCAPE = re.compile(rb"[#$}*]")
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


@dataclass(frozen=True)
class Packet:
    """A well-formed packet; `payload` is decoded (no escapes, no run lengths)."""

    payload: bytes


@dataclass(frozen=True)
class Interrupt:
    """The 0x03 byte outside a packet: gdb's Ctrl-C."""


@dataclass(frozen=True)
class AckEvent:
    """``+`` (ok=True) or ``-`` (ok=False, retransmit your last packet)."""

    ok: bool


@dataclass(frozen=True)
class BadPacket:
    """A packet that was dropped; in ack mode the session answers ``-``."""

    reason: str


Event = Packet | Interrupt | AckEvent | BadPacket


class _Undecodable(Exception):
    """Internal: escaped data that does not decode. Never leaves this module."""


def checksum(data: bytes) -> int:
    """The protocol checksum: the byte sum of the (escaped) data, modulo 256."""
    return sum(data) & 0xFF


def escape(payload: bytes) -> bytes:
    """Escape the four bytes that would break framing or look like a run length."""
    return _NEEDS_ESCAPE.sub(_escape_one, payload)


def _escape_one(match: re.Match[bytes]) -> bytes:
    return bytes((ESCAPE, match[0][0] ^ ESCAPE_XOR))


def decode_data(raw: bytes, limit: int = PACKET_SIZE_LIMIT) -> bytes:
    """Undo escapes and run lengths of packet data; raise `_Undecodable` if broken.

    The run length repeats the previous *decoded* byte, as gdb's own reader does.
    """
    if ESCAPE not in raw and RUN_LENGTH not in raw:
        return bytes(raw)
    out = bytearray()
    index = 0
    length = len(raw)
    while index < length:
        byte = raw[index]
        index += 1
        if byte == ESCAPE:
            if index >= length:
                raise _Undecodable("bad escape")
            out.append(raw[index] ^ ESCAPE_XOR)
            index += 1
        elif byte == RUN_LENGTH:
            if index >= length or not out:
                raise _Undecodable("bad run-length encoding")
            repeat = raw[index] - RUN_LENGTH_BIAS
            index += 1
            if repeat <= 0:
                raise _Undecodable("bad run-length encoding")
            out.extend(out[-1:] * repeat)
        else:
            out.append(byte)
        if len(out) > limit:
            raise _Undecodable("too long")
    return bytes(out)


def encode_packet(payload: bytes) -> bytes:
    """Frame a payload as ``$data#cs``. Every packet is escaped, which gdb accepts."""
    data = escape(payload)
    return b"$" + data + b"#" + b"%02x" % checksum(data)


class PacketReader:
    """Byte stream -> events. Keeps at most one partial packet between calls."""

    _IDLE = 0
    _DATA = 1
    _CHECKSUM = 2

    def __init__(self, limit: int = PACKET_SIZE_LIMIT) -> None:
        self.limit = limit
        self._state = self._IDLE
        self._data = bytearray()
        self._checksum = bytearray()
        self._too_long = False
        # Bytes outside packets that meant nothing (line noise); only counted.
        self.garbage_bytes = 0

    def feed(self, data: bytes) -> list[Event]:
        """Consume a chunk of any size; return the events it completed."""
        events: list[Event] = []
        position = 0
        end = len(data)
        while position < end:
            if self._state == self._IDLE:
                position = self._feed_idle(data, position, events)
            elif self._state == self._DATA:
                position = self._feed_data(data, position, events)
            else:
                position = self._feed_checksum(data, position, events)
        return events

    def _start_packet(self) -> None:
        self._state = self._DATA
        self._data = bytearray()
        self._checksum = bytearray()
        self._too_long = False

    def _feed_idle(self, data: bytes, position: int, events: list[Event]) -> int:
        byte = data[position]
        if byte == PACKET_START:
            self._start_packet()
        elif byte == ACK:
            events.append(AckEvent(True))
        elif byte == NACK:
            events.append(AckEvent(False))
        elif byte == INTERRUPT_BYTE:
            events.append(Interrupt())
        else:
            self.garbage_bytes += 1
        return position + 1

    def _feed_data(self, data: bytes, position: int, events: list[Event]) -> int:
        match = _FRAME_DELIMITER.search(data, position)
        stop = match.start() if match else len(data)
        if not self._too_long:
            if len(self._data) + (stop - position) > self.limit:
                # Drop what we hold and skip to the end of this packet.
                self._too_long = True
                self._data = bytearray()
            else:
                self._data += data[position:stop]
        if match is None:
            return stop
        if data[stop] == PACKET_END:
            self._state = self._CHECKSUM
        else:
            # A raw `$` cannot occur inside data: the sender restarted. Resync on it.
            events.append(BadPacket("too long" if self._too_long else "truncated"))
            self._start_packet()
        return stop + 1

    def _feed_checksum(self, data: bytes, position: int, events: list[Event]) -> int:
        byte = data[position]
        if byte == PACKET_START:
            events.append(BadPacket("too long" if self._too_long else "bad checksum"))
            self._start_packet()
            return position + 1
        self._checksum.append(byte)
        if len(self._checksum) == 2:
            self._state = self._IDLE
            events.append(self._finish())
        return position + 1

    def _finish(self) -> Event:
        raw = bytes(self._data)
        self._data = bytearray()
        if self._too_long:
            return BadPacket("too long")
        if not all(digit in _HEX_DIGITS for digit in self._checksum):
            return BadPacket("bad checksum")
        if int(self._checksum, 16) != checksum(raw):
            return BadPacket("bad checksum")
        try:
            return Packet(decode_data(raw, self.limit))
        except _Undecodable as error:
            return BadPacket(str(error))
