"""Where capture audio comes from: a WAV file or the microphone.

Every source yields fixed frames of 16 kHz mono int16 (``frame_samples`` long,
1280 = 80 ms by default, the openWakeWord frame) together with
``capture_ns``: the ``time.monotonic_ns()`` at which the *last* sample of the
frame was captured.  CLOCK_MONOTONIC is comparable across processes on Linux,
so every stage can measure latency against it.

* ``WavSource`` replays a file, paced in real time against an absolute
  schedule (no drift), or as fast as the consumer pulls.
* ``PyAudioSource`` captures from a device in PyAudio callback mode and
  survives the failures DESIGN.md lists: server killed (callbacks just stop),
  server frozen (close/open block forever), no device at all.  It never
  raises out of ``frames()``; it reports its state through ``on_state``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import soxr

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
DEFAULT_FRAME_SAMPLES = 1280
Frame = tuple[np.ndarray, int]  # (int16 samples, capture_ns of the last sample)


# =============================================================================
# WAV loading
# =============================================================================

class AudioFormatError(ValueError):
    """A file is not audio we can use; the message names the file and the reason."""


WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# KSDATAFORMAT_SUBTYPE_* GUIDs share this tail after the 2-byte format code.
_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
_FORMAT_NAMES = {0x0002: "MS ADPCM", 0x0006: "A-law", 0x0007: "mu-law", 0x0011: "IMA ADPCM",
                 0x0031: "GSM 6.10", 0x0050: "MPEG", 0x0055: "MP3", 0x00FF: "AAC"}

# Limits: generous for real audio, small enough that a lying header cannot make
# us allocate gigabytes or loop over millions of chunks.
MAX_DATA_BYTES = 2 * 1024**3          # 2 GiB of sample data (~3 h of 48 kHz stereo float)
MAX_FMT_BYTES = 4096
MAX_CHUNKS = 10_000
MIN_RATE, MAX_RATE = 1000, 768_000
MAX_CHANNELS = 64


@dataclass(frozen=True)
class WavInfo:
    """What the ``fmt `` chunk says, after validation."""
    format_tag: int        # WAVE_FORMAT_PCM or WAVE_FORMAT_IEEE_FLOAT (extensible resolved)
    channels: int
    rate: int
    bits: int              # container bits per sample
    block_align: int
    data_offset: int
    data_bytes: int

    @property
    def frames(self) -> int:
        return self.data_bytes // self.block_align


def read_wav_info(path: str | os.PathLike) -> WavInfo:
    """Parse and validate the RIFF/WAVE header of ``path`` without reading the samples.

    Why our own parser: the stdlib ``wave`` module rejects IEEE-float and
    WAVE_FORMAT_EXTENSIBLE files, which many tools write.  Every size is
    checked against the real file size before anything is allocated.
    """
    p = Path(path)

    def bad(reason: str) -> AudioFormatError:
        return AudioFormatError(f"{p}: {reason}")

    try:
        f = open(p, "rb")
    except OSError as e:
        raise bad(f"cannot open ({e.strerror or e})") from e
    with f:
        file_size = os.fstat(f.fileno()).st_size
        head = f.read(12)
        if len(head) < 12:
            raise bad(f"truncated header ({file_size} bytes; a WAV file needs at least 44)")
        riff, _riff_size, wave = struct.unpack("<4sI4s", head)
        if riff == b"RF64":
            raise bad("RF64 (64-bit WAV) is not supported; convert to a plain WAV")
        if riff != b"RIFF" or wave != b"WAVE":
            raise bad(f"not a RIFF/WAVE file (starts with {head[:4]!r})")

        fmt: bytes | None = None
        pos = 12
        for _ in range(MAX_CHUNKS):
            hdr = f.read(8)
            if len(hdr) < 8:
                if fmt is None:
                    raise bad("truncated header: no 'fmt ' chunk")
                raise bad("no 'data' chunk (truncated file?)")
            cid, size = struct.unpack("<4sI", hdr)
            pos += 8
            remaining = file_size - pos
            if cid == b"fmt ":
                if not 16 <= size <= MAX_FMT_BYTES:
                    raise bad(f"'fmt ' chunk has an absurd size ({size} bytes)")
                fmt = f.read(size)
                if len(fmt) < size:
                    raise bad("truncated header: 'fmt ' chunk cut short")
            elif cid == b"data":
                if fmt is None:
                    raise bad("'data' chunk before the 'fmt ' chunk")
                info = _parse_fmt(fmt, bad)
                if size == 0:
                    raise bad("zero-length data chunk (no audio)")
                if size > remaining:
                    raise bad(f"data chunk claims {size} bytes but only {remaining} remain "
                              "(truncated or corrupt file)")
                if size > MAX_DATA_BYTES:
                    raise bad(f"data chunk of {size} bytes exceeds the {MAX_DATA_BYTES}-byte limit")
                if size < info.block_align:
                    raise bad(f"data chunk ({size} bytes) is shorter than one sample frame")
                return WavInfo(info.format_tag, info.channels, info.rate, info.bits,
                               info.block_align, pos, size)
            else:
                if size > remaining:
                    raise bad(f"chunk {cid!r} claims {size} bytes but only {remaining} remain")
            skip = size + (size & 1)  # chunks are word-aligned
            if cid != b"fmt ":
                f.seek(skip, os.SEEK_CUR)
            elif size & 1:
                f.seek(1, os.SEEK_CUR)
            pos += skip
        raise bad(f"more than {MAX_CHUNKS} chunks before 'data'")


def _parse_fmt(fmt: bytes, bad: Callable[[str], AudioFormatError]) -> WavInfo:
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == WAVE_FORMAT_EXTENSIBLE:
        if len(fmt) < 40:
            raise bad("WAVE_FORMAT_EXTENSIBLE header is too short")
        cb_size, _valid_bits, _mask = struct.unpack("<HHI", fmt[16:24])
        guid = fmt[24:40]
        if cb_size < 22 or guid[2:] != _GUID_TAIL:
            raise bad("WAVE_FORMAT_EXTENSIBLE with an unknown sub-format GUID")
        tag = struct.unpack("<H", guid[:2])[0]
    if tag not in (WAVE_FORMAT_PCM, WAVE_FORMAT_IEEE_FLOAT):
        name = _FORMAT_NAMES.get(tag, f"format tag 0x{tag:04x}")
        raise bad(f"unsupported codec {name}; only PCM and IEEE float WAV are read")
    if not 1 <= channels <= MAX_CHANNELS:
        raise bad(f"absurd channel count {channels}")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise bad(f"absurd sample rate {rate} Hz")
    ok_bits = (8, 16, 24, 32) if tag == WAVE_FORMAT_PCM else (32, 64)
    if bits not in ok_bits:
        kind = "PCM" if tag == WAVE_FORMAT_PCM else "float"
        raise bad(f"unsupported {bits}-bit {kind} samples (supported: {ok_bits})")
    if block_align != channels * bits // 8:
        raise bad(f"block align {block_align} does not match {channels} channel(s) x {bits} bits")
    return WavInfo(tag, channels, rate, bits, block_align, 0, 0)


def _decode(raw: np.ndarray, info: WavInfo) -> np.ndarray:
    """Raw little-endian bytes → float32 samples in [-1, 1], shape (frames, channels)."""
    if info.format_tag == WAVE_FORMAT_IEEE_FLOAT:
        x = raw.view("<f4" if info.bits == 32 else "<f8")
        x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)  # a copy; clip before narrowing so a
        x = np.clip(x, -1.0, 1.0).astype(np.float32)  # float64 beyond float32's range is no overflow warning
    elif info.bits == 8:
        x = (raw.astype(np.float32) - 128.0) / 128.0  # 8-bit WAV is unsigned
    elif info.bits == 16:
        x = raw.view("<i2").astype(np.float32) / 32768.0
    elif info.bits == 24:
        b = raw.reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v & 0x800000, v - 0x1000000, v)
        x = v.astype(np.float32) / 8388608.0
    else:
        x = (raw.view("<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    return x.reshape(-1, info.channels)


def _to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16)


def load_wav(path: str | os.PathLike, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Load any PCM/float WAV as int16 mono at ``rate`` (16 kHz).

    Channels are averaged; other rates are resampled with soxr (HQ).  A 16-bit
    mono file already at ``rate`` comes back bit-exact.
    Raises AudioFormatError (naming the file) for anything that is not usable audio.
    """
    info = read_wav_info(path)
    n_bytes = info.frames * info.block_align  # a trailing partial frame is ignored
    with open(path, "rb") as f:
        f.seek(info.data_offset)
        raw = np.fromfile(f, dtype=np.uint8, count=n_bytes)
    if raw.size < n_bytes:  # the file shrank under us
        raise AudioFormatError(f"{path}: truncated data chunk")
    if info.format_tag == WAVE_FORMAT_PCM and info.bits == 16 and info.channels == 1 and info.rate == rate:
        return raw.view("<i2").astype(np.int16)
    x = _decode(raw, info)
    del raw
    mono = x[:, 0] if info.channels == 1 else x.mean(axis=1, dtype=np.float32)
    if info.rate != rate:
        mono = soxr.resample(mono, info.rate, rate, quality="HQ")
    if mono.size == 0:  # e.g. one sample at 48 kHz; an empty clip would break a looping WavSource
        raise AudioFormatError(f"{path}: too short: {info.frames} sample frame(s) at {info.rate} Hz "
                               f"is less than one sample at {rate} Hz")
    return _to_int16(mono)


