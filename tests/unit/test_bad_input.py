"""Bad input never crashes anything (issue 7, item 4): property-based fuzzing of every input edge.

Each section feeds hypothesis-generated damage to one boundary and checks the contract of that
boundary: a clear, typed error (AudioFormatError, ModelError, ConfigError, DecodeError) or a
counted drop (ring counters, MetricsStore.write_errors, StreamResult "error") -- never another
exception, never a wrong value delivered as if it were right, and the next good input works.

1. MessageRing: scribbled slot headers/payloads, random payloads, random JSON through ``decode``.
2. AudioRing: scribbled frames and reader slots; bad arrays to ``write``.
3. WAV files: generated RIFF files of every kind, truncated anywhere; the CLI on bad files.
4. Model files: truncations and bit flips of the real ggml and gguf models.
5. Config: generated TOML documents and environments.
6. MetricsStore: locked database, read-only filesystem, full filesystem.
7. Ollama: garbage NDJSON from a loopback double.

Example counts are bounded so the whole file runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import typing
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import psutil
import pytest
from hypothesis import HealthCheck, assume, event, example, given, note, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst

from core import messages as msgs
from core.config import Config, ConfigError, load_config
from core.messages import DecodeError, decode, encode
from pipeline.metrics_store import MetricsStore
from models.provision import ModelError, validate_ggml, validate_gguf
from shm import segments
from shm.audio_ring import AudioRing
from shm.message_ring import MessageRing, Policy
from shm.segments import attach_segment
from core.audio import SAMPLE_RATE, AudioFormatError, load_wav, read_wav_info
from engines.capture.wav import WavSource
from engines.llm import StreamResult
from engines.llm.ollama import OllamaLlm
from tests.unit.test_shm import no_leftover_segments, seg, vigil_segments  # noqa: F401 - its autouse fixture applies here

ROOT = Path(__file__).resolve().parents[2]
NO_FIXTURE_CHECK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@contextmanager
def raw_mapping(name: str):
    """A second mapping of a segment: scribbles bypass the ring's own code entirely."""
    shm = attach_segment(name)
    try:
        yield shm.buf
    finally:
        shm.close()


# =============================================================================================
# 1. MessageRing: scribbled slots and random payloads
# =============================================================================================

SLOTS, SLOT_SIZE = 4, 40  # stride 64: seq_begin @0, length @8, crc @12, payload @16..56, seq_end @56
FIELDS = {"seq_begin": (0, 8), "length": (8, 4), "crc": (12, 4), "payload": (16, SLOT_SIZE), "seq_end": (56, 8)}

ring_ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.binary(min_size=0, max_size=SLOT_SIZE)),
        st.tuples(st.just("get")),
        st.tuples(st.just("scribble"), st.integers(0, SLOTS - 1), st.sampled_from(sorted(FIELDS)),
                  st.integers(0, SLOT_SIZE - 1), st.binary(min_size=1, max_size=8)),
    ),
    max_size=40,
)


@settings(max_examples=250, deadline=None, suppress_health_check=NO_FIXTURE_CHECK)
@given(ops=ring_ops, policy=st.sampled_from([Policy.DROP_OLDEST, Policy.DROP_NEWEST]))
@example(ops=[("put", b"hello"), ("scribble", 0, "length", 0, bytes(4)), ("scribble", 0, "crc", 0, bytes(4)), ("get",)],
         policy=Policy.DROP_NEWEST).via("a zeroed slot header once read back as a valid empty message")
def test_message_ring_scribbled_slots_are_skipped_and_counted(ops, policy):
    ring = MessageRing.create(seg("mfuzz"), slots=SLOTS, slot_size=SLOT_SIZE, policy=policy)
    try:
        assert ring.slot_offset(1) - ring.slot_offset(0) == 64
        pending: list[bytes] = []  # accepted, not yet delivered nor skipped (FIFO)
        accepted = delivered = 0

        def take(got: bytes) -> None:
            nonlocal delivered
            # Every payload the ring returns is the oldest one still pending or a later one
            # (the ones before it were skipped): a scribble may cost messages, never invent one.
            assert got in pending, f"ring returned {got!r}, which was never put (pending {pending!r})"
            del pending[: pending.index(got) + 1]
            delivered += 1

        for op in ops:
            if op[0] == "put":
                if ring.put(op[1]):
                    accepted += 1
                    pending.append(op[1])
                    if len(pending) > SLOTS:  # DROP_OLDEST overwrote the oldest unread slot
                        pending.pop(0)
            elif op[0] == "get":
                got = ring.get()
                if got is not None:
                    take(got)
            else:
                _, slot, field, at, data = op
                start, width = FIELDS[field]
                at %= width
                data = data[: width - at]
                with raw_mapping(ring.name) as buf:
                    off = ring.slot_offset(slot) + start + at
                    buf[off : off + len(data)] = data
        while (got := ring.get()) is not None:
            take(got)
        s = ring.stats()
        # Every accepted message was delivered, counted lost (overrun) or counted corrupt.
        assert delivered + s.lost + s.corrupt == accepted, (delivered, s)
        assert s.occupancy == 0
        # ... and the ring is not wedged: a good message afterwards goes through.
        assert ring.put(b"after the storm") and ring.get() == b"after the storm"
        assert ring.get() is None
    finally:
        ring.close()
        ring.unlink()


# ---- message payloads through decode ------------------------------------------------------

_JSON_SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8)
json_values = st.recursive(_JSON_SCALARS,
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                           max_leaves=8)

_CHECK = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "dict[str, Any]": lambda v: isinstance(v, dict),
    "int | None": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
}
# Fields with a closed set of values (Literal aliases in core/messages.py): exactly those strings.
_CLOSED = {name: typing.get_args(getattr(msgs, name)) for name in ("TranscriptReason", "FinishReason", "DeviceState")}


def _one_of(allowed: tuple[str, ...]):
    """The check for one closed field (a function, so each check keeps its own `allowed`)."""
    return lambda v: isinstance(v, str) and v in allowed


_CHECK.update({name: _one_of(allowed) for name, allowed in _CLOSED.items()})


def is_valid_message(body: object) -> bool:
    """Independent oracle: a JSON object naming a known type, every field present (or defaulted)
    and of the declared type."""
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        return False
    cls = msgs.MESSAGE_TYPES.get(body["type"])
    if cls is None:
        return False
    for f in dataclasses.fields(cls):
        if f.name not in body:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                return False
            continue
        if not _CHECK[f.type](body[f.name]):
            return False
    return True


