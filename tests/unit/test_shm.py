"""Shared-memory layer tests: real processes (spawn), real /dev/shm, no mocks."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import signal
import struct
import subprocess
import sys
import time
import uuid
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from core.audio import SAMPLE_RATE
from pipeline.backpressure import BackpressureController, RingSpec
from shm import segments
from shm.audio_ring import AudioRing
from shm.message_ring import MessageRing, MessageTooLarge, Policy
from shm.segments import attach_segment, cleanup_stale, create_segment, segment_name, segments_of

TOKEN = uuid.uuid4().hex[:8]  # marks every segment this test run creates
ROOT = Path(__file__).resolve().parents[2]
CTX = mp.get_context("spawn")


def seg(label: str) -> str:
    return segment_name(os.getpid(), f"t{TOKEN}-{label}")


def vigil_segments() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith("vigil-")}


@pytest.fixture(autouse=True)
def no_leftover_segments():
    """Every test must leave nothing named vigil-* behind.

    Only segments this run could have made (our pid as owner, or our token)
    are judged, so other Vigil processes on the box cannot fail us.
    """
    before = vigil_segments()
    yield
    leftover = sorted(
        n
        for n in vigil_segments() - before
        if TOKEN in n or segments.owner_of(n) == os.getpid()
    )
    for n in leftover:
        segments.unlink_quietly(n)
    assert leftover == [], f"segments left in /dev/shm: {leftover}"


# ---------------------------------------------------------------- helpers run in children


def expected_samples(seq: int, fs: int) -> np.ndarray:
    """Content unique to ``seq``, so any torn or misplaced frame shows."""
    return ((seq * 31 + np.arange(fs, dtype=np.int64)) & 0xFFFF).astype(np.uint16).view(np.int16)


def audio_writer(name: str, n_frames: int, barrier) -> None:
    ring = AudioRing.attach(name)
    barrier.wait(timeout=20)
    fs = ring.frame_samples
    for s in range(n_frames):
        while ring.headroom() == 0:  # "fast" mode: pace to the slowest active reader
            time.sleep(0.0002)
        assert ring.write(expected_samples(s, fs), capture_ns=10**9 + s) == s
    ring.close()


def audio_reader(name: str, slot: int, slow: bool, last: int, barrier, out) -> None:
    ring = AudioRing.attach(name)
    reader = ring.reader(start=0, slot=slot)
    if slow:
        reader.set_active(False)  # a slow reader must not hold capture back
    barrier.wait(timeout=20)
    seqs: list[int] = []
    bad = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        frame = reader.read_wait(0.05)
        if frame is None:
            continue
        seqs.append(frame.seq)
        if frame.capture_ns != 10**9 + frame.seq or not np.array_equal(
            frame.samples, expected_samples(frame.seq, ring.frame_samples)
        ):
            bad += 1
        if slow:
            time.sleep(0.001)
        if frame.seq == last:
            break
    out.put({"slot": slot, "seqs": seqs, "lost": reader.lost, "bad": bad, "torn": reader.torn})
    reader.close()
    ring.close()


def message_producer(name: str, tag: str, count: int, size: int) -> None:
    """Put ``tag:k`` messages padded to ``size`` bytes; count < 0 means forever."""
    ring = MessageRing.attach(name)
    k = 0
    while count < 0 or k < count:
        head = f"{tag}:{k}:".encode()
        if ring.put(head + b"x" * (size - len(head))):
            k += 1
    ring.close()


def audio_writer_from(name: str, count: int) -> None:
    """Write ``count`` frames (forever when < 0) as fast as possible, continuing from the ring's write_seq."""
    ring = AudioRing.attach(name)
    fs = ring.frame_samples
    k = 0
    while count < 0 or k < count:
        s = ring.write_seq
        ring.write(expected_samples(s, fs), capture_ns=10**9 + s)
        k += 1
    ring.close()


# ---------------------------------------------------------------- segments


def test_segments_are_owner_only_even_with_open_umask():
    old = os.umask(0)
    try:
        ctl = BackpressureController(
            os.getpid(),
            [RingSpec(f"t{TOKEN}-audio", "audio", 8, 160), RingSpec(f"t{TOKEN}-msg", "message", 4, 64)],
        )
        ctl.create_all()
    finally:
        os.umask(old)
    try:
        for name in ctl.specs:
            mode = os.stat(f"/dev/shm/{ctl.segment_name(name)}").st_mode & 0o777
            assert mode == 0o600, oct(mode)
    finally:
        ctl.unlink_all()


