"""`python -m pipeline chaos`: kill -9 and SIGSTOP the workers of a real pipeline while a corpus replays.

The real `pipeline run` runs as a subprocess on a looping WAV of the quick bench corpus
(wake-phrase requests only, so every utterance expects an answer). At random moments one
worker is killed (SIGKILL: a crash) or frozen (SIGSTOP: a hang — its heartbeat stops and the
supervisor must kill and restart it). Each worker gets both kinds in turn, in a seeded order.

With PulseAudio installed (or `mic=True`), the pipeline listens to a real microphone path
instead: a private PulseAudio server (bench/pulse.py) whose virtual source plays the same WAV
again and again, like a room that keeps talking, and the microphone itself gets faults too
("mic" in the tables): the sound server killed (no input device at all), frozen, or its source
unplugged, each held away for `device_down_s` (longer than the heartbeat timeout, so a capture
worker that stopped beating while it waits would be caught as hung) and then given back.
A device fault must be a state, not a restart: /healthz turns degraded with the capture
worker's `device` (lost/no_device), the same capture process picks the device up again, and
its recovery is timed from the device's return.

What is measured, from the parent's own event stream (SSE `/events`, which does not depend on
the responder worker being alive) and `/healthz`:
- recovery: fault → the worker runs again (a new pid that beats, per /healthz); for the
  microphone, device back → capture running on it again (same pid, no `device` in /healthz);
- time from each fault to the next answer; answers expected (every utterance whose speech
  was played while faults were being injected, and in the settle time after) vs answered;
- drops per ring, answers in the last minute, the parent alive at the end;
- after a SIGTERM: the exit code and time, no `/dev/shm/vigil-<pid>-*` segment, no process
  of the run left (zombie or not).

The report is printed as a table and written to `<out>/<run>/chaos.json`.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from core.events import DropEvent, Event, InputStartedEvent, ResponseEvent, WorkerEvent, parse_event

ROOT = Path(__file__).resolve().parents[1]
WORKERS = ("capture", "wakeword", "stt", "llm", "responder")
KINDS = ("kill", "stop")
MIC = "mic"  # the microphone's "worker" name in the fault plan and tables
DEVICE_KINDS = ("kill", "stop", "unplug")  # the sound server SIGKILLed / SIGSTOPped, its source unloaded


@dataclass
class Fault:
    worker: str  # a worker, or MIC
    kind: str  # "kill" (SIGKILL) | "stop" (SIGSTOP: a hang) | "unplug" (MIC: the source unloaded)
    t: float  # monotonic seconds when the signal was sent
    pid: int  # the worker's pid (MIC: the capture worker's, which must stay the same)
    recovered_s: float | None = None  # fault → worker running again with a new pid (MIC: from the device's return)
    new_pid: int | None = None
    next_answer_s: float | None = None  # fault → the next response event
    detected_s: float | None = None  # MIC: fault → /healthz shows the capture worker's device state
    device_state: str | None = None  # MIC: that state ("lost", "no_device")
    restored_at: float | None = None  # MIC: monotonic seconds when the device came back


# ---- small helpers --------------------------------------------------------------------

def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthz(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError as err:  # 503 while degraded still carries the JSON
        try:
            return json.loads(err.read())
        except ValueError:
            return None
    except (OSError, ValueError):
        return None


def _metrics(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
            return reply.read().decode()
    except (OSError, ValueError):
        return ""


def worker_pids(parent_pid: int) -> dict[str, int]:
    """Live (non-zombie) worker processes of the pipeline, by their process title `vigil-<name>`."""
    found: dict[str, int] = {}
    try:
        children = psutil.Process(parent_pid).children(recursive=True)
    except psutil.Error:
        return found
    for child in children:
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            title = child.cmdline()
        except psutil.Error:
            continue
        if title and title[0].startswith("vigil-"):
            found[title[0].split()[0][len("vigil-"):]] = child.pid
    return found


def ring_stats(owner_pid: int) -> dict[str, dict[str, int]]:
    """Counters of every ring of a running pipeline, read from its segments (attach never registers)."""
    from shm.audio_ring import AudioRing
    from shm.message_ring import MessageRing

    out: dict[str, dict[str, int]] = {}
    head = f"vigil-{owner_pid}-"
    for name in sorted(os.listdir("/dev/shm")):
        if not name.startswith(head):
            continue
        for cls in (MessageRing, AudioRing):
            try:
                ring = cls.attach(name)
            except Exception:  # not this kind of ring (or the heartbeat table)
                continue
            try:
                if cls is MessageRing:
                    st = ring.stats()
                    out[name[len(head):]] = {"puts": st.puts, "drops": st.drops, "lost": st.lost,
                                             "corrupt": st.corrupt, "high_water": st.high_water,
                                             "occupancy": st.occupancy, "capacity": st.capacity}
                else:
                    out[name[len(head):]] = {"frames": ring.write_seq, "lost": ring.total_lost()}
            finally:
                ring.close()
            break
    return out


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return round(ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo), 3)


def _summary(values: list[float]) -> dict[str, Any]:
    return {"p50": percentile(values, 50), "p95": percentile(values, 95),
            "max": round(max(values), 3) if values else None, "n": len(values)}


class EventTap(threading.Thread):
    """Reads the parent's SSE stream; reconnects with Last-Event-ID, so nothing is lost or doubled."""

    def __init__(self, port: int) -> None:
        super().__init__(name="chaos-events", daemon=True)
        self.port = port
        self.events: list[Event] = []
        self._seen: set[int] = set()
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._conn: http.client.HTTPConnection | None = None

    def snapshot(self) -> list[Event]:
        with self._lock:
            return list(self.events)

    def stop(self) -> None:
        self._halt.set()
        conn = self._conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(2)
            except OSError:
                pass
        self.join(5)

    def run(self) -> None:
        last_id: int | None = None
        while not self._halt.is_set():
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                self._conn = conn
                conn.request("GET", "/events", headers={"Last-Event-ID": str(last_id)} if last_id is not None else {})
                reply = conn.getresponse()
                if reply.status != 200:
                    conn.close()
                    self._halt.wait(0.5)
                    continue
                event_id, data = None, []
                while not self._halt.is_set():
                    line = reply.fp.readline()
                    if not line:
                        break
                    line = line.decode("utf-8", "replace").rstrip("\r\n")
                    if line.startswith("id:"):
                        event_id = int(line[3:].strip())
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and data:
                        self._add(event_id, "\n".join(data))
                        if event_id is not None:
                            last_id = event_id
                        event_id, data = None, []
                conn.close()
            except (OSError, http.client.HTTPException, ValueError):
                self._halt.wait(0.3)

    def _add(self, event_id: int | None, data: str) -> None:
        try:
            event = parse_event(json.loads(data))
        except ValueError:  # not JSON, or not one of our events (EventError is a ValueError)
            return
        with self._lock:
            if event_id is not None:
                if event_id in self._seen:
                    return
                self._seen.add(event_id)
            self.events.append(event)