_clean_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)  # no lone surrogates
_finite_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False) | _clean_text,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(_clean_text, c, max_size=3), max_leaves=6)
_VALUE_FOR = {  # right types (encode() is the producer's side: our workers never put lone surrogates)
    "int": st.integers(-(2**63), 2**63 - 1),
    "float": st.floats(allow_nan=False, allow_infinity=False),
    "str": st.text(st.characters(exclude_categories=["Cs"]), max_size=20),
    "bool": st.booleans(),
    "dict[str, Any]": st.dictionaries(_clean_text, _finite_json, max_size=3),
    "int | None": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
    **{name: st.sampled_from(allowed) for name, allowed in _CLOSED.items()},
}


@st.composite
def message_bodies(draw) -> dict:
    """Message-shaped objects: right type names with fields of right or wrong types,
    missing fields, extra fields, or a wrong "type"."""
    cls = draw(st.sampled_from(sorted(msgs.MESSAGE_TYPES.values(), key=lambda c: c.__name__)))
    body: dict = {}
    for f in dataclasses.fields(cls):
        choice = draw(st.sampled_from(["right", "right", "right", "wrong", "missing"]))
        if choice == "right":
            body[f.name] = draw(_VALUE_FOR[f.type])
        elif choice == "wrong":
            body[f.name] = draw(json_values)
    if draw(st.booleans()):
        body[draw(st.text(max_size=6))] = draw(json_values)
    body["type"] = draw(st.one_of(st.just(cls.__name__), st.just(cls.__name__), json_values))
    return body


def valid_messages():
    per_class = []
    for cls in msgs.MESSAGE_TYPES.values():
        kwargs = {f.name: _VALUE_FOR[f.type] for f in dataclasses.fields(cls)}
        per_class.append(st.builds(cls, **kwargs))
    return st.one_of(per_class)


payloads = st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda v: json.dumps(v).encode()),
    message_bodies().map(lambda b: json.dumps(b, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    valid_messages().map(encode),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),  # nesting deep enough for RecursionError
    st.integers(4301, 5000).map(lambda n: b'{"type":"Cancel","session":' + b"7" * n + b"}"),  # int too long
)


@settings(max_examples=600, deadline=None)
@given(payload=payloads)
def test_decode_raises_only_decode_error_and_never_returns_ill_typed_messages(payload):
    """The parent decodes its outboxes itself and catches DecodeError only (pipeline/app.py _pump),
    so any other exception here would kill the parent."""
    try:
        message = decode(payload)
    except DecodeError:
        event("rejected")
        return
    event("accepted")
    body = json.loads(payload)
    assert is_valid_message(body), f"decode accepted {payload!r} as {message!r}"
    assert type(message).__name__ == body["type"]


@settings(max_examples=150, deadline=None)
@given(message=valid_messages())
def test_valid_messages_round_trip(message):
    assert decode(encode(message)) == message


@settings(max_examples=80, deadline=None, suppress_health_check=NO_FIXTURE_CHECK)
@given(batch=st.lists(payloads, min_size=1, max_size=12))
def test_ring_with_decode_drops_and_counts_bad_payloads(batch):
    name = seg("mdecode")
    producer = MessageRing.create(name, slots=16, slot_size=8192, policy=Policy.DROP_NEWEST)
    consumer = MessageRing.attach(name, decoder=decode)
    try:
        batch = [p for p in batch if len(p) <= 8192]
        expected, bad = [], 0
        for p in batch:
            assert producer.put(p)
            try:
                ok = is_valid_message(json.loads(p))
            except (ValueError, RecursionError):
                ok = False
            if ok:
                expected.append(decode(p))
            else:
                bad += 1
        got = []
        while (m := consumer.get()) is not None:
            got.append(m)
        assert len(got) == len(expected) and all(
            type(a) is type(b) and json.dumps(dataclasses.asdict(a)) == json.dumps(dataclasses.asdict(b))
            for a, b in zip(got, expected)
        )
        assert consumer.stats().corrupt == bad
        producer.put(encode(msgs.Cancel(session=1)))
        assert consumer.get() == msgs.Cancel(session=1)
    finally:
        consumer.close()
        producer.close()
        producer.unlink()


# =============================================================================================
# 2. AudioRing: scribbled frames and reader slots, bad arrays
# =============================================================================================

FS, CAP, READERS = 32, 4, 2


def frame_samples(seq: int) -> np.ndarray:
    """Content unique to ``seq`` so any misplaced or stale frame shows."""
    return ((seq * 131 + np.arange(FS, dtype=np.int64) * 7) & 0xFFFF).astype(np.uint16).view(np.int16)


audio_ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(1, 3)),
        st.tuples(st.just("read"), st.integers(1, 3)),
        st.tuples(st.just("frame"), st.integers(0, CAP - 1),
                  st.sampled_from(["seq_begin", "capture", "samples", "seq_end"]),
                  st.integers(0, 2 * FS - 1), st.binary(min_size=1, max_size=8)),
        st.tuples(st.just("slot"), st.integers(0, READERS - 1), st.integers(0, 7), st.binary(min_size=1, max_size=8)),
        st.tuples(st.just("new_reader"),),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None, suppress_health_check=NO_FIXTURE_CHECK)
@given(ops=audio_ops)
@example(ops=[("slot", 0, 2, b"\xff" * 8), ("new_reader",), ("write", 3), ("write", 3), ("read", 1)]).via(
    "a restarted reader taking a header slot whose lost counter was scribbled to ~2**64 raised OverflowError")