def test_create_replaces_existing_segment():
    name = seg("dup")
    a = create_segment(name, 4096)
    a.buf[0] = 7
    b = create_segment(name, 8192)
    try:
        assert b.size == 8192 and b.buf[0] == 0
    finally:
        a.close()
        b.close()
        segments.unlink_quietly(name)
    assert not segments.unlink_quietly(name)  # already gone: quiet


def test_cleanup_stale_removes_dead_owner_keeps_ours():
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"vigil-{dead.pid}-t{TOKEN}-stale"
    mine = seg("live")
    for n in (stale, mine):
        create_segment(n, 4096).close()
    try:
        removed = cleanup_stale()
        assert stale in removed
        assert mine not in removed
        assert mine in segments_of(os.getpid())
        assert not os.path.exists(f"/dev/shm/{stale}")
    finally:
        segments.unlink_quietly(stale)
        segments.unlink_quietly(mine)


def test_attach_does_not_register_with_resource_tracker():
    """A worker that attaches and exits must not unlink (or warn about) the segment."""
    ring = MessageRing.create(seg("track"), slots=2, slot_size=8)
    try:
        code = (
            "from shm.message_ring import MessageRing\n"
            f"r = MessageRing.attach({ring.name!r}); r.put(b'hi'); r.close()\n"
        )
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        assert "leaked" not in proc.stderr and "resource_tracker" not in proc.stderr, proc.stderr
        assert os.path.exists(f"/dev/shm/{ring.name}")
        assert ring.get() == b"hi"
    finally:
        ring.close()
        ring.unlink()


# ---------------------------------------------------------------- AudioRing


def test_audio_one_writer_three_readers_real_processes():
    fs, cap, n = 256, 64, 3000
    ring = AudioRing.create(sample_rate=SAMPLE_RATE, name=seg("audio"), frame_samples=fs, capacity=cap, max_readers=4)
    barrier = CTX.Barrier(4)
    out = CTX.Queue()
    procs = [CTX.Process(target=audio_writer, args=(ring.name, n, barrier))]
    for slot, slow in ((0, False), (1, False), (2, True)):
        procs.append(CTX.Process(target=audio_reader, args=(ring.name, slot, slow, n - 1, barrier, out)))
    try:
        for p in procs:
            p.start()
        results = {r["slot"]: r for r in (out.get(timeout=30) for _ in range(3))}
        for p in procs:
            p.join(timeout=10)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        ring.close()
        ring.unlink()
    for slot in (0, 1):  # fast readers: everything, in order, intact
        r = results[slot]
        assert r["seqs"] == list(range(n))
        assert r["lost"] == 0 and r["bad"] == 0
    slow = results[2]
    seqs = slow["seqs"]
    assert slow["bad"] == 0, "a torn or misplaced frame was returned"
    assert seqs == sorted(set(seqs)) and seqs[-1] == n - 1
    gaps = (seqs[0] - 0) + sum(b - a - 1 for a, b in zip(seqs, seqs[1:]))
    assert slow["lost"] == gaps > 0
    assert len(seqs) + slow["lost"] == n


def test_audio_reader_overrun_seek_and_lag():
    ring = AudioRing.create(sample_rate=SAMPLE_RATE, name=seg("audio2"), frame_samples=16, capacity=8, max_readers=2)
    try:
        reader = ring.reader(slot=0)
        assert ring.reader_lags() == {0: 0} and ring.min_active_cursor() == 0
        for s in range(20):
            ring.write(expected_samples(s, 16), capture_ns=s)
        assert reader.lag == 20 and ring.reader_lags() == {0: 20}
        first = reader.read()
        assert first.seq == 20 - 8 + 1 and reader.lost == 13  # oldest valid frame
        assert np.array_equal(first.samples, expected_samples(first.seq, 16))
        reader.seek(0)  # clamped to the oldest valid frame, not counted as lost
        assert reader.cursor == 13 and reader.lost == 13
        reader.seek(18)
        assert [reader.read().seq, reader.read().seq, reader.read()] == [18, 19, None]
        assert ring.total_lost() == 13
        reader.set_active(False)
        assert ring.min_active_cursor() is None and ring.headroom() is None
        successor = ring.reader(slot=0)  # a restarted reader keeps the slot's history
        successor.set_active(False)
        assert ring.total_lost() == 13 and ring.reader_stats()[0]["max_lag"] == 7
        with pytest.raises(ValueError):
            ring.write(np.zeros(16, np.float32))
        with pytest.raises(ValueError):
            ring.write(np.zeros(15, np.int16))
        assert ring.write_seq == 20  # nothing written by the bad calls
        t0 = time.monotonic()
        assert reader.read_wait(0.05) is None
        assert 0.04 < time.monotonic() - t0 < 0.5
        reader.close()
    finally:
        ring.close()
        ring.unlink()


