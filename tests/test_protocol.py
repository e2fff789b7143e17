"""Acceptance 9: the protocol reader never crashes and never loses sync (hypothesis)."""

from __future__ import annotations

import contextlib
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from lookout.listener.protocol.channel import ProtocolChannel
from lookout.listener.protocol.events import MalformedEvent, ProcessStateEvent, decode
from lookout.listener.protocol.parser import Envelope, EventParser, Garbage


def frame(payload: str, eventname: str = "PROCESS_STATE_EXITED", serial: int = 1) -> bytes:
    """What supervisord writes: len counts characters, the payload is then UTF-8 encoded."""
    header = (
        f"ver:3.0 server:supervisor serial:{serial} pool:lookout poolserial:{serial} "
        f"eventname:{eventname} len:{len(payload)}\n"
    )
    return header.encode() + payload.encode("utf-8")


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in points:
        out.append(data[prev:p])
        prev = p
    out.append(data[prev:])
    return out


def feed_all(parser: EventParser, chunks: list[bytes]) -> list:
    items = []
    for c in chunks:
        items.extend(parser.feed(c))
    return items


EXITED = "processname:web groupname:web from_state:RUNNING expected:0 pid:4242"


def test_real_bytes_from_supervisord():
    items = EventParser().feed(
        b"ver:3.0 server:supv-e1 serial:29 pool:rec poolserial:29 eventname:PROCESS_STATE_EXITED len:76\n"
        b"processname:badexit groupname:badexit from_state:RUNNING expected:0 pid:6921"
    )
    assert len(items) == 1
    event = decode(items[0])
    assert isinstance(event, ProcessStateEvent)
    assert (event.namespec, event.state, event.expected, event.pid) == (
        "badexit:badexit",
        "EXITED",
        False,
        6921,
    )


def test_len_counts_characters_not_bytes():
    payload = "processname:p groupname:g pid:1 channel:stdout\nhéllo ✓ 日本語 🎉"
    data = frame(payload, "PROCESS_LOG_STDOUT") + frame(EXITED, serial=2)
    assert len(payload) < len(payload.encode())
    items = EventParser().feed(data)
    assert [i.payload for i in items] == [payload, EXITED]


def test_crlf_in_payload_does_not_block():
    payload = "processname:p groupname:g pid:1 channel:stdout\na\r\nb\r\n"
    items = EventParser().feed(frame(payload, "PROCESS_LOG_STDOUT"))
    assert items[0].payload == payload


def test_garbage_line_is_skipped_and_stream_resyncs():
    items = EventParser().feed(b"this is not a header\n" + frame(EXITED))
    assert isinstance(items[0], Garbage)
    assert isinstance(items[1], Envelope) and items[1].payload == EXITED


def test_malformed_payload_is_reported_not_crashing():
    env = EventParser().feed(frame("nonsense without colons", "PROCESS_STATE_RUNNING"))[0]
    try:
        decode(env)
    except MalformedEvent as exc:
        assert "token" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected MalformedEvent")


# Payload text: any unicode except surrogates (supervisord encodes str as UTF-8).
payload_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)


@settings(max_examples=300, deadline=None)
@given(
    payloads=st.lists(payload_text, min_size=1, max_size=6),
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
)
def test_any_payloads_any_chunking_parse_exactly(payloads, cuts):
    data = b"".join(frame(p, "PROCESS_LOG_STDOUT", i + 1) for i, p in enumerate(payloads))
    items = feed_all(EventParser(), chunked(data, cuts))
    assert [i.payload for i in items] == payloads


# A hostile line: never contains a newline, and has no usable 'len:' to frame with.
hostile_line = st.binary(max_size=200).filter(lambda b: b"\n" not in b and b"len:" not in b)


@settings(max_examples=300, deadline=None)
@given(
    junk=st.lists(hostile_line, max_size=5),
    payload=payload_text,
    cuts=st.lists(st.integers(0, 5000), max_size=8),
)
def test_hostile_lines_never_desync_later_events(junk, payload, cuts):
    data = b"".join(j + b"\n" for j in junk) + frame(payload) + frame(EXITED, serial=2)
    items = feed_all(EventParser(), chunked(data, cuts))
    envelopes = [i for i in items if isinstance(i, Envelope)]
    assert [e.payload for e in envelopes] == [payload, EXITED]


header_token = st.text(
    st.characters(min_codepoint=33, max_codepoint=0x10FFFF, blacklist_categories=("Cs",)), max_size=30
)


@settings(max_examples=300, deadline=None)
@given(tokens=st.lists(header_token, max_size=8), payload=payload_text)
def test_hostile_headers_with_valid_len_decode_or_raise_malformed(tokens, payload):
    header = " ".join(t.replace("len:", "") for t in tokens) + f" len:{len(payload)}\n"
    items = EventParser().feed(header.encode() + payload.encode() + frame(EXITED, serial=7))
    assert len(items) == 2
    with contextlib.suppress(MalformedEvent):
        decode(items[0])
    assert decode(items[1]).delivery.serial == 7


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=2000), cuts=st.lists(st.integers(0, 2000), max_size=10))
def test_arbitrary_bytes_never_raise(data, cuts):
    parser = EventParser()
    for item in feed_all(parser, chunked(data, cuts)):
        if isinstance(item, Envelope):
            with contextlib.suppress(MalformedEvent):
                decode(item)
    assert parser.pending_bytes <= len(data)


def test_channel_writes_ready_and_ack_in_bytes():
    r_in, w_in = os.pipe()
    r_out, w_out = os.pipe()
    channel = ProtocolChannel(r_in, w_out)
    channel.ready()
    os.write(w_in, frame("processname:é groupname:é from_state:STOPPED tries:0", "PROCESS_STATE_STARTING"))
    items, woken = channel.poll(1.0)
    assert len(items) == 1 and not woken
    channel.ack()
    assert os.read(r_out, 100) == b"READY\nRESULT 2\nOKREADY\n"
    for fd in (r_in, w_in, r_out, w_out):
        os.close(fd)