def test_audio_reader_never_returns_a_wrong_frame_and_never_raises(ops):
    ring = AudioRing.create(sample_rate=SAMPLE_RATE, name=seg("afuzz"), frame_samples=FS, capacity=CAP,
                            max_readers=READERS)
    hb = 8 * (8 + 8 * READERS)  # header bytes (already a multiple of 64)
    stride = (16 + 2 * FS + 8 + 63) // 64 * 64
    words = {"seq_begin": (0, 8), "capture": (8, 8), "samples": (16, 2 * FS), "seq_end": (16 + 2 * FS, 8)}
    try:
        reader = ring.reader(start=0, slot=0)
        last = -1
        # Frames whose slot was scribbled since they were written: contents may be damaged
        # (the audio ring has no checksum over samples: a scribble there is audio noise, not a crash).
        dirty: set[int] = set()
        written = 0

        def check(frame) -> None:
            nonlocal last
            assert frame.seq > last and frame.seq < ring.write_seq
            last = frame.seq
            if frame.seq not in dirty:
                assert frame.capture_ns == 10**9 + frame.seq
                assert np.array_equal(frame.samples, frame_samples(frame.seq))

        for op in ops:
            if op[0] == "write":
                for _ in range(op[1]):
                    seq = ring.write(frame_samples(written), capture_ns=10**9 + written)
                    assert seq == written
                    dirty.discard(seq)
                    written += 1
            elif op[0] == "read":
                for _ in range(op[1]):
                    frame = reader.read()
                    if frame is not None:
                        check(frame)
            elif op[0] == "frame":
                _, slot, word, at, data = op
                start, width = words[word]
                at %= width
                data = data[: width - at]
                with raw_mapping(ring.name) as buf:
                    off = hb + slot * stride + start + at
                    buf[off : off + len(data)] = data
                # the frame currently in that slot (if any) may now read back damaged
                if written:
                    newest_in_slot = written - 1 - ((written - 1 - slot) % CAP)
                    if newest_in_slot >= 0:
                        dirty.add(newest_in_slot)
            elif op[0] == "slot":
                _, row, word, data = op
                data = data[:8]
                with raw_mapping(ring.name) as buf:
                    off = 64 + row * 64 + word * 8
                    buf[off : off + len(data)] = data
            else:  # a restarted worker takes the same header slot, which may hold garbage now
                reader.close()
                reader = ring.reader(start=last + 1, slot=0)
            # Whatever the header slots hold, the writer-side views never raise or go out of range.
            # (A scribbled cursor ahead of the writer can make headroom exceed CAP - 1 until the
            # reader's next read rewrites it; the pacing writer then costs that reader counted
            # lost frames, nothing worse.)
            room = ring.headroom()
            assert room is None or room >= 0
            assert all(lag >= 0 for lag in ring.reader_lags().values())
            ring.reader_stats()
            assert ring.total_lost() >= 0
        while (frame := reader.read()) is not None:
            check(frame)
        # not wedged: a frame written now is read back intact
        seq = ring.write(frame_samples(written), capture_ns=10**9 + written)
        frame = reader.read()
        assert frame is not None and frame.seq == seq and np.array_equal(frame.samples, frame_samples(seq))
        reader.close()
    finally:
        ring.close()
        ring.unlink()


bad_arrays = st.one_of(
    npst.arrays(
        dtype=st.one_of(npst.scalar_dtypes(), npst.integer_dtypes(endianness=">", sizes=16)),
        shape=npst.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=FS + 1),
    ),
    npst.arrays(dtype=st.sampled_from([np.float32, np.int32, np.uint16, np.dtype(">i2"), np.int8]),
                shape=st.just((FS,))),
    st.just(np.array([None] * FS, dtype=object)),
    npst.arrays(dtype=st.just(np.int16),
                shape=st.sampled_from([(FS - 1,), (FS + 1,), (1, FS), (FS, 1), (), (0,), (2 * FS,)])),
    st.lists(st.integers(-32768, 32767), min_size=FS, max_size=FS),
    st.binary(min_size=2 * FS, max_size=2 * FS),
    st.none(),
)


@settings(max_examples=200, deadline=None)
@given(samples=bad_arrays, capture_ns=st.one_of(st.none(), st.integers(0, 2**64 - 1), st.integers(2**64, 2**70),
                                                 st.integers(-(2**40), -1)))
def test_audio_write_rejects_bad_arrays_and_leaves_the_ring_intact(samples, capture_ns):
    good_array = isinstance(samples, np.ndarray) and samples.dtype == np.int16 and samples.shape == (FS,)
    good_ns = capture_ns is None or 0 <= capture_ns < 2**64
    assume(not (good_array and good_ns))
    ring = AudioRing.create(sample_rate=SAMPLE_RATE, name=seg("awrite"), frame_samples=FS, capacity=CAP,
                            max_readers=READERS)
    try:
        ring.write(frame_samples(0), capture_ns=1)
        with raw_mapping(ring.name) as buf:
            before = bytes(buf)
        with pytest.raises(ValueError):
            ring.write(samples, capture_ns=capture_ns)
        with raw_mapping(ring.name) as buf:
            assert bytes(buf) == before
        assert ring.write(frame_samples(1), capture_ns=2) == 1
        frame = ring.reader(start=0).read()
        assert frame.seq == 0 and np.array_equal(frame.samples, frame_samples(0))
    finally:
        ring.close()
        ring.unlink()


# =============================================================================================
# 3. WAV files
# =============================================================================================

_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
RATES = [8000, 11025, 16000, 22050, 32000, 44100, 48000, 96000]