# ---- the microphone ---------------------------------------------------------------------

class LoopPlayer(threading.Thread):
    """Plays the chaos WAV into the virtual microphone again and again (`paplay`, one pass each).

    Paused while a device fault holds the microphone away (nothing can be heard then, and a
    player would only fail against a dead server). `segments()` gives each pass's start and end
    (monotonic ns): the times its utterances were spoken, as capture restarts are for a WAV input.
    """

    def __init__(self, mic: Any, wav: Path) -> None:
        super().__init__(name="chaos-player", daemon=True)
        self.mic, self.wav = mic, wav
        self._plays: list[list[int]] = []  # [start_ns, end_ns (0 while playing)]
        self._proc: subprocess.Popen | None = None
        self._paused = False
        self._lock = threading.Lock()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.02):
            with self._lock:
                if self._proc is not None and self._proc.poll() is not None:
                    self._ended()
                if self._proc is None and not self._paused:
                    self._proc = self.mic.play(self.wav, wait=False)
                    self._plays.append([time.monotonic_ns(), 0])

    def pause(self) -> None:
        with self._lock:
            self._paused = True
            if self._proc is not None:
                self.mic.stop_players()
                self._ended()

    def resume(self) -> None:
        with self._lock:
            self._paused = False

    def stop(self) -> None:
        self.pause()
        self._halt.set()
        if self.ident is not None:
            self.join(5)

    def segments(self) -> tuple[list[int], list[int]]:
        with self._lock:
            return [a for a, _ in self._plays], [b for _, b in self._plays if b]

    def _ended(self) -> None:
        self._plays[-1][1] = time.monotonic_ns()
        self._proc = None