# =============================================================================
# WAV source
# =============================================================================

class WavSource:
    """Replay a WAV file as if it were a microphone.

    ``realtime=True`` paces frames against an absolute schedule: frame k is
    released at ``t0 + (k+1)·frame_duration`` (the moment its last sample
    would have been captured), so sleep overshoot never accumulates.  Its
    ``capture_ns`` is that scheduled time, which makes ``t0_ns`` the ground
    truth for any position in the file (sample i ↔ ``t0_ns + i/16 kHz``).

    ``realtime=False`` yields as fast as the consumer pulls; ``capture_ns`` is
    then the actual monotonic time of the yield (a virtual schedule would lie
    in the future and make latencies negative).
    """

    def __init__(self, path: str | os.PathLike, frame_samples: int = DEFAULT_FRAME_SAMPLES,
                 realtime: bool = True, loop: bool = False, tail_silence_s: float = 1.0) -> None:
        if frame_samples <= 0:
            raise ValueError("frame_samples must be positive")
        self.path = Path(path)
        self.frame_samples = frame_samples
        self.sample_rate = SAMPLE_RATE
        self.realtime = realtime
        self.loop = loop
        self.tail_silence_s = max(0.0, tail_silence_s)
        self.audio = load_wav(path)  # errors surface at construction, not mid-stream
        self.t0_ns: int | None = None
        self.frames_yielded = 0
        self._closed = False

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    def _chunks(self) -> Iterator[np.ndarray]:
        """Fixed-size frames of the file (looped, or padded + tail silence)."""
        n, a = self.frame_samples, self.audio
        if self.loop:
            pos = 0
            while True:
                idx = (np.arange(pos, pos + n) % len(a))
                yield a[idx]
                pos = (pos + n) % len(a)
        tail = int(round(self.tail_silence_s * SAMPLE_RATE))
        total = len(a) + tail
        n_frames = -(-total // n)
        padded = np.zeros(n_frames * n, dtype=np.int16)
        padded[:len(a)] = a
        for k in range(n_frames):
            yield padded[k * n:(k + 1) * n]

    def frames(self) -> Iterator[Frame]:
        """Yield ``(frame int16[frame_samples], capture_ns)``; see the class docstring."""
        frame_ns_exact = self.frame_samples * 1e9 / SAMPLE_RATE
        self.t0_ns = t0 = time.monotonic_ns()
        for k, chunk in enumerate(self._chunks()):
            if self._closed:
                return
            if self.realtime:
                due = t0 + int(round((k + 1) * frame_ns_exact))
                delay = due - time.monotonic_ns()
                if delay > 0:
                    time.sleep(delay / 1e9)
                capture_ns = due
            else:
                capture_ns = time.monotonic_ns()
            self.frames_yielded += 1
            yield chunk.copy(), capture_ns

    def close(self) -> None:
        """Stop a running ``frames()`` at the next frame."""
        self._closed = True


# =============================================================================
# Microphone source
# =============================================================================

# ctypes callbacks must stay referenced for as long as the libraries may call them.
_NATIVE_HANDLERS: list[Any] = []
_silenced = False


def silence_native_audio_logs() -> None:
    """Stop ALSA and JACK from printing ~80 lines when PortAudio initialises.

    Installs no-op error handlers through ctypes before ``PyAudio()``; the
    libraries are optional (a missing one simply has nothing to silence).
    """
    global _silenced
    if _silenced:
        return
    _silenced = True
    try:
        asound = ctypes.CDLL("libasound.so.2")
        handler_t = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                                     ctypes.c_int, ctypes.c_char_p)
        h = handler_t(lambda *a: None)
        asound.snd_lib_error_set_handler(h)
        _NATIVE_HANDLERS.append(h)
    except (OSError, AttributeError):
        pass
    try:
        jack = ctypes.CDLL("libjack.so.0")
        msg_t = ctypes.CFUNCTYPE(None, ctypes.c_char_p)
        h = msg_t(lambda m: None)
        jack.jack_set_error_function(h)
        jack.jack_set_info_function(h)
        _NATIVE_HANDLERS.append(h)
    except (OSError, AttributeError):
        pass