def test_audio_writer_restart_rewrites_torn_frame():
    """A writer killed mid-frame never published it; its successor rewrites it."""
    fs = 32
    ring = AudioRing.create(sample_rate=SAMPLE_RATE, name=seg("audio3"), frame_samples=fs, capacity=4)
    try:
        reader = ring.reader(start=0)
        ring.write(expected_samples(0, fs), capture_ns=0)
        # Simulate the kill: seq_begin=1 and half the samples stored, nothing else.
        i = 1 % ring.capacity
        ring._seq_begin[i] = 1
        ring._samples[i, : fs // 2] = -1
        assert [reader.read().seq, reader.read()] == [0, None]
        successor = AudioRing.attach(ring.name)
        assert successor.write(expected_samples(1, fs), capture_ns=1) == 1
        frame = reader.read()
        assert frame.seq == 1 and np.array_equal(frame.samples, expected_samples(1, fs))
        successor.close()
    finally:
        ring.close()
        ring.unlink()


# ---------------------------------------------------------------- MessageRing policies


def test_block_times_out_and_counts_drop_when_consumer_stalls():
    ring = MessageRing.create(seg("block"), slots=4, slot_size=32, policy=Policy.BLOCK, block_timeout_s=0.05)
    try:
        assert all(ring.put(b"m%d" % k) for k in range(4))
        t0 = time.monotonic()
        assert ring.put(b"late") is False
        assert 0.04 < time.monotonic() - t0 < 0.5
        s = ring.stats()
        assert (s.puts, s.drops, s.occupancy, s.high_water) == (4, 1, 4, 4)
        assert [ring.get() for _ in range(5)] == [b"m0", b"m1", b"m2", b"m3", None]
    finally:
        ring.close()
        ring.unlink()


def test_block_delivers_everything_across_processes_when_consumer_keeps_up():
    n = 3000
    ring = MessageRing.create(seg("block2"), slots=16, slot_size=64, policy=Policy.BLOCK, block_timeout_s=5.0)
    proc = CTX.Process(target=message_producer, args=(ring.name, "A", n, 40))
    try:
        proc.start()
        got = []
        deadline = time.monotonic() + 20
        while len(got) < n and time.monotonic() < deadline:
            msg = ring.get(timeout=0.1)
            if msg is not None:
                got.append(int(msg.split(b":")[1]))
        proc.join(timeout=10)
        assert got == list(range(n))
        s = ring.stats()
        assert (s.puts, s.drops, s.lost, s.corrupt) == (n, 0, 0, 0)
        assert 1 <= s.high_water <= 16
    finally:
        if proc.is_alive():
            proc.kill()
        ring.close()
        ring.unlink()


def test_drop_newest_keeps_the_first_n():
    ring = MessageRing.create(seg("newest"), slots=8, slot_size=16, policy=Policy.DROP_NEWEST)
    try:
        results = [ring.put(b"%d" % k) for k in range(20)]
        assert results == [True] * 8 + [False] * 12
        assert [ring.get() for _ in range(9)] == [b"%d" % k for k in range(8)] + [None]
        s = ring.stats()
        assert (s.puts, s.drops, s.lost, s.high_water) == (8, 12, 0, 8)
    finally:
        ring.close()
        ring.unlink()


def test_drop_oldest_keeps_the_newest_n_and_counts_lost_exactly():
    name = seg("oldest")
    producer = MessageRing.create(name, slots=8, slot_size=16, policy=Policy.DROP_OLDEST)
    consumer = MessageRing.attach(name, decoder=lambda b: int(b))
    try:
        assert consumer.policy is Policy.DROP_OLDEST
        assert all(producer.put(b"%d" % k) for k in range(27))
        assert [consumer.get() for _ in range(9)] == list(range(19, 27)) + [None]
        s = consumer.stats()
        assert (s.puts, s.drops, s.lost, s.corrupt) == (27, 19, 19, 0)
        producer.put(b"27")  # and the ring carries on normally afterwards
        assert consumer.get() == 27 and consumer.stats().lost == 19
    finally:
        consumer.close()
        producer.close()
        producer.unlink()


def test_oversize_raises_and_writes_nothing():
    ring = MessageRing.create(seg("big"), slots=4, slot_size=16)
    try:
        before = bytes(ring._buf)
        with pytest.raises(MessageTooLarge) as err:
            ring.put(b"x" * 17)
        assert isinstance(err.value, ValueError)
        assert bytes(ring._buf) == before
        assert ring.stats().puts == 0
        assert ring.put(b"y" * 16) and ring.get() == b"y" * 16  # exactly a slot fits
    finally:
        ring.close()
        ring.unlink()


# ---------------------------------------------------------------- corruption


def scribble(ring: MessageRing, index: int, at: int, data: bytes) -> None:
    """Write bytes straight into the slot memory through a separate mapping."""
    raw = attach_segment(ring.name)
    try:
        off = ring.slot_offset(index) + at
        raw.buf[off : off + len(data)] = data
    finally:
        raw.close()


def slot_is_valid(ring: MessageRing, index: int) -> bool:
    """Independent oracle of the slot format, used to rule out lucky garbage."""
    raw = attach_segment(ring.name)
    try:
        off = ring.slot_offset(index)
        seq_begin, length, crc = struct.unpack_from("<QII", raw.buf, off)
        end_at = off + 16 + (ring.slot_size + 7) // 8 * 8
        (seq_end,) = struct.unpack_from("<Q", raw.buf, end_at)
        if seq_begin != index or seq_end != index or length > ring.slot_size:
            return False
        return zlib.crc32(bytes(raw.buf[off + 16 : off + 16 + length])) == crc
    finally:
        raw.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(min_size=1, max_size=120), at=st.integers(min_value=0, max_value=119), warm=st.integers(0, 5))