def take_device(mic: Any, kind: str) -> None:
    """The microphone fault: the sound server SIGKILLed ("kill"), SIGSTOPped ("stop"), or its source unloaded."""
    if kind == "kill":
        mic.kill_server()
    elif kind == "stop":
        mic.freeze_server()
    else:
        mic.remove_source()


def give_device_back(mic: Any, kind: str) -> None:
    if kind == "kill":
        mic.restart_server()
    elif kind == "stop":
        mic.thaw_server()
    else:
        mic.restore_source()


def device_fault_step(fault: Fault, health: dict, now: float, down_s: float, mic: Any, player: LoopPlayer,
                      recovery_timeout_s: float) -> bool:
    """One look at a pending microphone fault; True once it is over (recovered or given up).

    While the device is away: note when /healthz first shows it (degraded, the capture worker's
    `device`); after `down_s`, give it back. Then: recovered once capture runs on it again.
    """
    capture = (health.get("workers") or {}).get("capture") or {}
    if fault.restored_at is None:
        if fault.detected_s is None and capture.get("device") in ("lost", "no_device") \
                and health.get("status") == "degraded":
            fault.detected_s = round(now - fault.t, 3)
            fault.device_state = capture["device"]
        if now - fault.t >= down_s:
            give_device_back(mic, fault.kind)
            fault.restored_at = time.monotonic()
            player.resume()
        return False
    if capture.get("state") == "running" and "device" not in capture and capture.get("heartbeat_age_s") is not None:
        fault.recovered_s = round(now - fault.restored_at, 3)
        fault.new_pid = capture.get("pid")
        return True
    return now - fault.restored_at > recovery_timeout_s


# ---- the corpus -----------------------------------------------------------------------

def build_chaos_wav(corpus: Path | None, out_wav: Path, gap_s: float = 1.5) -> tuple[list[dict], float]:
    """The wake-phrase requests of a corpus joined into one WAV; returns (utterances, loop length s).

    Each utterance: {"start_s", "end_s"} — where its speech starts and ends in the file.
    """
    from bench.corpus import build_default_corpus, load_corpus
    from bench.replay import build_replay
    from bench.runner import default_corpus_dir
    from core.config import load_config
    from core.audio import read_wav_info

    if corpus is None:
        corpus = build_default_corpus(default_corpus_dir(load_config(), True), quick=True, progress=False).parent
    utterances = [u for u in load_corpus(corpus) if u.wake]
    if not utterances:
        raise ValueError(f"{corpus}: no wake-phrase utterances to replay")
    placements = build_replay(utterances, out_wav, passes=1, gap_s=gap_s)
    info = read_wav_info(out_wav)
    rows = []
    for p in placements:
        u = utterances[p.index]
        start = getattr(u, "speech_start_s", None) or 0.0
        rows.append({"wav": Path(u.wav).name, "transcript": u.transcript, "start_s": p.offset_s + start,
                     "end_s": p.offset_s + u.speech_end_s})
    return rows, info.frames / info.rate


def expected_utterances(starts_ns: list[int], end_ns: int, rows: list[dict], loop_s: float,
                        window: tuple[int, int], stops_ns: list[int] = ()) -> list[dict]:
    """Every utterance whose speech began inside `window` (monotonic ns).

    Each capture (re)start replays the file from its beginning at `t0_ns`; an utterance cut off
    by the next restart was spoken all the same and is expected (and marked `cut`). `stops_ns`:
    moments the audio stopped before the next start (a microphone's player paused or done).
    """
    out = []
    starts = sorted(set(starts_ns))
    for k, t0 in enumerate(starts):
        seg_end = min([starts[k + 1] if k + 1 < len(starts) else end_ns, *(t for t in stops_ns if t > t0)])
        n = 0
        while t0 + n * loop_s * 1e9 < seg_end:
            for row in rows:
                begin = t0 + int((n * loop_s + row["start_s"]) * 1e9)
                end = t0 + int((n * loop_s + row["end_s"]) * 1e9)
                if begin >= seg_end or not window[0] <= begin < window[1]:
                    continue
                out.append({**row, "begin_ns": begin, "end_ns": end, "cut": end > seg_end})
            n += 1
    return sorted(out, key=lambda r: r["end_ns"])