@st.composite
def riff_files(draw) -> tuple[bytes, dict | None]:
    """A RIFF/WAVE file and, when every field is sane and nothing is cut, what it holds."""
    sane = True
    rare = lambda n=8: draw(st.integers(0, n - 1)) == 0  # noqa: E731 - one damage of many, so most files load
    kind = draw(st.sampled_from(["pcm8", "pcm16", "pcm24", "pcm32", "f32", "f64"] * 3 + ["random_tag"]))
    tag, bits = {"pcm8": (1, 8), "pcm16": (1, 16), "pcm24": (1, 24), "pcm32": (1, 32), "f32": (3, 32),
                 "f64": (3, 64), "random_tag": (draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 64)))}[kind]
    if kind == "random_tag" and not (tag in (1, 3) and bits in ((8, 16, 24, 32) if tag == 1 else (32, 64))):
        sane = False
    channels = draw(st.sampled_from([0, 65, 0xFFFF])) if rare() else draw(st.integers(1, 8))
    rate = draw(st.integers(0, 2**32 - 1)) if rare() else draw(st.sampled_from(RATES))
    if not (1 <= channels <= 64 and 1000 <= rate <= 768_000):
        sane = False
    align = (channels * bits // 8) & 0xFFFF
    if rare(10):
        align = draw(st.integers(0, 0xFFFF))
    sane = sane and align == channels * bits // 8
    byte_rate = draw(st.one_of(st.just(rate * max(align, 1) & 0xFFFFFFFF), st.integers(0, 2**32 - 1)))
    extensible = draw(st.booleans())
    fmt = struct.pack("<HHIIHH", 0xFFFE if extensible else tag, channels, rate, byte_rate, align, bits)
    if extensible:
        guid = struct.pack("<H", tag) + _GUID_TAIL
        if rare():
            guid = draw(st.binary(min_size=16, max_size=16))
            sane = sane and guid[2:] == _GUID_TAIL and struct.unpack("<H", guid[:2])[0] in (1, 3)
            tag = struct.unpack("<H", guid[:2])[0]
        cb = draw(st.integers(0, 0xFFFF)) if rare() else 22
        sane = sane and cb >= 22
        fmt += struct.pack("<HHI", cb, bits, 3) + guid
    elif draw(st.booleans()):
        fmt += b"\x00\x00"  # WAVEFORMATEX with cbSize 0
    fmt_size = len(fmt)
    if rare(10):
        fmt_size = draw(st.integers(0, 2**32 - 1))
        sane = sane and fmt_size == len(fmt)
    n_frames = draw(st.one_of(st.integers(0, 64), st.integers(0, 3000)))
    if n_frames == 0:
        sane = False
    n_frames = min(n_frames, 200_000 // max(align, 1))  # a lying block align must not make a huge file
    content = draw(st.sampled_from(["random", "random", "zeros", "ones"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_bytes = align * n_frames
    data = {"random": lambda: rng.integers(0, 256, n_bytes, dtype=np.uint8).tobytes(),  # NaN, inf, 1e308 for floats
            "zeros": lambda: bytes(n_bytes), "ones": lambda: b"\xff" * n_bytes}[content]()
    data_size = len(data)
    lie = draw(st.sampled_from(["none"] * 15 + ["zero", "huge", "gigabytes", "plus", "minus"]))
    if lie != "none":
        data_size = {"zero": 0, "huge": 0xFFFFFFFF, "gigabytes": 3 * 1024**3,
                     "plus": len(data) + draw(st.integers(1, 99)),
                     "minus": max(0, len(data) - draw(st.integers(1, 99)))}[lie]
        sane = sane and lie == "minus" and data_size >= max(align, 1)
    chunks = b""
    for _ in range(draw(st.integers(0, 2))):  # LIST/junk chunks before fmt or data
        body = draw(st.binary(max_size=9))
        size = draw(st.integers(0, 2**32 - 1)) if rare() else len(body)
        sane = sane and size == len(body)
        chunks += b"LIST" + struct.pack("<I", size) + body + (b"\x00" if len(body) & 1 else b"")
    order = draw(st.sampled_from(["fmt_first"] * 15 + ["data_first", "no_fmt", "no_data"]))
    fmt_chunk = b"fmt " + struct.pack("<I", fmt_size) + fmt + (b"\x00" if len(fmt) & 1 else b"")
    data_chunk = b"data" + struct.pack("<I", data_size) + data
    body = {"fmt_first": chunks + fmt_chunk + data_chunk, "data_first": data_chunk + fmt_chunk,
            "no_fmt": chunks + data_chunk, "no_data": chunks + fmt_chunk}[order]
    sane = sane and order == "fmt_first"
    head = draw(st.sampled_from([b"RIFF"] * 20 + [b"RF64", b"RIFX", b"\x00\x00\x00\x00"]))
    wave = draw(st.sampled_from([b"WAVE"] * 20 + [b"AVI ", b"wave"]))
    sane = sane and head == b"RIFF" and wave == b"WAVE"
    blob = head + struct.pack("<I", draw(st.integers(0, 2**32 - 1))) + wave + body
    if rare(6):
        cut = draw(st.integers(0, len(blob)))
        sane = sane and cut == len(blob)
        blob = blob[:cut]
    if rare(6):
        blob += draw(st.binary(max_size=16))  # trailing junk (harmless)
    if rare(30):
        blob, sane = draw(st.binary(max_size=200)), False
    frames = data_size // align if align else 0
    sane = sane and frames * 16000 >= rate  # at least one sample at 16 kHz (less is refused as too short)
    truth = {"channels": channels, "rate": rate, "frames": frames} if sane else None
    return blob, truth


def expected_length(frames: int, rate: int) -> float:
    return frames * 16000 / rate


@settings(max_examples=400, deadline=None, suppress_health_check=NO_FIXTURE_CHECK)
@given(wav=riff_files())
@example(wav=(b"RIFF\x26\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x00\x77\x01\x00\x00\xee\x02\x00"
              b"\x02\x00\x10\x00data\x02\x00\x00\x00\xe8\x03", None)).via(
    "one sample at 96 kHz resampled to nothing: an empty clip then broke a looping WavSource")
def test_load_wav_returns_16k_mono_int16_or_raises_audio_format_error(wav, tmp_path):
    blob, truth = wav
    p = tmp_path / "fuzz.wav"
    p.write_bytes(blob)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numpy RuntimeWarning (overflow in a cast...) is a bug too
        try:
            audio = load_wav(p)
        except AudioFormatError as exc:
            assert str(p) in str(exc)
            assert truth is None, f"a sane file was refused: {exc}"
            event("refused")
            return
    event("loaded")
    assert isinstance(audio, np.ndarray) and audio.dtype == np.int16 and audio.ndim == 1
    info = read_wav_info(p)
    n = expected_length(info.frames, info.rate)
    assert abs(len(audio) - n) <= 1 + n * 0.001, (len(audio), info)
    assert len(audio) > 0, "an empty clip was returned; zero-length audio must be refused like zero-length data"
    if truth is not None:
        assert (info.channels, info.rate, info.frames) == (truth["channels"], truth["rate"], truth["frames"])
    # and the replay source the capture worker builds from it works, looping included
    src = WavSource(p, frame_samples=160, realtime=False, loop=True)
    chunks = src._chunks()
    for _ in range(3):
        assert len(next(chunks)) == 160


CLI_BAD_FILES = {
    "truncated_header": b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00",
    "data_claims_gigabytes": (b"RIFF\xff\xff\xff\xffWAVEfmt "
                              + struct.pack("<IHHIIHH", 16, 3, 2, 48000, 48000 * 16, 16, 64)
                              + b"data" + struct.pack("<I", 0xFFFFFFF0) + b"\x00" * 64),
    "extensible_unknown_guid": (b"RIFF\x00\x00\x00\x00WAVEfmt "
                                + struct.pack("<IHHIIHH", 40, 0xFFFE, 1, 16000, 32000, 2, 16)
                                + struct.pack("<HHI", 22, 16, 4) + b"\x55\x00" + bytes(14)
                                + b"data\x04\x00\x00\x00\x00\x00\x00\x00"),
}


@pytest.mark.parametrize("name", sorted(CLI_BAD_FILES))
def test_cli_refuses_bad_wav_with_exit_2_and_leaves_nothing(name, tmp_path):
    bad = tmp_path / f"{name}.wav"
    bad.write_bytes(CLI_BAD_FILES[name])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VIGIL_METRICS__STATE_DIR": str(tmp_path / "state"),
           "VIGIL_MODELS__DIR": str(tmp_path / "no-models")}
    before = vigil_segments()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "run", "--input", str(bad), "--exit-when-done"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, (proc.returncode, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"vigil: error: --input {bad}"), err
    assert out == ""
    assert not (tmp_path / "no-models").exists(), "models were provisioned before the input was checked"
    assert {n for n in vigil_segments() - before if segments.owner_of(n) == proc.pid} == set()
    from tests.conftest import our_processes

    assert our_processes() == []
    assert [p.pid for p in psutil.process_iter(["cmdline"]) if str(bad) in " ".join(p.info["cmdline"] or [])] == []


# =============================================================================================
# 4. Model files
# =============================================================================================


@dataclasses.dataclass
class GgmlLayout:
    """Byte ranges of a ggml whisper file, found by a walker written independently of validate_ggml."""

    hparams: list[int]
    n_mel: int
    n_fft: int
    tok_lens: list[int]  # offsets of the u32 token lengths
    tok_texts: list[tuple[int, int]]
    tensor_heads: list[tuple[int, int]]  # (start, end) of n_dims..name
    tensor_data: list[tuple[int, int]]
    size: int


def ggml_layout(data: bytes) -> GgmlLayout:
    hp = list(struct.unpack_from("<11i", data, 4))
    n_mel, n_fft = struct.unpack_from("<ii", data, 48)
    pos = 56 + 4 * n_mel * n_fft
    (n_tok,) = struct.unpack_from("<i", data, pos)
    pos += 4
    tok_lens, tok_texts = [], []
    for _ in range(n_tok):
        (n,) = struct.unpack_from("<I", data, pos)
        tok_lens.append(pos)
        tok_texts.append((pos + 4, pos + 4 + n))
        pos += 4 + n
    assert (n_tok, hp[0]) and pos < len(data)
    heads, datas = [], []
    block_bytes = {0: (1, 4), 1: (1, 2), 8: (32, 34)}  # f32, f16, q8_0: (values per block, bytes per block)
    while pos < len(data):
        n_dims, name_len, ttype = struct.unpack_from("<iii", data, pos)
        ne = struct.unpack_from(f"<{n_dims}i", data, pos + 12)
        end_head = pos + 12 + 4 * n_dims + name_len
        heads.append((pos, end_head))
        per_block, nbytes_block = block_bytes[ttype]  # the provisioned tiny.en is f32/f16/q8_0 only
        nbytes = math.prod(ne) // per_block * nbytes_block
        datas.append((end_head, end_head + nbytes))
        pos = end_head + nbytes
    assert pos == len(data)
    return GgmlLayout(hp, n_mel, n_fft, tok_lens, tok_texts, heads, datas, len(data))


class ModelCopy(NamedTuple):
    """A model file's private copy, its bytes and layout; printed by name only (a failing example
    would otherwise print the whole 100 MB file)."""
    path: Path
    data: bytes
    layout: Any

    def __repr__(self) -> str:
        return f"ModelCopy({self.path.name}, {len(self.data)} bytes)"


@pytest.fixture(scope="module")
def ggml_copy(models, tmp_path_factory):
    """A private copy of the real ggml model (flipped in place and restored) and its layout."""
    path = tmp_path_factory.mktemp("ggml") / models.whisper.name
    shutil.copyfile(models.whisper, path)
    data = path.read_bytes()
    return ModelCopy(path, data, ggml_layout(data))


@contextmanager
def flipped(path: Path, offset: int, new: bytes):
    with open(path, "r+b") as f:
        f.seek(offset)
        old = f.read(len(new))
        f.seek(offset)
        f.write(new)
    try:
        yield
    finally:
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(old)


def validate_outcome(fn, path: Path) -> str:
    try:
        fn(path)
    except ModelError as exc:
        assert str(path) in str(exc)
        return "refused"
    return "passed"


@settings(max_examples=40, deadline=None, suppress_health_check=NO_FIXTURE_CHECK)
@given(data=st.data())
def test_truncated_ggml_is_always_refused(ggml_copy, tmp_path, data):
    _, original, lay = ggml_copy
    boundaries = [0, 4, 48, 56, lay.tok_lens[0], *(s for s, _ in lay.tensor_heads[:20]),
                  *(e for _, e in lay.tensor_data)]
    cut = data.draw(st.one_of(
        st.integers(0, 200_000),  # header, mel filters, vocabulary
        st.integers(0, lay.size - 1),
        st.sampled_from(boundaries).flatmap(lambda b: st.integers(max(0, b - 3), min(lay.size - 1, b + 3))),
    ), label="cut")
    p = tmp_path / "cut.bin"
    p.write_bytes(original[:cut])
    assert validate_outcome(validate_ggml, p) == "refused"


def _structural_offsets(lay: GgmlLayout):
    """Strategy over (field kind, byte offset) of every byte whose value the file's structure
    depends on: magic, hyper-parameters, mel header, token lengths, tensor headers."""
    return st.one_of(
        st.integers(0, 3).map(lambda o: ("magic", o)),
        st.integers(0, 43).map(lambda o: (f"hparam{o // 4}", 4 + o)),
        st.integers(48, 55).map(lambda o: ("mel_header", o)),
        st.integers(0, 3).map(lambda o: ("n_tokens", lay.tok_lens[0] - 4 + o)),
        st.sampled_from(lay.tok_lens).flatmap(lambda t: st.integers(t, t + 3)).map(lambda o: ("token_length", o)),
        st.sampled_from(lay.tensor_heads).flatmap(lambda h: st.integers(h[0], h[1] - 1))
        .map(lambda o: ("tensor_header", o)),
    )


def flip_is_harmless(kind: str, lay: GgmlLayout, new_value: int) -> bool:
    """Structural fields whose change whisper.cpp tolerates: a head count that still divides the
    width only changes how attention is split (wrong words, no crash)."""
    if kind == "hparam3":
        return 0 < new_value and lay.hparams[2] % new_value == 0
    if kind == "hparam7":
        return 0 < new_value and lay.hparams[6] % new_value == 0
    if kind == "hparam10":  # whisper.cpp reads ftype modulo 1000 (the rest is the quantization version)
        return 0 <= new_value and new_value % 1000 == lay.hparams[10] % 1000
    return False


@settings(max_examples=150, deadline=None, suppress_health_check=NO_FIXTURE_CHECK)
@given(data=st.data(), bit=st.integers(0, 7))
def test_bit_flip_in_ggml_structure_is_refused(ggml_copy, data, bit):
    path, original, lay = ggml_copy
    kind, offset = data.draw(_structural_offsets(lay), label="where")
    new = bytes([original[offset] ^ (1 << bit)])
    event(kind if not kind.startswith("hparam") else "hparam")
    with flipped(path, offset, new):
        outcome = validate_outcome(validate_ggml, path)
        if outcome == "passed":
            value = None
            if kind.startswith("hparam"):
                field = bytearray(original[offset & ~3 : (offset & ~3) + 4])
                field[offset & 3] ^= 1 << bit
                value = struct.unpack("<i", field)[0]
            assert flip_is_harmless(kind, lay, value), f"a flipped bit in the {kind} at byte {offset} was not noticed"


def test_every_single_bit_flip_of_the_ggml_hyper_parameters_is_refused_or_harmless(ggml_copy):
    """Exhaustive over the 11 x 32 bits: these are the fields whisper.cpp trusts without
    checking them against the tensors (it then segfaults or aborts on the first transcription)."""
    path, original, lay = ggml_copy
    unnoticed = []
    for bit in range(11 * 32):
        offset = 4 + bit // 8
        kind = f"hparam{bit // 32}"
        with flipped(path, offset, bytes([original[offset] ^ (1 << (bit % 8))])):
            if validate_outcome(validate_ggml, path) == "passed":
                value = struct.unpack_from("<i", bytes(original[4 : 48]), 4 * (bit // 32))[0] ^ (1 << (bit % 32))
                value = value - 2**32 if value >= 2**31 else value
                if not flip_is_harmless(kind, lay, value):
                    unnoticed.append((kind, bit % 32, value))
    assert unnoticed == []


@settings(max_examples=120, deadline=None, suppress_health_check=NO_FIXTURE_CHECK)
@given(data=st.data(), new=st.binary(min_size=1, max_size=8))
def test_any_byte_damage_to_ggml_gives_model_error_or_passes(ggml_copy, data, new):
    """Anywhere in the file (tensor payload included: ggml has no checksum, so damage to weights
    or token text is invisible by design); validation may pass, or raise ModelError, nothing else."""
    path, original, lay = ggml_copy
    offset = data.draw(st.one_of(st.integers(0, 4096), st.integers(0, lay.size - len(new)),
                                 st.sampled_from(lay.tensor_heads).map(lambda h: h[0])), label="offset")
    offset = min(offset, lay.size - len(new))
    with flipped(path, offset, new):
        event(validate_outcome(validate_ggml, path))


@pytest.fixture(scope="module")
def gguf_copy(models, tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "model.gguf"
    shutil.copyfile(models.llm, path)
    data = path.read_bytes()
    return ModelCopy(path, data, gguf_data_end(data))


def gguf_data_end(data: bytes) -> int:
    """End of the last tensor's data, by an independent walk of the gguf header."""
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", data, 4)
    pos = 24
    scalar = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def string() -> bytes:
        nonlocal pos
        (n,) = struct.unpack_from("<Q", data, pos)
        pos += 8 + n
        return data[pos - n : pos]

    def value(t: int):
        nonlocal pos
        if t in scalar:
            pos += scalar[t]
            return int.from_bytes(data[pos - scalar[t] : pos], "little")
        if t == 8:
            return string()
        et, count = struct.unpack_from("<IQ", data, pos)
        pos += 12
        for _ in range(count):
            value(et)
        return None

    align = 32
    for _ in range(n_kv):
        key = string()
        (t,) = struct.unpack_from("<I", data, pos)
        pos += 4
        v = value(t)
        if key == b"general.alignment":
            align = v
    ends = []
    block = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 36),
             10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292), 30: (1, 2)}
    for _ in range(n_tensors):
        string()
        (nd,) = struct.unpack_from("<I", data, pos)
        dims = struct.unpack_from(f"<{nd}Q", data, pos + 4)
        tt, off = struct.unpack_from("<IQ", data, pos + 4 + 8 * nd)
        pos += 4 + 8 * nd + 12
        b, bb = block[tt]
        ends.append((off, math.prod(dims) // b * bb))
    start = -(-pos // align) * align
    return max(start + off + n for off, n in ends)


@settings(max_examples=30, deadline=None, suppress_health_check=NO_FIXTURE_CHECK)
@given(data=st.data())
def test_truncated_gguf_is_refused(gguf_copy, tmp_path, data):
    _, original, end = gguf_copy
    cut = data.draw(st.one_of(st.integers(0, 3_000_000), st.integers(0, end - 1), st.integers(end - 64, end - 1)),
                    label="cut")
    p = tmp_path / "cut.gguf"
    p.write_bytes(original[:cut])
    assert validate_outcome(validate_gguf, p) == "refused"


@pytest.mark.parametrize("offset", [382])
def test_a_gguf_length_past_any_file_is_refused(gguf_copy, offset):
    """A length that points far past the file (found by the fuzz below: an OverflowError, not a ModelError)."""
    with flipped(gguf_copy.path, offset, b"\x00\x00\x09"):
        assert validate_outcome(validate_gguf, gguf_copy.path) == "refused"


@settings(max_examples=120, deadline=None, suppress_health_check=NO_FIXTURE_CHECK)
@given(data=st.data(), new=st.binary(min_size=1, max_size=8))
def test_any_byte_damage_to_gguf_gives_model_error_or_passes(gguf_copy, data, new):
    path, original, _ = gguf_copy
    offset = data.draw(st.one_of(st.integers(0, 64), st.integers(0, 2_000_000), st.integers(0, len(original) - 8)),
                       label="offset")
    with flipped(path, offset, new):
        event(validate_outcome(validate_gguf, path))


_ENGINE_PROBE = """
import sys
from models.provision import ModelError
from engines.stt.whispercpp import WhisperEngine
try:
    WhisperEngine(sys.argv[1])
except ModelError as exc:
    print("ModelError", "pywhispercpp.model" in sys.modules, exc)
    sys.exit(3)
print("loaded")
"""


@pytest.mark.parametrize("damage", ["truncated_mid_tensor", "bad_magic", "token_length_flipped", "wrong_audio_ctx",
                                    "bad_ftype", "ftype_f32_but_q8_0_tensors", "heads_do_not_divide_width"])
def test_whisper_engine_refuses_corrupt_model_before_loading_native_code(ggml_copy, tmp_path, damage):
    """In a child process: a segfault in whisper.cpp must not take pytest down with it."""
    _, original, lay = ggml_copy
    blob = bytearray(original[: lay.tensor_data[5][0] + 1000] if damage == "truncated_mid_tensor" else original)
    if damage == "bad_magic":
        blob[0] ^= 0x01
    elif damage == "token_length_flipped":
        blob[lay.tok_lens[100]] ^= 0x04
    elif damage == "wrong_audio_ctx":  # whisper.cpp: "wrong shape", no context, then SIGSEGV on transcribe
        struct.pack_into("<i", blob, 8, lay.hparams[1] // 2)
    elif damage == "bad_ftype":  # whisper.cpp: SIGABRT in ggml
        struct.pack_into("<i", blob, 4 + 4 * 10, 5)
    elif damage == "ftype_f32_but_q8_0_tensors":  # whisper.cpp: "wrong size", then SIGSEGV
        struct.pack_into("<i", blob, 4 + 4 * 10, 0)
    elif damage == "heads_do_not_divide_width":  # whisper.cpp: SIGABRT in ggml
        struct.pack_into("<i", blob, 4 + 4 * 3, lay.hparams[3] + 1)
    p = tmp_path / f"{damage}.bin"
    p.write_bytes(bytes(blob))
    proc = subprocess.run([sys.executable, "-c", _ENGINE_PROBE, str(p)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 3, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    assert proc.stdout.startswith("ModelError False"), proc.stdout  # pywhispercpp never imported


# =============================================================================================
# 5. Config
# =============================================================================================

SECTIONS = {f.name: type(getattr(Config(), f.name)) for f in dataclasses.fields(Config)}
KEYS = {name: [f.name for f in dataclasses.fields(cls)] for name, cls in SECTIONS.items()}

toml_scalars = st.one_of(
    st.text(max_size=12), st.integers(-(2**63), 2**63 - 1), st.floats(), st.booleans(),
    st.sampled_from(["0", "-1", "1e9", "nan", "inf", "-inf", "true", "yes", "0x10", " 5 ", "", "1_000", "١٢"]),
)
toml_values = st.recursive(toml_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(
    st.sampled_from(["a", "b", "engine"]), c, max_size=2), max_leaves=4)


def toml_literal(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string, except for lone surrogates (then: a TOML error)
    if isinstance(v, list):
        return "[" + ", ".join(toml_literal(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_literal(x)}" for k, x in v.items()) + "}"


@st.composite
def toml_documents(draw) -> bytes:
    lines = []
    if draw(st.integers(0, 9)) == 0:  # a top-level key, e.g. `audio = 5` instead of a table
        lines.append(f"{draw(st.sampled_from([*SECTIONS, 'x']))} = {toml_literal(draw(toml_values))}")
    for section in draw(st.lists(st.one_of(st.sampled_from(sorted(SECTIONS)), st.sampled_from(["nope", "audio.sub"])),
                                 max_size=3, unique=True)):
        lines.append(f"[{section}]")
        known = KEYS.get(section, ["x"])
        for key in draw(st.lists(st.one_of(st.sampled_from(known), st.sampled_from(["typo", "Input"])),
                                 max_size=4, unique=True)):
            lines.append(f"{key} = {toml_literal(draw(toml_values))}")
    doc = "\n".join(lines).encode("utf-8", "surrogatepass")
    mangle = draw(st.integers(0, 9))
    if mangle == 0:
        doc = draw(st.binary(max_size=80))
    elif mangle == 1:
        doc = doc[: draw(st.integers(0, len(doc)))]
    elif mangle == 2:
        doc = b"a = " + b"[" * 3000 + b"]" * 3000  # deep nesting
    return doc


env_dicts = st.dictionaries(
    st.one_of(
        st.sampled_from(sorted(SECTIONS)).flatmap(
            lambda s: st.sampled_from(KEYS[s] + ["typo"]).map(lambda k: f"VIGIL_{s.upper()}__{k.upper()}")),
        st.sampled_from(["VIGIL_NOPE__X", "VIGIL___X", "VIGIL_AUDIO__", "VIGIL_AUDIO", "PATH", "VIGIL_audio__LOOP"]),
    ),
    st.one_of(st.text(max_size=10), st.sampled_from(["nan", "inf", "-1", "0", "1e400", "9" * 5000, "true", "maybe"])),
    max_size=4,
)


def check_config(cfg: Config) -> None:
    """What a returned Config promises: every value of its declared type, finite, and within its key's rule."""
    from core.config import rule_of

    defaults = Config()
    for section in SECTIONS:
        for key in KEYS[section]:
            value, default = getattr(getattr(cfg, section), key), getattr(getattr(defaults, section), key)
            assert type(value) is type(default), (section, key, value)
            if isinstance(value, float):
                assert math.isfinite(value), (section, key, value)
            rule = rule_of(SECTIONS[section], key)
            rule.check(f"[{section}] {key}", value)  # raises ConfigError if the loader let it through
            if rule.gt is not None:
                assert value > rule.gt, (section, key, value)
            if rule.le is not None:
                assert value <= rule.le, (section, key, value)
    assert 0 <= cfg.http.port <= 65535


@settings(max_examples=400, deadline=None, suppress_health_check=NO_FIXTURE_CHECK)
@given(doc=toml_documents(), environ=env_dicts)
def test_load_config_returns_a_valid_config_or_raises_config_error(doc, environ, tmp_path):
    p = tmp_path / "vigil.toml"
    p.write_bytes(doc)
    try:
        cfg = load_config(p, environ=environ)
    except ConfigError as exc:
        assert str(exc)
        event("ConfigError")
        return
    event("Config")
    check_config(cfg)


def test_load_config_unreadable_paths_raise_config_error(tmp_path):
    with pytest.raises(ConfigError):
        load_config(tmp_path / "missing.toml", environ={})
    with pytest.raises(ConfigError):
        load_config(tmp_path, environ={})  # a directory


# =============================================================================================
# 6. MetricsStore
# =============================================================================================


def record(store: MetricsStore, session: int, response: str = "ok") -> bool:
    return store.record(session, transcript="what time is it", speaker="", route="skill:time", degraded=False,
                        response=response, spans={"total": 0.5}, marks={"wake": 1})


def test_metrics_locked_database_drops_counts_and_recovers(tmp_path):
    store = MetricsStore(tmp_path, run_id="t")
    try:
        assert record(store, 1)
        other = sqlite3.connect(tmp_path / "metrics.db", isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        assert record(store, 2) is False
        assert store.write_errors == 1
        other.execute("COMMIT")
        other.close()
        assert record(store, 3)
        assert [r["session"] for r in store.recent()] == [1, 3]
        assert store.write_errors == 1
    finally:
        store.close()


@contextmanager
def tiny_tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (full-disk / read-only filesystem cases)")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True, capture_output=True)


def test_metrics_full_disk_drops_counts_and_recovers(tmp_path):
    with tiny_tmpfs(tmp_path / "fs", "512k") as fs:
        store = MetricsStore(fs, run_id="t")
        try:
            assert record(store, 1)
            filler = fs / "filler"
            with open(filler, "wb", buffering=0) as f:  # fill every last block
                try:
                    while True:
                        f.write(b"\xff" * 4096)
                except OSError:
                    pass
            failed = [record(store, 10 + k, response="x" * 20_000) for k in range(3)]
            assert failed == [False] * 3
            assert store.write_errors == 3
            filler.unlink()
            assert record(store, 20, response="y" * 20_000)
            assert [r["session"] for r in store.recent()][-1] == 20
            assert store.write_errors == 3
        finally:
            store.close()


def test_metrics_read_only_state_dir_drops_counts_and_recovers(tmp_path):
    """A state dir on a read-only filesystem (e.g. ProtectSystem=strict without ReadWritePaths):
    the pipeline must still start and answer; metrics are dropped and counted until it is writable."""
    with tiny_tmpfs(tmp_path / "fs", "1m") as fs:
        (fs / "state").mkdir()
        remount(fs, "ro")
        store = MetricsStore(fs / "state", run_id="t")
        try:
            assert record(store, 1) is False
            assert record(store, 2) is False
            assert store.write_errors == 2
            assert store.recent() == []
            remount(fs, "rw")
            assert record(store, 3)
            assert [r["session"] for r in store.recent()] == [3]
            assert store.write_errors == 2
        finally:
            store.close()


# =============================================================================================
# 7. Ollama: garbage NDJSON
# =============================================================================================


class MalformedOllamaDouble:
    """A loopback 'Ollama' whose /api/chat answers 200 with whatever lines the test sets."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.lines: list[bytes] = []
        self.split = 1  # bytes per HTTP chunk boundary jitter
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                with conn:
                    self._serve(conn)
            except OSError:
                pass

    def _serve(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            body += conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n"
                     b"Connection: close\r\n\r\n")
        stream = b"".join(line + b"\n" for line in self.lines)
        step = max(1, self.split)
        for i in range(0, len(stream), step):  # chunk boundaries fall anywhere, even mid-line
            part = stream[i : i + step]
            conn.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        conn.sendall(b"0\r\n\r\n")

    def close(self) -> None:
        self.sock.close()


def token_line(text: str) -> bytes:
    return json.dumps({"model": "m", "created_at": "2026-01-01T00:00:00Z",
                       "message": {"role": "assistant", "content": text}, "done": False}).encode()


def done_line(reason) -> bytes:
    return json.dumps({"model": "m", "message": {"role": "assistant", "content": ""}, "done": True,
                       "done_reason": reason, "eval_count": 3}).encode()


good_lines = st.text(max_size=6).map(lambda t: ("token", t, token_line(t)))
done_lines = st.sampled_from(["stop", "length", None]).map(lambda r: ("done", r, done_line(r)))
garbage_lines = st.one_of(
    st.binary(max_size=30).filter(lambda b: b"\n" not in b and b"\r" not in b).map(lambda b: ("bytes", None, b)),
    json_values.map(lambda v: ("json", None, json.dumps(v).encode())),
    st.fixed_dictionaries({}, optional={"message": json_values, "done": json_values, "done_reason": json_values,
                                        "eval_count": json_values, "model": json_values, "created_at": json_values})
    .map(lambda d: ("schema", None, json.dumps(d).encode())),
    json_values.map(lambda v: ("error", None, json.dumps({"error": v}).encode())),
    st.just(("notjson", None, b"<html>502 Bad Gateway</html>")),
)

ERROR_PREFIXES = ("malformed stream:", "server error:", "stream broken:", "http ", "error:", "timeout:")


@pytest.fixture(scope="module")
def malformed_ollama():
    double = MalformedOllamaDouble()
    yield double
    double.close()


@settings(max_examples=150, deadline=None, suppress_health_check=NO_FIXTURE_CHECK)
@given(lines=st.lists(st.one_of(good_lines, good_lines, done_lines, garbage_lines), max_size=8),
       split=st.sampled_from([1, 7, 4096]))
def test_ollama_garbage_stream_gives_error_or_valid_answer(malformed_ollama, lines, split):
    malformed_ollama.lines = [raw for _, _, raw in lines]
    malformed_ollama.split = split
    llm = OllamaLlm(host=malformed_ollama.url, model="m", timeout_s=5.0)
    try:
        result = llm.stream([{"role": "user", "content": "hi"}], on_token=lambda _t: False, max_tokens=8)
    finally:
        llm.close()
    assert isinstance(result, StreamResult)
    assert isinstance(result.text, str) and isinstance(result.n_tokens, int)
    note(repr(result))
    event(result.finish_reason)
    if result.finish_reason == "error":
        assert result.error and result.error.startswith(ERROR_PREFIXES), result.error
    else:
        assert result.finish_reason in ("stop", "length") and result.error is None
    # Where the lines are unambiguous, the outcome is exact.
    kinds = [k for k, _, _ in lines]
    first_done = kinds.index("done") if "done" in kinds else len(kinds)
    prefix = lines[:first_done]
    if all(k == "token" for k, _, _ in prefix):
        if first_done < len(kinds):
            reason = lines[first_done][1]
            assert result.finish_reason == ("length" if reason == "length" else "stop")
            assert result.text == "".join(t for _, t, _ in prefix)
        else:
            assert result.finish_reason == "error" and result.error.startswith("stream broken:")
    elif "notjson" in [k for k, _, _ in prefix] and all(k in ("token", "notjson") for k, _, _ in prefix):
        assert result.finish_reason == "error" and result.error.startswith("malformed stream:")