def test_random_garbage_in_a_slot_is_skipped_and_counted(garbage, at, warm):
    ring = MessageRing.create(seg("fuzz"), slots=4, slot_size=96)  # stride 128 bytes
    try:
        for k in range(warm):  # move the slot indices off zero
            ring.put(b"w%d" % k)
            assert ring.get() == b"w%d" % k
        ring.put(b"victim")
        garbage = garbage[: 128 - at]
        scribble(ring, warm, at, garbage)
        assume(not slot_is_valid(ring, warm))
        ring.put(b"after")
        assert ring.get() == b"after"
        s = ring.stats()
        assert (s.corrupt, s.lost, s.occupancy) == (1, 0, 0)
    finally:
        ring.close()
        ring.unlink()


@pytest.mark.parametrize(
    "at, data",
    [
        (12, b"\xde\xad\xbe\xef"),  # bad crc
        (8, struct.pack("<I", 10_000)),  # bad length
        (8, struct.pack("<I", 3)),  # plausible length, crc no longer matches
        (0, struct.pack("<Q", 99)),  # seq_begin mismatch
        (16 + 64, struct.pack("<Q", 99)),  # seq_end mismatch
        (16, b"!"),  # payload flipped
    ],
)
def test_targeted_corruption_is_skipped(at, data, caplog):
    ring = MessageRing.create(seg("bad"), slots=4, slot_size=64)
    try:
        ring.put(b"victim-message")
        scribble(ring, 0, at, data)
        ring.put(b"good")
        with caplog.at_level(logging.WARNING, logger="vigil.shm"):
            assert ring.get() == b"good"
            assert ring.get() is None
        assert ring.stats().corrupt == 1
        assert any("corrupt" in r.message for r in caplog.records)
    finally:
        ring.close()
        ring.unlink()


