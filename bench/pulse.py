"""A private PulseAudio server with a bit-exact virtual microphone, for tests and the chaos run.

Why: the test machines have no sound card, but the capture path (PyAudio →
PortAudio → ALSA ``pulse`` plugin → PulseAudio) is exactly what breaks in the
field, so tests drive it for real.  The recipe and its measured pitfalls are in
docs/testing.md, "A real microphone without a sound card":

* a fresh ``XDG_RUNTIME_DIR`` (0700) per server, a client config with
  ``autospawn = no`` and a ``.pa`` script with a 16 kHz mono null sink whose
  monitor is the default source — anything played into ``vsink`` comes out of
  the "microphone" unchanged;
* a silent low-latency keep-alive stream into the sink, then a suspend/resume
  of the sink, otherwise the null sink renders in 2 s blocks and a new
  recording gets its first audio ~1.8 s late;
* every process is started with stdio redirected and stopped by its PID.

The faults a kiosk's microphone meets, on demand: the server killed (``kill_server``: no input
device at all) or frozen (``freeze_server``), and the source unplugged while the server stays
up (``remove_source``; ``restore_source`` plugs it back).

Usage::

    with VirtualMic() as mic, mic.apply_to_os_environ():
        src = PyAudioSource()          # finds the private server via env
        mic.play("speech.wav", wait=False)
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

SINK = "vsink"
_ENV_KEYS = ("XDG_RUNTIME_DIR", "PULSE_CLIENTCONFIG", "PULSE_SERVER", "PULSE_COOKIE")


def pulse_available() -> bool:
    """True when the PulseAudio daemon and its command-line clients are installed."""
    return all(shutil.which(b) for b in ("pulseaudio", "pactl", "pacat", "paplay"))


class PulseError(RuntimeError):
    """The private server could not be started or driven; the message holds its log tail."""


class VirtualMic:
    """Context manager owning one private PulseAudio server and its helper processes.

    ``env`` holds the variables a client (child process, or this process via
    ``apply_to_os_environ``) needs to reach this server and no other.
    """

    def __init__(self, rate: int = 16000, start_timeout_s: float = 10.0, keepalive: bool = True) -> None:
        self.rate = rate
        self.start_timeout_s = start_timeout_s
        self.keepalive = keepalive
        self._tmp: Path | None = None
        self._server: subprocess.Popen | None = None
        self._keepalive: subprocess.Popen | None = None
        self._players: list[subprocess.Popen] = []
        self._log_files: list = []
        self.env: dict[str, str] = {}
        self.log_path: Path | None = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> VirtualMic:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Create the private directories and config, start the server and the keep-alive."""
        if self._tmp is not None:
            raise PulseError("VirtualMic already started")
        if not pulse_available():
            raise PulseError("pulseaudio/pulseaudio-utils are not installed")
        self._tmp = Path(tempfile.mkdtemp(prefix="vigil-pulse-"))
        runtime = self._tmp / "runtime"
        runtime.mkdir(mode=0o700)
        os.chmod(runtime, 0o700)  # mkdir's mode is filtered by the umask
        home = self._tmp / "home"
        home.mkdir(mode=0o700)
        client_conf = self._tmp / "client.conf"
        client_conf.write_text("autospawn = no\n")
        script = self._tmp / "vigil.pa"
        script.write_text(
            "load-module module-native-protocol-unix auth-anonymous=1\n"
            f"load-module module-null-sink {' '.join(self._sink_args())}\n"
            f"set-default-sink {SINK}\n"
            f"set-default-source {SINK}.monitor\n"
        )
        self._script = script
        self._home = home
        self.log_path = self._tmp / "pulseaudio.log"
        self.env = {
            "XDG_RUNTIME_DIR": str(runtime),
            "PULSE_CLIENTCONFIG": str(client_conf),
            "PULSE_SERVER": f"unix:{runtime}/pulse/native",
        }
        atexit.register(self.close)
        try:
            self._start_server()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop every process this object started (by PID) and remove its files. Idempotent."""
        self.stop_players()
        self._stop_keepalive()
        if self._server is not None:
            _stop(self._server)
            self._server = None
        for f in self._log_files:
            with contextlib.suppress(Exception):
                f.close()
        self._log_files.clear()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)

    # ------------------------------------------------------------------ server control
    def kill_server(self, sig: int = signal.SIGKILL) -> None:
        """Kill the server (default SIGKILL, like a crash) and reap it and the keep-alive."""
        if self._server is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self._server.send_signal(sig)
        try:
            self._server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _stop(self._server)
        self._server = None
        self._stop_keepalive()

    def restart_server(self) -> None:
        """Start the server again (after ``kill_server``) with the same socket path and env."""
        if self._server is not None:
            self.kill_server()
        self._start_server()

    def remove_source(self) -> None:
        """Unplug the microphone: unload the null sink (and with it its monitor, the only source).

        The server stays up with no source at all, as when a USB microphone is pulled out; the
        players and the keep-alive, which play into that sink, are stopped first.
        """
        self.stop_players()
        self._stop_keepalive()
        self.pactl("unload-module", "module-null-sink")

    def restore_source(self) -> None:
        """Plug the microphone back: the null sink as the start script makes it, re-timed."""
        self.pactl("load-module", "module-null-sink", *self._sink_args())
        self.pactl("set-default-sink", SINK)
        self.pactl("set-default-source", f"{SINK}.monitor")
        if self.keepalive:
            self._start_keepalive()

    def freeze_server(self) -> None:
        """SIGSTOP the server: clients block without an error (the hardest failure to notice)."""
        if self._server is not None:
            self._server.send_signal(signal.SIGSTOP)

    def thaw_server(self) -> None:
        """SIGCONT a frozen server."""
        if self._server is not None:
            self._server.send_signal(signal.SIGCONT)

    @property
    def server_pid(self) -> int | None:
        return self._server.pid if self._server is not None else None

    def pids(self) -> list[int]:
        """PIDs of every live process this object owns (for leak checks)."""
        procs = [self._server, self._keepalive, *self._players]
        return [p.pid for p in procs if p is not None and p.poll() is None]

    # ------------------------------------------------------------------ clients
    @contextlib.contextmanager
    def apply_to_os_environ(self) -> Iterator[None]:
        """Point this process's PulseAudio clients (e.g. PyAudio) at the private server.

        libpulse reads these variables at every connection, so in-process
        clients opened inside the block use this server; the previous values
        are restored on exit.
        """
        saved = {k: os.environ.get(k) for k in _ENV_KEYS}
        os.environ.update(self.env)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def child_env(self) -> dict[str, str]:
        """A full environment for a child process that should use this server."""
        env = {k: v for k, v in os.environ.items() if k not in _ENV_KEYS}
        env.update(self.env)
        return env

    def play(self, wav_path: str | os.PathLike, wait: bool = True, timeout_s: float = 120.0) -> subprocess.Popen:
        """Play a WAV into the virtual microphone with ``paplay``.

        Each playback start can lose its first few ms, so test WAVs should
        begin with >= 50 ms of silence (``bench.synth.synthesize`` pads them).
        """
        for done in [p for p in self._players if p.poll() is not None]:
            self._players.remove(done)
            _stop(done)  # reaped, its pipe closed
        proc = subprocess.Popen(
            ["paplay", f"--device={SINK}", str(wav_path)],
            env=self.child_env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        self._players.append(proc)
        if wait:
            try:
                _, err = proc.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired as exc:
                _stop(proc)
                raise PulseError(f"paplay {wav_path} did not finish in {timeout_s} s") from exc
            self._players.remove(proc)
            if proc.returncode != 0:
                raise PulseError(f"paplay {wav_path} failed ({proc.returncode}): "
                                 f"{err.decode(errors='replace').strip()}")
        return proc

    def stop_players(self) -> None:
        """Stop every ``play()`` still running (by PID)."""
        for proc in self._players:
            _stop(proc)
        self._players.clear()

    def pactl(self, *args: str, timeout_s: float = 5.0) -> str:
        """Run ``pactl`` against this server; raise PulseError on failure."""
        r = subprocess.run(["pactl", *args], env=self.child_env(), stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=timeout_s)
        if r.returncode != 0:
            raise PulseError(f"pactl {' '.join(args)} failed: {r.stderr.strip()}")
        return r.stdout

    # ------------------------------------------------------------------ internals
    def _sink_args(self) -> tuple[str, ...]:
        return (f"sink_name={SINK}", f"rate={self.rate}", "channels=1")

    def _start_server(self) -> None:
        assert self._tmp is not None and self.log_path is not None
        log = open(self.log_path, "ab")
        self._log_files.append(log)
        server_env = self.child_env()
        server_env["HOME"] = str(self._home)  # cookie and state files stay in the temp dir
        self._server = subprocess.Popen(
            ["pulseaudio", "-n", "-F", str(self._script), "--daemonize=no", "--exit-idle-time=-1",
             "--disallow-exit", "--use-pid-file=no", "--log-target=stderr"],
            env=server_env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )
        deadline = time.monotonic() + self.start_timeout_s
        last_err = ""
        while True:
            if self._server.poll() is not None:
                raise PulseError(f"pulseaudio exited with {self._server.returncode}: {self._log_tail()}")
            try:
                self.pactl("info", timeout_s=2)
                if any(line.split("\t")[1:2] == [SINK] for line in self.pactl("list", "short", "sinks").splitlines()):
                    break
                last_err = f"server is up but sink {SINK!r} is missing"
            except (PulseError, subprocess.TimeoutExpired) as e:
                last_err = str(e)
            if time.monotonic() > deadline:
                _stop(self._server)
                self._server = None
                raise PulseError(f"pulseaudio not ready in {self.start_timeout_s} s ({last_err}): {self._log_tail()}")
            time.sleep(0.02)
        if self.keepalive:
            self._start_keepalive()

    def _start_keepalive(self) -> None:
        """Silent 20 ms-latency stream so the null sink renders in small blocks, then re-time it."""
        self._stop_keepalive()
        self._keepalive = subprocess.Popen(
            ["pacat", "--playback", "--raw", "--format=s16le", f"--rate={self.rate}", "--channels=1",
             f"--device={SINK}", "--latency-msec=20", "/dev/zero"],
            env=self.child_env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        # Wait until the stream is connected before re-timing the sink.
        deadline = time.monotonic() + self.start_timeout_s
        while not self.pactl("list", "short", "sink-inputs").strip():
            if self._keepalive.poll() is not None:
                raise PulseError(f"keep-alive pacat exited with {self._keepalive.returncode}")
            if time.monotonic() > deadline:
                raise PulseError("keep-alive stream did not connect")
            time.sleep(0.01)
        self.pactl("suspend-sink", SINK, "1")
        self.pactl("suspend-sink", SINK, "0")

    def _stop_keepalive(self) -> None:
        if self._keepalive is not None:
            _stop(self._keepalive)
            self._keepalive = None

    def _log_tail(self, n: int = 15) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-n:])  # type: ignore[union-attr]
        except OSError:
            return "(no log)"


def _stop(proc: subprocess.Popen, timeout_s: float = 3.0) -> None:
    """Terminate one child by PID (SIGCONT first, in case it was frozen), then kill; always reap."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=timeout_s)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