def match_answers(expected: list[dict], responses_ns: list[int], max_wait_s: float = 20.0) -> None:
    """Mark each expected utterance `answered` by the first response after its speech end (and
    before the next utterance's answer could be: each response answers one utterance)."""
    used: set[int] = set()
    for i, row in enumerate(expected):
        nxt = expected[i + 1]["end_ns"] if i + 1 < len(expected) else None
        row["answered"] = False
        for j, t in enumerate(responses_ns):
            if j in used or t < row["end_ns"] - int(0.5e9):
                continue
            if t > row["end_ns"] + max_wait_s * 1e9 or (nxt is not None and t > nxt + int(0.5e9)):
                break
            used.add(j)
            row["answered"] = True
            row["answer_after_s"] = round((t - row["end_ns"]) / 1e9, 3)
            break


# ---- the run --------------------------------------------------------------------------

def run_chaos(minutes: float = 10.0, seed: int = 0, out: Path = Path("bench/out/chaos"), corpus: Path | None = None,
              *, min_gap_s: float = 6.0, max_gap_s: float = 15.0, heartbeat_timeout_s: float = 5.0,
              recovery_timeout_s: float = 60.0, settle_s: float = 20.0, start_timeout_s: float = 240.0,
              workers: tuple[str, ...] | None = None, env: dict[str, str] | None = None,
              config_path: str | None = None, mic: bool | None = None, device_down_s: float | None = None,
              say: Callable[[str], None] | None = None) -> dict:
    """`mic`: listen through a private PulseAudio source and fault the microphone too (default: when
    PulseAudio is installed). `device_down_s`: how long a microphone fault lasts (default: the
    heartbeat timeout + 3 s)."""
    from bench.pulse import VirtualMic, pulse_available

    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    rng = random.Random(seed)
    run_dir = Path(out) / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    wav = run_dir / "chaos.wav"
    rows, loop_s = build_chaos_wav(corpus, wav)
    port = _free_port()
    events_path = run_dir / "events.jsonl"
    down_s = device_down_s if device_down_s is not None else heartbeat_timeout_s + 3.0
    vmic = VirtualMic() if (pulse_available() if mic is None else mic) else None
    if vmic is not None:
        vmic.start()
    player = LoopPlayer(vmic, wav) if vmic is not None else None
    child_env = {**(vmic.child_env() if vmic is not None else os.environ), "PYTHONUNBUFFERED": "1",
                 "VIGIL_METRICS__STATE_DIR": str(run_dir / "state"),
                 "VIGIL_SUPERVISOR__HEARTBEAT_TIMEOUT_S": str(heartbeat_timeout_s), **(env or {})}
    source = ["--input", "mic"] if vmic is not None else ["--input", str(wav), "--loop"]
    command = [sys.executable, "-m", "pipeline", "run", *source, "--events", str(events_path),
               "--http", f"127.0.0.1:{port}"] + (["--config", str(Path(config_path).resolve())] if config_path else [])
    wall_minus_mono = time.time() - time.monotonic()
    to_mono = lambda t_wall: t_wall - wall_minus_mono  # noqa: E731 - event "t" (unix) → our monotonic clock
    faults: list[Fault] = []
    seen_pids: set[int] = set()
    stopped_pids: set[int] = set()
    report: dict[str, Any] = {"command": " ".join(["python -m pipeline chaos", f"--minutes {minutes:g}",
                                                   f"--seed {seed}"]),
                              "seed": seed, "minutes": minutes, "loop_s": round(loop_s, 2),
                              "utterances_per_loop": len(rows), "heartbeat_timeout_s": heartbeat_timeout_s,
                              "input": "mic (a private PulseAudio source)" if vmic is not None else "wav",
                              "device_down_s": down_s if vmic is not None else None,
                              "run_dir": str(run_dir)}
    stderr = open(run_dir / "pipeline.stderr.log", "w")
    proc = subprocess.Popen(command, cwd=ROOT, env=child_env, stdout=subprocess.DEVNULL, stderr=stderr)
    report["pid"] = proc.pid
    tap = EventTap(port)
    try:
        # ---- start: every worker running and a first answer ---------------------------------
        deadline = time.monotonic() + start_timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            if _healthz(port) is not None:
                break
            time.sleep(0.2)
        tap.start()
        if player is not None:
            player.start()
        first_answer = None
        while time.monotonic() < deadline and proc.poll() is None:
            if any(isinstance(e, ResponseEvent) for e in tap.snapshot()):
                first_answer = time.monotonic()
                break
            time.sleep(0.2)
        if first_answer is None:
            raise RuntimeError(f"no first answer within {start_timeout_s:.0f} s (exit code {proc.poll()}); "
                               f"see {run_dir / 'pipeline.stderr.log'}")
        if workers is None:  # every worker the supervisor runs (e.g. speaker too, when enabled)
            workers = tuple((_healthz(port) or {}).get("workers") or WORKERS)
        report["workers"] = list(workers)
        say(f"chaos: pipeline pid {proc.pid} answering; injecting faults into {', '.join(workers)}"
            f"{' and the ' + MIC if vmic is not None else ''} for {minutes:g} min (seed {seed})")

        # ---- chaos window ------------------------------------------------------------------
        plan: list[tuple[str, str]] = []
        chaos_start = time.monotonic()
        chaos_end = chaos_start + minutes * 60
        next_fault_at = chaos_start + rng.uniform(min_gap_s / 2, min_gap_s)
        pending: Fault | None = None
        while time.monotonic() < chaos_end or pending is not None:
            now = time.monotonic()
            if proc.poll() is not None:
                raise RuntimeError(f"the parent died (exit code {proc.returncode}) during chaos")
            if pending is not None and pending.worker == MIC:
                if device_fault_step(pending, _healthz(port) or {}, now, down_s, vmic, player, recovery_timeout_s):
                    back = "NOT back" if pending.recovered_s is None else f"back in {pending.recovered_s:.2f} s"
                    seen = ("never shown" if pending.detected_s is None
                            else f"{pending.device_state} in /healthz after {pending.detected_s:.2f} s")
                    say(f"  {pending.worker:9s} {pending.kind:4s} → {seen}; device given back after {down_s:.0f} s, "
                        f"capture {back} (pid {pending.pid} → {pending.new_pid})")
                    pending = None
                    next_fault_at = now + rng.uniform(min_gap_s, max_gap_s)
            elif pending is not None:
                health = _healthz(port) or {}
                w = (health.get("workers") or {}).get(pending.worker) or {}
                if w.get("pid") not in (None, pending.pid) and w.get("heartbeat_age_s") is not None \
                        and w.get("state") in ("running", "failed"):
                    pending.recovered_s = round(now - pending.t, 3)
                    pending.new_pid = w["pid"]
                    seen_pids.add(w["pid"])
                    say(f"  {pending.worker:9s} {pending.kind:4s} → back in {pending.recovered_s:.2f} s "
                        f"(pid {pending.pid} → {pending.new_pid})")
                    pending = None
                    next_fault_at = now + rng.uniform(min_gap_s, max_gap_s)
                elif now - pending.t > recovery_timeout_s:
                    say(f"  {pending.worker:9s} {pending.kind:4s} → NOT back after {recovery_timeout_s:.0f} s")
                    pending = None
                    next_fault_at = now + rng.uniform(min_gap_s, max_gap_s)
            elif now >= next_fault_at and now < chaos_end:
                if not plan:
                    plan = [(w, k) for w in workers for k in KINDS]
                    plan += [(MIC, k) for k in DEVICE_KINDS] if vmic is not None else []
                    rng.shuffle(plan)
                worker, kind = plan.pop()
                pids = worker_pids(proc.pid)
                seen_pids.update(pids.values())
                pid = pids.get("capture" if worker == MIC else worker)
                if pid is None:  # not up right now (still restarting from an earlier fault): later
                    plan.append((worker, kind))
                    next_fault_at = now + 1.0
                elif worker == MIC:
                    player.pause()  # nothing is spoken while the microphone is away
                    take_device(vmic, kind)
                    pending = Fault(worker, kind, time.monotonic(), pid)
                    faults.append(pending)
                else:
                    os.kill(pid, signal.SIGKILL if kind == "kill" else signal.SIGSTOP)
                    if kind == "stop":
                        stopped_pids.add(pid)
                    pending = Fault(worker, kind, time.monotonic(), pid)
                    faults.append(pending)
            time.sleep(0.1)

        # ---- settle: answers must flow again -------------------------------------------------
        last_fault = (faults[-1].restored_at or faults[-1].t) if faults else chaos_start
        settle_deadline = time.monotonic() + max(settle_s, 5.0)
        resumed = None
        while time.monotonic() < settle_deadline + 40 and proc.poll() is None:
            responses = [to_mono(e.t) for e in tap.snapshot() if isinstance(e, ResponseEvent)]
            later = [t for t in responses if t > last_fault]
            if later and resumed is None:
                resumed = round(min(later) - last_fault, 3)
            if resumed is not None and time.monotonic() >= settle_deadline:
                break
            time.sleep(0.2)
        end_mono = time.monotonic()
        parent_alive = proc.poll() is None
        health = _healthz(port) or {}
        metrics = _metrics(port)
        rings = ring_stats(proc.pid)
        pids = worker_pids(proc.pid)
        seen_pids.update(pids.values())
        rss = {}
        for name, pid in pids.items():
            try:
                rss[name] = round(psutil.Process(pid).memory_info().rss / 2**20, 1)
            except psutil.Error:
                pass
        zombies_running = []
        try:
            zombies_running = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)
                               if c.status() == psutil.STATUS_ZOMBIE]
        except psutil.Error:
            pass
        events = tap.snapshot()
    finally:
        # ---- stop: SIGTERM, as systemd would ---------------------------------------------------
        stop_started = time.monotonic()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stop_s = round(time.monotonic() - stop_started, 2)
        tap.stop()
        stderr.close()
        if player is not None:
            player.stop()
        if vmic is not None:
            vmic.close()
        for pid in stopped_pids:  # a frozen worker the supervisor never got to: never leave it stopped
            try:
                if psutil.Process(pid).status() == psutil.STATUS_STOPPED:
                    os.kill(pid, signal.SIGKILL)
            except (psutil.Error, ProcessLookupError):
                pass

    # ---- leftovers ---------------------------------------------------------------------------
    time.sleep(0.5)
    segments_left = sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"vigil-{proc.pid}-"))
    left = []
    for pid in seen_pids:
        try:
            p = psutil.Process(pid)
            if p.ppid() == proc.pid or "vigil-" in " ".join(p.cmdline()):
                left.append({"pid": pid, "status": p.status()})
        except psutil.Error:
            continue

    # ---- answers --------------------------------------------------------------------------------
    starts_ns = [e.t0_ns for e in events if isinstance(e, InputStartedEvent)]
    stops_ns: list[int] = []
    if player is not None:  # a microphone hears what was played, pass by pass, not what capture restarts replay
        starts_ns, stops_ns = player.segments()
    responses = sorted((e for e in events if isinstance(e, ResponseEvent)), key=lambda e: e.t)
    responses_ns = [int(to_mono(e.t) * 1e9) for e in responses]
    window = (int(chaos_start * 1e9), int((end_mono - 8.0) * 1e9))  # the last seconds may still be in flight
    expected = expected_utterances(starts_ns, int(end_mono * 1e9), rows, loop_s, window, stops_ns)
    match_answers(expected, responses_ns)
    for f in faults:
        after = [t / 1e9 for t in responses_ns if t / 1e9 > f.t]
        f.next_answer_s = round(min(after) - f.t, 3) if after else None
    lost = [r for r in expected if not r["answered"]]
    fault_times = [f.t for f in faults]
    for r in lost:  # a fault from 20 s before the speech began to the end of its answer window
        r["near_fault"] = any(r["begin_ns"] / 1e9 - 20 <= t <= r["end_ns"] / 1e9 + 10 for t in fault_times)
    last_minute = [t for t in responses_ns if t / 1e9 >= end_mono - 60]
    drops: dict[str, int] = {}
    for e in events:
        if isinstance(e, DropEvent):
            drops[e.ring] = drops.get(e.ring, 0) + e.count
    restarts_total = {line.split()[0]: line.split()[-1] for line in metrics.splitlines()
                      if line.startswith("vigil_worker_restarts_total")}
    per_worker = {w: {"kill": 0, "stop": 0, "unplug": 0, "recovered": 0, "restarts": None}
                  for w in (*workers, *([MIC] if vmic is not None else []))}
    for f in faults:
        per_worker[f.worker][f.kind] += 1
        per_worker[f.worker]["recovered"] += f.recovered_s is not None
    for name, w in (health.get("workers") or {}).items():
        if name in per_worker:
            per_worker[name]["restarts"] = w.get("restarts")
    recovered = [f.recovered_s for f in faults if f.recovered_s is not None]
    worker_faults = [f for f in faults if f.worker != MIC]
    device_faults = [f for f in faults if f.worker == MIC]
    # What the supervisor did that we did not cause: a worker silent past the heartbeat timeout while
    # busy (a false hang), or a worker that exited by itself (a crash).
    ours = {f.pid for f in faults if f.worker != MIC}  # a microphone fault must not restart capture
    unplanned = [{"worker": e.name, "event": e.event, "pid": e.pid, "exitcode": e.exitcode,
                  "t": round(to_mono(e.t) - chaos_start, 2)}
                 for e in events if isinstance(e, WorkerEvent) and e.event in ("hung", "exited") and e.pid not in ours]
    hung_pids = {u["pid"] for u in unplanned if u["event"] == "hung"}
    unplanned = [u for u in unplanned if not (u["event"] == "exited" and u["pid"] in hung_pids)]
    report.update({
        "chaos_s": round(chaos_end - chaos_start, 1),
        "faults": [asdict(f) | {"t": round(f.t - chaos_start, 3),
                                "restored_at": f.restored_at and round(f.restored_at - chaos_start, 3)}
                   for f in faults],
        "per_worker": per_worker,
        "kills": sum(f.kind == "kill" for f in worker_faults), "stops": sum(f.kind == "stop" for f in worker_faults),
        "recoveries": len(recovered), "unplanned": unplanned,
        "unrecovered": [f"{f.worker}:{f.kind}" for f in faults if f.recovered_s is None],
        "recovery_s": _summary(recovered),
        "recovery_s_by_kind": {k: _summary([f.recovered_s for f in worker_faults
                                            if f.kind == k and f.recovered_s is not None]) for k in KINDS},
        "device": {"faults": len(device_faults),
                   "detected_s": _summary([f.detected_s for f in device_faults if f.detected_s is not None]),
                   "recovered_s": _summary([f.recovered_s for f in device_faults if f.recovered_s is not None]),
                   "undetected": [f.kind for f in device_faults if f.detected_s is None],
                   "capture_restarted": [f.kind for f in device_faults if f.new_pid not in (None, f.pid)]},
        "next_answer_s": _summary([f.next_answer_s for f in faults if f.next_answer_s is not None]),
        "answers": {"expected": len(expected), "answered": len(expected) - len(lost), "lost": len(lost),
                    "lost_near_fault": sum(r["near_fault"] for r in lost),
                    "cut_by_capture_restart": sum(r["cut"] for r in expected),
                    "responses_total": len(responses), "degraded": sum(e.degraded for e in responses)},
        "answers_after_last_fault_s": resumed,
        "answers_last_minute": len(last_minute),
        "drops": drops, "rings": rings, "metrics_restarts": restarts_total,
        "corrupt_slots": sum(r.get("corrupt", 0) for r in rings.values()),
        "full_rings": [name for name, r in rings.items() if r.get("capacity") and r["occupancy"] >= r["capacity"]],
        "health_at_end": health.get("status"), "parent_alive": parent_alive,
        "zombies_while_running": zombies_running,
        "rss_mb_by_worker": rss,
        "stop": {"exit_code": proc.returncode, "seconds": stop_s, "segments_left": segments_left,
                 "processes_left": left},
    })
    report["ok"] = bool(parent_alive and faults and not report["unrecovered"] and resumed is not None
                        and not report["full_rings"] and not report["device"]["undetected"]
                        and not report["device"]["capture_restarted"]
                        and proc.returncode == 0 and not segments_left and not left and not zombies_running)
    (run_dir / "chaos.json").write_text(json.dumps(report, indent=2) + "\n")
    (run_dir / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    try:
        wav.unlink()
    except OSError:
        pass
    return report


def print_report(report: dict, file=sys.stdout) -> None:
    p = lambda *a: print(*a, file=file)  # noqa: E731
    p(f"chaos: {report['chaos_s']} s of faults, seed {report['seed']}, heartbeat timeout "
      f"{report['heartbeat_timeout_s']} s, loop of {report['utterances_per_loop']} requests ({report['loop_s']} s), "
      f"input {report['input']}")
    p(f"{'worker':10s} {'kill':>5s} {'stop':>5s} {'unplug':>6s} {'recovered':>10s} {'restarts':>9s}")
    for name, w in report["per_worker"].items():
        p(f"{name:10s} {w['kill']:5d} {w['stop']:5d} {w['unplug']:6d} {w['recovered']:10d} {str(w['restarts']):>9s}")
    r, n, a = report["recovery_s"], report["next_answer_s"], report["answers"]
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    p(f"faults {report['kills']} kill + {report['stops']} stop; recovered {report['recoveries']}"
      f"{'; NOT recovered: ' + ', '.join(report['unrecovered']) if report['unrecovered'] else ''}")
    if report["unplanned"]:
        p("not injected by chaos: " + ", ".join(f"{u['worker']} {u['event']}"
                                                 f"{'' if u['exitcode'] is None else ' ' + str(u['exitcode'])}"
                                                 f" at {u['t']} s" for u in report["unplanned"]))
    p(f"recovery s      p50 {fmt(r['p50'])}  p95 {fmt(r['p95'])}  max {fmt(r['max'])}"
      f"   (kill p50 {fmt(report['recovery_s_by_kind']['kill']['p50'])}, "
      f"stop p50 {fmt(report['recovery_s_by_kind']['stop']['p50'])})")
    d = report["device"]
    if d["faults"]:
        p(f"microphone: {d['faults']} fault(s), each held {report['device_down_s']:.0f} s; shown in /healthz after "
          f"p50 {fmt(d['detected_s']['p50'])} max {fmt(d['detected_s']['max'])} s; capture on the device again "
          f"p50 {fmt(d['recovered_s']['p50'])} max {fmt(d['recovered_s']['max'])} s after its return; "
          f"never shown: {d['undetected'] or 'none'}; capture restarted: {d['capture_restarted'] or 'none'}")
    p(f"next answer s   p50 {fmt(n['p50'])}  p95 {fmt(n['p95'])}  max {fmt(n['max'])}")
    p(f"answers: expected {a['expected']}, answered {a['answered']}, lost {a['lost']} "
      f"({a['lost_near_fault']} near a fault, {a['cut_by_capture_restart']} cut by a restart of the input); "
      f"{a['degraded']} degraded of {a['responses_total']} responses")
    p(f"answers after the last fault: {fmt(report['answers_after_last_fault_s'])} s; "
      f"in the last minute: {report['answers_last_minute']}")
    p(f"rings: corrupt slots {report['corrupt_slots']}, full at the end {report['full_rings'] or 'none'}; "
      + ", ".join(f"{k} lost {v['lost']}" + (f" drops {v['drops']} hw {v['high_water']}/{v['capacity']}"
                                             if "capacity" in v else f" of {v['frames']} frames")
                  for k, v in report["rings"].items()))
    p(f"drops: {report['drops'] or 'none'}; parent alive: {report['parent_alive']}; health: {report['health_at_end']}")
    p(f"rss MB: {report['rss_mb_by_worker']}")
    s = report["stop"]
    p(f"SIGTERM: exit {s['exit_code']} in {s['seconds']} s; segments left {s['segments_left'] or 'none'}; "
      f"processes left {s['processes_left'] or 'none'}; "
      f"zombies while running {report['zombies_while_running'] or 'none'}")
    p(f"{'OK' if report['ok'] else 'FAILED'} — {report['run_dir']}/chaos.json")