def test_undecodable_message_is_skipped_and_logs_are_rate_limited(caplog):
    name = seg("decode")
    producer = MessageRing.create(name, slots=8, slot_size=64)
    consumer = MessageRing.attach(name, decoder=json.loads)
    try:
        for payload in (b"{not json", b"\xff\xfe", b"[1,", b'{"ok": true}'):
            producer.put(payload)
        with caplog.at_level(logging.WARNING, logger="vigil.shm"):
            assert consumer.get() == {"ok": True}
        assert consumer.stats().corrupt == 3
        lines = [r for r in caplog.records if r.name == "vigil.shm"]
        assert len(lines) == 1, [r.message for r in lines]  # one line per second per ring
    finally:
        consumer.close()
        producer.close()
        producer.unlink()


# ---------------------------------------------------------------- crash and restart


def test_producer_sigkilled_mid_puts_then_successor_continues():
    ring = MessageRing.create(seg("kill"), slots=8, slot_size=2048, policy=Policy.BLOCK, block_timeout_s=2.0)
    first = CTX.Process(target=message_producer, args=(ring.name, "A", -1, 2000))
    second = CTX.Process(target=message_producer, args=(ring.name, "B", 300, 2000))
    a: list[int] = []
    b: list[int] = []
    try:
        first.start()
        deadline = time.monotonic() + 20
        while len(a) < 500 and time.monotonic() < deadline:
            msg = ring.get(timeout=0.1)
            if msg is not None:
                a.append(int(msg.split(b":")[1]))
        os.kill(first.pid, signal.SIGKILL)  # most likely blocked in or writing a put
        first.join(timeout=10)
        second.start()
        while (not b or b[-1] != 299) and time.monotonic() < deadline:
            msg = ring.get(timeout=0.1)
            if msg is None:
                continue
            tag, k, _ = msg.split(b":", 2)
            (a if tag == b"A" else b).append(int(k))
            assert len(msg) == 2000
        second.join(timeout=10)
        assert a == list(range(len(a))) and len(a) >= 500
        assert b == list(range(300))
        s = ring.stats()
        assert (s.corrupt, s.lost, s.drops) == (0, 0, 0)
    finally:
        for p in (first, second):
            if p.is_alive():
                p.kill()
        ring.close()
        ring.unlink()


def test_torn_slot_from_killed_producer_is_rewritten():
    """Deterministic version of the kill: slot half-written, never published."""
    ring = MessageRing.create(seg("torn"), slots=4, slot_size=64)
    try:
        ring.put(b"zero")
        scribble(ring, 1, 0, struct.pack("<QII", 1, 50, 0) + b"half-writ")
        assert ring.get() == b"zero" and ring.get() is None
        successor = MessageRing.attach(ring.name)
        assert successor.put(b"one")
        assert ring.get() == b"one"
        assert ring.stats().corrupt == 0
        successor.close()
    finally:
        ring.close()
        ring.unlink()


# ---------------------------------------------------------------- BackpressureController


@pytest.mark.parametrize(
    "specs, match",
    [
        ([RingSpec("a", "message", 0, 64)], "slots"),
        ([RingSpec("a", "message", 4, -1)], "slot_size"),
        ([RingSpec("a", "message", 4, 64), RingSpec("a", "audio", 4, 64)], "twice"),
        ([RingSpec("a", "message", 4, 64, block_timeout_s=float("inf"))], "block_timeout_s"),
        ([RingSpec("a/b", "message", 4, 64)], "name"),
        ([RingSpec("a", "video", 4, 64)], "kind"),  # type: ignore[arg-type]
        ([RingSpec("a", "message", 1 << 14, 1 << 13)], "budget"),
    ],
)
def test_controller_refuses_bad_or_unbounded_specs(specs, match):
    with pytest.raises(ValueError, match=match):
        BackpressureController(os.getpid(), specs)


