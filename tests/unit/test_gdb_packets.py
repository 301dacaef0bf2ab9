"""GDB remote protocol framing: checksums, escapes, run lengths, acks, resync."""

from __future__ import annotations

import random

import pytest

from pyvmm.gdb.packets import (
    PACKET_SIZE_LIMIT,
    AckEvent,
    BadPacket,
    Interrupt,
    Packet,
    PacketReader,
    checksum,
    decode_data,
    encode_packet,
    escape,
)

EVENT_TYPES = (Packet, Interrupt, AckEvent, BadPacket)


def framed(raw: bytes) -> bytes:
    """A packet around already-escaped data, with a correct checksum."""
    return b"$" + raw + b"#" + b"%02x" % checksum(raw)


def test_known_checksums() -> None:
    # 'O' 0x4f + 'K' 0x4b = 0x9a: the reply every gdb log shows.
    assert encode_packet(b"OK") == b"$OK#9a"
    assert encode_packet(b"") == b"$#00"
    assert encode_packet(b"qSupported") == b"$qSupported#37"
    assert checksum(b"\xff\x02") == 0x01


def test_special_bytes_are_escaped() -> None:
    assert escape(b"a#b$c}d*e") == b"a}\x03b}\x04c}]d}\x0ae"
    packet = encode_packet(b"#")
    assert packet == b"$}\x03#80"  # checksum over the escaped bytes: 0x7d + 0x03


@pytest.mark.parametrize(
    "payload",
    [b"", b"g", b"#$}*", bytes(range(256)), b"}}}}", b"*" * 100, b"\x03\x03", b"$#"],
)
def test_round_trip(payload: bytes) -> None:
    assert PacketReader().feed(encode_packet(payload)) == [Packet(payload)]


def test_round_trip_one_byte_at_a_time() -> None:
    payload = bytes(range(256)) * 3
    reader = PacketReader()
    events = []
    for byte in encode_packet(payload):
        events += reader.feed(bytes([byte]))
    assert events == [Packet(payload)]


def test_acks_and_interrupt_outside_packets() -> None:
    reader = PacketReader()
    assert reader.feed(b"+-\x03+") == [AckEvent(True), AckEvent(False), Interrupt(), AckEvent(True)]


def test_interrupt_byte_inside_a_packet_is_data() -> None:
    raw = b"X0,1:\x03"
    assert PacketReader().feed(framed(raw)) == [Packet(raw)]


def test_several_packets_in_one_chunk() -> None:
    data = b"+" + encode_packet(b"?") + encode_packet(b"g") + b"\x03"
    assert PacketReader().feed(data) == [AckEvent(True), Packet(b"?"), Packet(b"g"), Interrupt()]


def test_bad_checksum_is_reported_and_the_next_packet_parses() -> None:
    reader = PacketReader()
    assert reader.feed(b"$OK#00") == [BadPacket("bad checksum")]
    assert reader.feed(b"$OK#zz") == [BadPacket("bad checksum")]
    assert reader.feed(b"$OK#9A") == [Packet(b"OK")]  # upper-case hex is fine


def test_dollar_inside_a_packet_resyncs() -> None:
    reader = PacketReader()
    events = reader.feed(b"$garb$OK#9a")
    assert events == [BadPacket("truncated"), Packet(b"OK")]


def test_dollar_in_the_checksum_resyncs() -> None:
    reader = PacketReader()
    assert reader.feed(b"$OK#9$OK#9a") == [BadPacket("bad checksum"), Packet(b"OK")]


def test_garbage_between_packets_is_skipped_and_counted() -> None:
    reader = PacketReader()
    assert reader.feed(b"hello\r\n" + encode_packet(b"?")) == [Packet(b"?")]
    assert reader.garbage_bytes == 7


def test_run_length_decoding() -> None:
    # ' ' is 32: 32 - 29 = 3 more copies (the manual's "0* " = "0000").
    assert PacketReader().feed(framed(b"0* ")) == [Packet(b"0000")]
    assert decode_data(b'ab*"c') == b"abbbbbbc"
    # The repeated byte is the decoded one, even if it came escaped.
    assert decode_data(b"}\x03* ") == b"####"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"* ", "bad run-length encoding"),  # nothing to repeat
        (b"a*", "bad run-length encoding"),  # count missing
        (b"a*\x10", "bad run-length encoding"),  # count below 1
        (b"ab}", "bad escape"),  # escape at the end
    ],
)
def test_undecodable_data_is_a_bad_packet(raw: bytes, reason: str) -> None:
    assert PacketReader().feed(framed(raw)) == [BadPacket(reason)]


def test_packet_at_the_limit_is_accepted() -> None:
    reader = PacketReader(limit=16)
    assert reader.feed(framed(b"m" * 16)) == [Packet(b"m" * 16)]


def test_too_long_packet_is_dropped_and_the_stream_resyncs() -> None:
    reader = PacketReader(limit=16)
    events = []
    for piece in (b"$" + b"x" * 10, b"y" * 10, b"z" * 1000, b"#00", encode_packet(b"?")):
        events += reader.feed(piece)
        assert len(reader._data) <= 16  # memory stays bounded while discarding
    assert events == [BadPacket("too long"), Packet(b"?")]


def test_too_long_packet_cut_by_a_new_packet() -> None:
    reader = PacketReader(limit=4)
    assert reader.feed(b"$123456789" + encode_packet(b"g")) == [
        BadPacket("too long"),
        Packet(b"g"),
    ]


def test_run_length_cannot_expand_past_the_limit() -> None:
    reader = PacketReader(limit=64)
    raw = b"a*~" * 4  # '~' = 126: 97 more copies each
    assert reader.feed(framed(raw)) == [BadPacket("too long")]


def test_default_limit_accepts_a_full_size_write() -> None:
    payload = b"X1000,%x:" % 0x7F00 + bytes(range(256)) * 0x7F
    assert len(encode_packet(payload)) < PACKET_SIZE_LIMIT + 4
    assert PacketReader().feed(encode_packet(payload)) == [Packet(payload)]


def test_fuzz_random_bytes_never_raise() -> None:
    rng = random.Random(0x6DB)
    reader = PacketReader(limit=256)
    alphabet = b"$#}*+-\x03" + bytes(range(0x20, 0x7F))
    total = 0
    for _ in range(3000):
        size = rng.randrange(0, 64)
        if rng.random() < 0.5:
            chunk = bytes(rng.choice(alphabet) for _ in range(size))
        else:
            chunk = bytes(rng.randrange(256) for _ in range(size))
        if rng.random() < 0.1:
            chunk += encode_packet(bytes(rng.randrange(256) for _ in range(rng.randrange(40))))
        events = reader.feed(chunk)
        total += len(events)
        assert all(isinstance(event, EVENT_TYPES) for event in events)
        assert len(reader._data) <= 256
    assert total > 0
    # After any amount of noise, a clean packet still comes through.
    assert reader.feed(b"#00" + encode_packet(b"?"))[-1] == Packet(b"?")


def test_fuzz_mutated_packets_never_raise() -> None:
    rng = random.Random(1234)
    reader = PacketReader(limit=128)
    for _ in range(2000):
        packet = bytearray(encode_packet(bytes(rng.randrange(256) for _ in range(20))))
        for _ in range(rng.randrange(3)):
            packet[rng.randrange(len(packet))] = rng.randrange(256)
        for event in reader.feed(bytes(packet)):
            assert isinstance(event, EVENT_TYPES)