class NoInputDevice(RuntimeError):
    """No usable input device; the message says what to do instead."""


@dataclass
class _Engine:
    """One PyAudio instance and its open stream (replaced wholesale on reconnect)."""
    pa: Any
    stream: Any
    device_index: int
    device_name: str
    rate: int
    channels: int


class _Framer:
    """Callback-side state: convert device chunks to 16 kHz mono frames with capture times.

    capture_ns choice: PortAudio's ``time_info`` uses CLOCK_REALTIME here (it
    matches ``time.time()``, not ``time.monotonic()``), and with the ALSA
    ``pulse`` plugin its ADC time is just "now minus one buffer".  Converting
    wall-clock to monotonic would break on NTP steps.  Instead each callback
    observes ``origin = monotonic_at_callback − samples_delivered_so_far/16 kHz``.
    A callback can be late but never early, so the *minimum* observation over
    a sliding window (``WINDOW_S``) is the least-jittered estimate of when
    sample 0 was captured; the window lets it follow clock drift between the
    device and CLOCK_MONOTONIC (error ≤ drift × window, ~1 ms at 200 ppm).
    A frame's capture_ns is ``origin + (index of its last sample + 1)/16 kHz``,
    so frames are spaced exactly one frame apart except for small steps when
    the window minimum changes.  It is the time the sample reached this
    process: late by the server's own latency (a few ms), never early.
    """

    WINDOW_S = 5.0

    def __init__(self, frame_samples: int, device_rate: int, channels: int) -> None:
        self.frame_samples = frame_samples
        self.channels = channels
        self.resampler = (soxr.ResampleStream(device_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
                          if device_rate != SAMPLE_RATE else None)
        self.buf = np.zeros(0, dtype=np.int16)
        self.delivered = 0          # 16 kHz samples produced so far
        self.emitted = 0            # samples already handed out in frames
        self.window: deque[tuple[int, float]] = deque()  # (callback ns, origin obs), obs increasing
        self.last_capture_ns = 0

    def _origin(self, now_ns: int) -> float:
        obs = now_ns - self.delivered * 1e9 / SAMPLE_RATE
        w = self.window
        while w and w[-1][1] >= obs:
            w.pop()
        w.append((now_ns, obs))
        while w[0][0] < now_ns - self.WINDOW_S * 1e9:
            w.popleft()
        return w[0][1]  # sliding-window minimum

    def feed(self, data: bytes, now_ns: int) -> list[Frame]:
        x = np.frombuffer(data, dtype=np.int16)
        if self.channels > 1:
            x = x.reshape(-1, self.channels).mean(axis=1)
            if self.resampler is None:
                x = np.rint(x).astype(np.int16)
        if self.resampler is not None:
            y = self.resampler.resample_chunk(x.astype(np.float32) / 32768.0)
            x = _to_int16(y)
        self.delivered += len(x)
        origin = self._origin(now_ns)
        self.buf = np.concatenate([self.buf, x]) if len(self.buf) else x
        out: list[Frame] = []
        n = self.frame_samples
        while len(self.buf) >= n:
            frame, self.buf = self.buf[:n].copy(), self.buf[n:]
            self.emitted += n
            t = int(origin + self.emitted * 1e9 / SAMPLE_RATE)
            t = max(t, self.last_capture_ns + 1)
            self.last_capture_ns = t
            out.append((frame, t))
        return out


NO_DEVICE_HINT = ("no audio input device found (is a microphone connected and PulseAudio running?); "
                  "to run without a microphone use --input PATH.wav")


class PyAudioSource:
    """The microphone, via PyAudio in callback mode, with a watchdog and reconnects.

    The PortAudio callback converts device audio to 16 kHz mono frames and
    puts them in a bounded queue; when the queue is full the oldest frame is
    dropped and counted (``dropped_frames``) — capture never waits for a slow
    reader.  ``frames()`` pulls from the queue and runs the watchdog: no audio
    for ``no_audio_timeout_s`` → state "lost", then close + ``terminate()`` +
    fresh ``PyAudio()`` + open, with exponential backoff.  Every PortAudio
    open/close runs in a helper thread: the consumer waits at most
    ``engine_timeout_s`` for it, so a frozen server (which blocks ``close()``
    forever) cannot hang the caller; a hung operation is left to finish on its
    own and no new one starts until it has (PortAudio's global init cannot be
    re-entered safely).  ``frames()`` never raises and never returns until
    ``close()``.

    States passed to ``on_state(state, detail)`` on each change: "opening",
    "running", "lost", "no_device" (and "closed" from ``close()``).  It is
    called from the thread iterating ``frames()`` (or calling ``close()``).
    Always call ``close()``: abandoning the generator leaves the stream running
    (it only fills the bounded queue and counts drops).
    """

    def __init__(self, device: str | int | None = None, frame_samples: int = DEFAULT_FRAME_SAMPLES,
                 sample_rate: int = SAMPLE_RATE, no_audio_timeout_s: float = 1.0,
                 max_backoff_s: float = 10.0, on_state: Callable[[str, str], None] | None = None,
                 *, max_queue_frames: int = 64, first_audio_timeout_s: float = 3.0,
                 engine_timeout_s: float = 5.0, restart_every_s: float | None = None) -> None:
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"frames are always {SAMPLE_RATE} Hz; got sample_rate={sample_rate}")
        self.device = device
        self.frame_samples = frame_samples
        self.sample_rate = sample_rate
        frame_s = frame_samples / SAMPLE_RATE
        # The watchdog must not fire between two healthy callbacks.
        self.no_audio_timeout_s = max(no_audio_timeout_s, 3 * frame_s)
        self.first_audio_timeout_s = max(first_audio_timeout_s, self.no_audio_timeout_s)
        self.max_backoff_s = max(0.5, max_backoff_s)
        self.engine_timeout_s = engine_timeout_s
        self.restart_every_s = restart_every_s
        self.on_state = on_state
        self.state = "idle"
        self.detail = ""
        self.dropped_frames = 0
        self.reconnects = 0
        self.open_attempts = 0
        self.device_name: str | None = None
        self.device_rate: int | None = None
        # Items are (frame, capture_ns, generation): the generation tells frames
        # of the current stream from leftovers of one we have given up on.
        self._q: queue.Queue[tuple[np.ndarray, int, int]] = queue.Queue(maxsize=max(2, max_queue_frames))
        self._engine: _Engine | None = None
        self._generation = 0
        self._last_audio = 0.0       # monotonic seconds of the last callback with data
        self._opened_at = 0.0
        self._op: threading.Thread | None = None
        self._op_name = ""
        self._op_started = 0.0
        self._op_result: dict[str, Any] = {}
        self._op_hung_reported = False
        self._backoff = 0.5
        self._next_attempt = 0.0
        self._closed = threading.Event()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ public
    def frames(self) -> Iterator[Frame]:
        """Yield ``(frame int16[frame_samples], capture_ns)`` forever (until ``close()``)."""
        silence_native_audio_logs()
        poll_s = min(0.1, self.frame_samples / SAMPLE_RATE)
        with self._lock:
            if not self._closed.is_set():
                self._tick()  # open now rather than after the first empty poll
        while not self._closed.is_set():
            try:
                frame, capture_ns, gen = self._q.get(timeout=poll_s)
            except queue.Empty:
                with self._lock:
                    if not self._closed.is_set():
                        self._tick()
                continue
            if self._op is not None and not self._op.is_alive():
                with self._lock:  # an open that finished while audio was already flowing
                    if self._op is not None and not self._op.is_alive():
                        self._finish_op(time.monotonic())
            if self.state != "running" and gen == self._generation and self._engine is not None:
                self._backoff = 0.5
                self._set_state("running", f"capturing from {self.device_name!r} at {self.device_rate} Hz"
                                + ("" if self.device_rate == SAMPLE_RATE else f" (resampled to {SAMPLE_RATE} Hz)"))
            yield frame, capture_ns
            if self.restart_every_s and self._engine is not None \
                    and time.monotonic() - self._opened_at > self.restart_every_s:
                with self._lock:
                    if self._engine is not None and (self._op is None or not self._op.is_alive()):
                        self._start_close("periodic audio engine restart", planned=True)

    def close(self) -> None:
        """Stop capturing and release PortAudio (bounded wait; a hung server is abandoned)."""
        if self._closed.is_set():
            return
        self._closed.set()
        with self._lock:  # waits for a running _tick (bounded: ops are joined for 50 ms there)
            deadline = time.monotonic() + self.engine_timeout_s
            if self._op is not None:
                # Let a pending open finish so its stream is closed, not leaked.
                self._op.join(max(0.0, deadline - time.monotonic()))
                if not self._op.is_alive():
                    self._finish_op(time.monotonic())  # a finished open is closed (we are closed)
            eng, self._engine = self._engine, None
            if eng is not None and (self._op is None or not self._op.is_alive()):
                self._run_op("close", lambda: _close_engine(eng))
            if self._op is not None:
                self._op.join(max(0.0, deadline - time.monotonic()))
                if not self._op.is_alive():
                    self._op = None
                else:
                    log.warning("audio engine %s still hung at close; abandoned", self._op_name)
        self._set_state("closed", "")

    # ------------------------------------------------------------------ state machine
    def _tick(self) -> None:
        """Called when no frame arrived for a poll interval: watchdog and (re)connect."""
        now = time.monotonic()
        if self._op is not None:
            if self._op.is_alive():
                if not self._op_hung_reported and now - self._op_started > self.engine_timeout_s:
                    self._op_hung_reported = True
                    self._set_state("lost", f"audio server not responding ({self._op_name} hung for "
                                    f"{now - self._op_started:.0f} s); will retry when it returns")
                return
            self._finish_op(now)
        if self._closed.is_set():
            return
        if self._engine is not None:
            limit = self.first_audio_timeout_s if self._last_audio < self._opened_at else self.no_audio_timeout_s
            since = now - max(self._last_audio, self._opened_at)
            if since > limit:
                self._start_close(f"no audio from {self.device_name!r} for {since:.1f} s")
            return
        if now >= self._next_attempt:
            if self.state in ("idle", "closed"):
                what = "the default input" if self.device is None else f"input device {self.device!r}"
                self._set_state("opening", f"opening {what}")
            gen = self._generation = self._generation + 1
            self.open_attempts += 1
            self._run_op("open", lambda: self._open_engine(gen))

    def _start_close(self, reason: str, planned: bool = False) -> None:
        eng, self._engine = self._engine, None
        self._generation += 1  # any late callback of the old stream is ignored
        if planned:
            self._set_state("opening", reason)
        else:
            self._set_state("lost", reason)
        self.reconnects += 1
        self._next_attempt = time.monotonic() + (0.0 if planned else self._backoff)
        if not planned:  # reset to 0.5 s only once audio flows again ("running")
            self._backoff = min(self._backoff * 2, self.max_backoff_s)
        if eng is not None:
            self._run_op("close", lambda: _close_engine(eng))

    def _finish_op(self, now: float) -> None:
        name, res = self._op_name, self._op_result
        self._op = None
        if name != "open":
            return
        err = res.get("error")
        if err is None and res.get("engine") is not None:
            eng: _Engine = res["engine"]
            if self._closed.is_set() or res.get("generation") != self._generation:
                self._run_op("close", lambda: _close_engine(eng))
                return
            self._engine = eng
            self.device_name, self.device_rate = eng.device_name, eng.rate
            self._opened_at = now
            log.info("audio input open: %s at %d Hz, %d ch", eng.device_name, eng.rate, eng.channels)
            return
        if isinstance(err, NoInputDevice):
            self._set_state("no_device", str(err))
        else:
            self._set_state("lost", f"cannot open input device: {err}")
        self._next_attempt = now + self._backoff
        self._backoff = min(self._backoff * 2, self.max_backoff_s)

    def _run_op(self, name: str, fn: Callable[[], Any]) -> None:
        """Run a PortAudio operation in a daemon helper thread; results land in ``_op_result``."""
        result: dict[str, Any] = {}

        def run() -> None:
            try:
                out = fn()
                if isinstance(out, tuple):
                    result["engine"], result["generation"] = out
            except BaseException as e:  # noqa: BLE001 - reported through state, never raised
                result["error"] = e

        self._op_name, self._op_result = name, result
        self._op_started = time.monotonic()
        self._op_hung_reported = False
        self._op = threading.Thread(target=run, name=f"vigil-audio-{name}", daemon=True)
        self._op.start()
        self._op.join(min(self.engine_timeout_s, 0.05))  # fast path: most ops take ~2 ms
        if not self._op.is_alive():
            self._finish_op(time.monotonic())

    def _set_state(self, state: str, detail: str) -> None:
        if state == self.state:
            self.detail = detail
            return
        self.state, self.detail = state, detail
        (log.warning if state in ("lost", "no_device") else log.info)("audio input %s: %s", state, detail)
        if self.on_state is not None:
            try:
                self.on_state(state, detail)
            except Exception:  # a broken health hook must not stop capture
                log.exception("on_state callback failed")

    # ------------------------------------------------------------------ PortAudio side (helper thread)
    def _open_engine(self, generation: int) -> tuple[_Engine, int]:
        import pyaudio  # imported lazily: WAV-only runs need no PortAudio

        pa = pyaudio.PyAudio()
        try:
            index, info = self._pick_device(pa)
            default_rate = int(info.get("defaultSampleRate") or SAMPLE_RATE)
            max_ch = int(info["maxInputChannels"])
            attempts = [(SAMPLE_RATE, 1)]
            if default_rate != SAMPLE_RATE:
                attempts.append((default_rate, 1))
            if max_ch >= 2:
                attempts += [(SAMPLE_RATE, 2)] + ([(default_rate, 2)] if default_rate != SAMPLE_RATE else [])
            errors = []
            for rate, ch in attempts:
                framer = _Framer(self.frame_samples, rate, ch)
                per_buffer = max(64, round(self.frame_samples * rate / SAMPLE_RATE))
                try:
                    stream = pa.open(format=pyaudio.paInt16, channels=ch, rate=rate, input=True,
                                     input_device_index=index, frames_per_buffer=per_buffer,
                                     stream_callback=self._make_callback(framer, generation))
                except (OSError, ValueError) as e:
                    errors.append(f"{rate} Hz/{ch} ch: {e}")
                    continue
                return _Engine(pa, stream, index, str(info["name"]), rate, ch), generation
            raise OSError(f"device {info['name']!r} refused every format ({'; '.join(errors)})")
        except BaseException:
            pa.terminate()
            raise

    def _pick_device(self, pa: Any) -> tuple[int, dict]:
        inputs = []
        for i in range(pa.get_device_count()):
            info = pa.get_device_info_by_index(i)
            if int(info.get("maxInputChannels", 0)) > 0:
                inputs.append((i, info))
        if not inputs:
            raise NoInputDevice(NO_DEVICE_HINT)
        names = ", ".join(f"{i}: {d['name']}" for i, d in inputs)
        if self.device is None:
            for i, d in inputs:
                if d["name"] == "pulse":
                    return i, d
            try:
                d = pa.get_default_input_device_info()
                return int(d["index"]), d
            except (OSError, IOError):
                return inputs[0]
        if isinstance(self.device, int):
            for i, d in inputs:
                if i == self.device:
                    return i, d
            raise NoInputDevice(f"input device index {self.device} not found (inputs: {names}); "
                                "to run without a microphone use --input PATH.wav")
        for i, d in inputs:
            if str(self.device).lower() in str(d["name"]).lower():
                return i, d
        raise NoInputDevice(f"no input device matching {self.device!r} (inputs: {names}); "
                            "to run without a microphone use --input PATH.wav")

    def _make_callback(self, framer: _Framer, generation: int) -> Callable:
        import pyaudio

        def callback(in_data: bytes | None, frame_count: int, time_info: dict, status: int) -> tuple:
            now = time.monotonic_ns()
            if generation != self._generation or self._closed.is_set():
                return None, pyaudio.paComplete  # a stream we have given up on
            if in_data:
                try:
                    frames = framer.feed(in_data, now)
                except Exception:  # never let an exception kill the PortAudio thread
                    log.exception("audio callback failed")
                    return None, pyaudio.paContinue
                self._last_audio = now / 1e9
                for fr, t in frames:
                    self._put((fr, t, generation))
            return None, pyaudio.paContinue

        return callback

    def _put(self, frame: tuple[np.ndarray, int, int]) -> None:
        """Enqueue without ever blocking: drop the oldest frame when the reader lags."""
        while True:
            try:
                self._q.put_nowait(frame)
                return
            except queue.Full:
                try:
                    self._q.get_nowait()
                    self.dropped_frames += 1
                except queue.Empty:
                    pass


def _close_engine(eng: _Engine) -> None:
    """Close the stream and terminate its PyAudio (may block forever on a frozen server)."""
    try:
        eng.stream.close()
    finally:
        eng.pa.terminate()


def open_source(spec: str | os.PathLike, **kw: Any) -> WavSource | PyAudioSource:
    """``"mic"`` → PyAudioSource; anything else is a WAV path → WavSource.

    Keyword arguments go to the chosen class (unknown ones raise TypeError).
    """
    if str(spec) == "mic":
        return PyAudioSource(**kw)
    return WavSource(spec, **kw)