def test_controller_creates_reports_and_unlinks():
    specs = [
        RingSpec(f"t{TOKEN}-mic", "audio", 375, 1280),
        RingSpec(f"t{TOKEN}-events", "message", 16, 256, Policy.DROP_NEWEST),
    ]
    with BackpressureController(os.getpid(), specs) as ctl:
        rings = ctl.create_all()
        audio, events = rings[f"t{TOKEN}-mic"], rings[f"t{TOKEN}-events"]
        assert (audio.frame_samples, audio.capacity) == (1280, 375)
        assert (events.slots, events.policy) == (16, Policy.DROP_NEWEST)
        reader = AudioRing.attach(ctl.segment_name(f"t{TOKEN}-mic"))
        r = reader.reader(slot=3)
        for _ in range(5):
            audio.write(np.zeros(1280, np.int16))
        for _ in range(20):
            events.put(b"e")
        stats = ctl.stats()
        assert stats[f"t{TOKEN}-mic"]["reader_lags"] == {3: 5}
        assert stats[f"t{TOKEN}-events"]["drops"] == 4
        assert stats[f"t{TOKEN}-events"]["high_water"] == 16
        r.close()
        reader.close()
        assert len(segments_of(os.getpid())) >= 2
    assert not any(TOKEN in n for n in vigil_segments())


def test_writers_sigkilled_in_a_tight_write_loop_leave_nothing_a_reader_takes_and_successors_continue():
    """kill -9 lands mid-write (the writers never wait); readers reading concurrently get only intact
    data, nothing is counted corrupt, and a restarted writer carries on from where the ring stands."""
    fs = 512
    audio = AudioRing.create(sample_rate=SAMPLE_RATE, name=seg("killaudio"), frame_samples=fs, capacity=64,
                             max_readers=2)
    msgs = MessageRing.create(seg("killmsg"), slots=64, slot_size=1024, policy=Policy.DROP_OLDEST)
    procs = [CTX.Process(target=audio_writer_from, args=(audio.name, -1)),
             CTX.Process(target=message_producer, args=(msgs.name, "A", -1, 1000))]
    reader = audio.reader(start=0, slot=0)
    frames: list[int] = []
    texts: list[bytes] = []
    bad = 0

    def drain(seconds: float) -> None:
        nonlocal bad
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            frame = reader.read()
            if frame is not None:
                frames.append(frame.seq)
                if frame.capture_ns != 10**9 + frame.seq or not np.array_equal(frame.samples,
                                                                              expected_samples(frame.seq, fs)):
                    bad += 1
            msg = msgs.get()
            if msg is not None:
                texts.append(msg)

    try:
        for p in procs:
            p.start()
        for round_ in range(5):  # several kills at arbitrary moments of the loops
            w0, p0 = audio.write_seq, msgs.stats().puts
            until = time.monotonic() + 20
            while (audio.write_seq < w0 + 200 or msgs.stats().puts < p0 + 200) and time.monotonic() < until:
                drain(0.01)  # both writers are writing flat out
            drain(0.05 + 0.05 * round_)
            assert procs[0].is_alive() and procs[1].is_alive()
            assert audio.write_seq >= w0 + 200 and msgs.stats().puts >= p0 + 200
            for p in procs:
                os.kill(p.pid, signal.SIGKILL)
            for p in procs:
                p.join(10)
            assert [p.exitcode for p in procs] == [-signal.SIGKILL] * 2
            drain(0.05)
            procs = [CTX.Process(target=audio_writer_from, args=(audio.name, -1)),
                     CTX.Process(target=message_producer, args=(msgs.name, "A", -1, 1000))]
            for p in procs:
                p.start()
        for p in procs:
            os.kill(p.pid, signal.SIGKILL)  # the successors of the last round, wherever they are
            p.join(10)
        drain(0.05)
        # The last successors write a known tail, then exit normally.
        tail_from = audio.write_seq
        last = [CTX.Process(target=audio_writer_from, args=(audio.name, 20)),
                CTX.Process(target=message_producer, args=(msgs.name, "B", 30, 1000))]
        for p in last:
            p.start()
        for p in last:
            p.join(20)
            assert p.exitcode == 0
        drain(0.2)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        reader.close()
        stats = msgs.stats()
        audio.close()
        audio.unlink()
        msgs.close()
        msgs.unlink()
    assert bad == 0, "a torn audio frame was returned"
    assert frames == sorted(set(frames)) and len(frames) > 100
    assert frames[-20:] == list(range(tail_from, tail_from + 20))  # the successor continued the sequence
    assert stats.corrupt == 0  # a killed producer never publishes a torn slot
    a = [m for m in texts if m.startswith(b"A:")]
    b = [m for m in texts if m.startswith(b"B:")]
    assert len(a) > 100 and all(len(m) == 1000 and m.endswith(b"x" * 900) for m in texts)
    assert [int(m.split(b":")[1]) for m in b] == list(range(30))
