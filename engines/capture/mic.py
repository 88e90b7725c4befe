"""The microphone: PyAudio in callback mode, with a watchdog and reconnects.

It survives what a kiosk meets: the sound server killed (callbacks just stop, then PortAudio
lists no input device), frozen (close/open block forever), the source unplugged (PulseAudio up,
no source: the ``pulse`` device is still listed but cannot open), or no device at all. A missing
device is a state, not an error: it never raises out of ``frames()``, it reports its state
through ``on_state``, logs one line per state change, and polls until a device appears.
"""

from __future__ import annotations

import ctypes
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr

from core.audio import FRAME_SAMPLES, SAMPLE_RATE, to_int16
from engines.capture import Frame

log = logging.getLogger(__name__)


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


class _PaSampleSpec(ctypes.Structure):
    _fields_ = [("format", ctypes.c_int), ("rate", ctypes.c_uint32), ("channels", ctypes.c_uint8)]


def pulse_cannot_record() -> str | None:
    """Why PulseAudio cannot record right now (e.g. "No such entity": no source), else None.

    Asked of libpulse before PortAudio opens its ``pulse`` device: with the server up and no
    source, that device is still listed, and PortAudio (as Debian builds it) prints three lines to
    stderr for every failed open, which would flood the log while a kiosk waits for its
    microphone. libpulse says it quietly. None too when libpulse is not installed (PortAudio decides).
    """
    try:
        simple = ctypes.CDLL("libpulse-simple.so.0")
        pulse = ctypes.CDLL("libpulse.so.0")
    except OSError:
        return None
    simple.pa_simple_new.restype = ctypes.c_void_p
    simple.pa_simple_new.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                                     ctypes.c_char_p, ctypes.POINTER(_PaSampleSpec), ctypes.c_void_p,
                                     ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
    simple.pa_simple_free.argtypes = [ctypes.c_void_p]
    pulse.pa_strerror.restype = ctypes.c_char_p
    error = ctypes.c_int(0)
    spec = _PaSampleSpec(3, SAMPLE_RATE, 1)  # PA_SAMPLE_S16LE
    handle = simple.pa_simple_new(None, b"vigil", 2, None, b"input check", ctypes.byref(spec),  # 2: PA_STREAM_RECORD
                                  None, None, ctypes.byref(error))
    if handle:
        simple.pa_simple_free(handle)
        return None
    return (pulse.pa_strerror(error.value) or b"unknown error").decode(errors="replace")


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
            x = to_int16(y)
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
    fresh ``PyAudio()`` + open, with exponential backoff up to ``max_backoff_s``
    (2 s: a device that appears is picked up within about that; each try costs
    ~20 ms of CPU, PortAudio enumerating ALSA).  Every PortAudio open/close runs
    in a helper thread: the consumer waits at most ~50 ms for it, so a frozen
    server (which blocks ``close()`` forever) cannot hang the caller; a hung
    operation is left to finish on its own and no new one starts until it has
    (PortAudio's global init cannot be re-entered safely).  ``frames()`` never
    raises and never returns until ``close()``; with ``idle_s`` it yields
    ``None`` while there is no audio, so its consumer can beat and stop.

    States passed to ``on_state(state, detail)`` on each change, and logged
    once each: "opening", "running", "lost" (audio stopped, or the device
    will not open), "no_device" (none listed, or PulseAudio has no source), and
    "closed" from ``close()``.  It is called from the thread iterating
    ``frames()`` (or calling ``close()``).  Always call ``close()``: abandoning
    the generator leaves the stream running (it only fills the bounded queue
    and counts drops).
    """

    t0_ns = None  # a live microphone has no sample 0 to point at

    def __init__(self, device: str | int | None = None, frame_samples: int = FRAME_SAMPLES,
                 sample_rate: int = SAMPLE_RATE, no_audio_timeout_s: float = 1.0,
                 max_backoff_s: float = 2.0, on_state: Callable[[str, str], None] | None = None,
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
        self.device_channels: int | None = None
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
    def frames(self, idle_s: float | None = None) -> Iterator[Frame | None]:
        """Yield ``(frame int16[frame_samples], capture_ns)`` forever (until ``close()``).

        With ``idle_s``, also yield ``None`` each time no frame came for ``idle_s`` seconds (no
        device yet, a lost one): waiting for a microphone must not stop the caller's loop.
        """
        silence_native_audio_logs()
        poll_s = min(0.1, self.frame_samples / SAMPLE_RATE)
        with self._lock:
            if not self._closed.is_set():
                self._tick()  # open now rather than after the first empty poll
        last_yield = time.monotonic()
        while not self._closed.is_set():
            try:
                frame, capture_ns, gen = self._q.get(timeout=poll_s)
            except queue.Empty:
                with self._lock:
                    if not self._closed.is_set():
                        self._tick()
                if idle_s is not None and time.monotonic() - last_yield >= idle_s:
                    yield None
                    last_yield = time.monotonic()
                continue
            if self._op is not None and not self._op.is_alive():
                with self._lock:  # an open that finished while audio was already flowing
                    if self._op is not None and not self._op.is_alive():
                        self._finish_op(time.monotonic())
            if self.state != "running" and gen == self._generation and self._engine is not None:
                self._backoff = 0.5
                self._set_state("running", f"capturing from {self.device_name!r} at {self.device_rate} Hz, "
                                f"{self.device_channels} ch"
                                + ("" if self.device_rate == SAMPLE_RATE else f" (resampled to {SAMPLE_RATE} Hz)"))
            yield frame, capture_ns
            last_yield = time.monotonic()
            if self.restart_every_s and self._engine is not None \
                    and time.monotonic() - self._opened_at > self.restart_every_s:
                with self._lock:
                    if self._engine is not None and (self._op is None or not self._op.is_alive()):
                        self._start_close("periodic audio engine restart", planned=True)

    def close(self, timeout_s: float = 1.0) -> None:
        """Stop capturing and release PortAudio, waiting at most ``timeout_s`` for the audio server.

        A frozen server blocks PortAudio's open and close forever: that operation is abandoned
        (its thread is a daemon), so a stop is prompt in every state, well inside a supervisor's
        stop timeout.
        """
        if self._closed.is_set():
            return
        self._closed.set()
        abandoned = ""
        with self._lock:  # waits for a running _tick (bounded: ops are joined for 50 ms there)
            deadline = time.monotonic() + timeout_s
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
                    abandoned = f" (the audio server did not answer; {self._op_name} abandoned)"
        self._set_state("closed", "stopped" + abandoned)

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
            self.device_name, self.device_rate, self.device_channels = eng.device_name, eng.rate, eng.channels
            self._opened_at = now  # "running" (one log line) once its first audio arrives
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
            except BaseException as e:  # reported through state, never raised
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
        index, info = self._match_device(pa, inputs)
        if info["name"] == "pulse" and (reason := pulse_cannot_record()) is not None:
            raise NoInputDevice(f"PulseAudio has no input source ({reason}); is a microphone connected? "
                                "to run without a microphone use --input PATH.wav")
        return index, info

    def _match_device(self, pa: Any, inputs: list[tuple[int, dict]]) -> tuple[int, dict]:
        names = ", ".join(f"{i}: {d['name']}" for i, d in inputs)
        if self.device is None:
            for i, d in inputs:
                if d["name"] == "pulse":
                    return i, d
            try:
                d = pa.get_default_input_device_info()
                return int(d["index"]), d
            except OSError:
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
