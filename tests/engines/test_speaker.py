"""Speaker ID: the numpy resemblyzer port, voiceprint store, enroll CLI, speechbrain local load,
and the speaker worker over real shared memory — all with real weights and synthesized voices."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench.synth import write_wav16
from models.provision import ensure_speaker_model
from engines.speaker.voiceprints import VoiceprintError, VoiceprintStore
from engines.speaker.resemblyzer import ResemblyzerNumpy, load_torch_checkpoint
from engines.speaker import SpeakerError

from bench.worker_rig import WAKE_AT, WorkerRig
from bench.speech import SR, pad, synth

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not (shutil.which("espeak-ng") and shutil.which("flite")), reason="needs espeak-ng and flite"
)

SENTENCES = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please turn on the lights in the kitchen and close the door.",
    "What is the weather going to be like tomorrow morning in town?",
    "Remind me to call my sister at seven o'clock this evening.",
)
ENROLLED = ("flite:kal", "flite:slt", "en-us")
STRANGER = "flite:awb"


@pytest.fixture(scope="module")
def weights() -> Path:
    return ensure_speaker_model(progress=False)


@pytest.fixture(scope="module")
def engine(weights) -> ResemblyzerNumpy:
    return ResemblyzerNumpy(weights)


@pytest.fixture(scope="module")
def clips() -> dict[str, list[np.ndarray]]:
    return {v: [synth(s, v) for s in SENTENCES] for v in (*ENROLLED, STRANGER)}


@pytest.fixture(scope="module")
def embeddings(engine, clips) -> dict[str, list[np.ndarray]]:
    return {v: [engine.embed(c) for c in cs] for v, cs in clips.items()}


# --------------------------------------------------------------------------- engine


def test_checkpoint_is_read_without_torch(weights):
    code = ("import sys, numpy as np; from engines.speaker.resemblyzer import ResemblyzerNumpy as R;"
            f"e = R({str(weights)!r}); x = e.embed((np.sin(np.arange(32000) * 0.05) * 8000).astype(np.int16));"
            "assert 'torch' not in sys.modules, 'torch was imported'; print(x.shape, e.layers[0][0].shape)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["(256,)", "(40,", "1024)"]
    state = load_torch_checkpoint(weights)["model_state"]
    assert state["lstm.weight_hh_l2"].shape == (1024, 256) and state["linear.weight"].dtype == np.float32


def test_embedding_is_deterministic_unit_and_accepts_float(engine, clips):
    clip = clips["flite:kal"][0]
    a, b = engine.embed(clip), engine.embed(clip.copy())
    assert a.dtype == np.float32 and a.shape == (256,)
    assert abs(float(np.linalg.norm(a)) - 1.0) < 1e-5
    assert np.array_equal(a, b)
    f = engine.embed(clip.astype(np.float32) / 32768.0)
    assert float(a @ f) > 0.9999
    assert (a >= 0).all()  # ReLU before the norm, as GE2E


def test_same_voice_scores_higher_than_other_voices(embeddings):
    voices = list(embeddings)
    for v in voices:
        e = embeddings[v]
        same = [float(e[i] @ e[j]) for i in range(len(e)) for j in range(i + 1, len(e))]
        other = [float(x @ y) for w in voices if w != v for x in e for y in embeddings[w]]
        assert min(same) > max(other), f"{v}: same-voice min {min(same):.3f} <= other-voice max {max(other):.3f}"


def test_bad_audio_is_refused_with_a_reason(engine, clips):
    with pytest.raises(SpeakerError, match="too short"):
        engine.embed(clips["en-us"][0][: int(0.3 * SR)])
    with pytest.raises(SpeakerError, match="silent"):
        engine.embed(np.zeros(3 * SR, dtype=np.int16))
    with pytest.raises(SpeakerError, match="too little speech"):  # 0.3 s of speech in 3 s of near-silence
        engine.embed(pad(clips["en-us"][0][: int(0.3 * SR)], 1.5, 1.2))
    with pytest.raises(SpeakerError, match="mono"):
        engine.embed(np.zeros((SR, 2), dtype=np.int16))
    with pytest.raises(SpeakerError, match="dtype"):
        engine.embed(np.zeros(2 * SR, dtype=np.int32))
    assert issubclass(SpeakerError, ValueError)


# --------------------------------------------------------------------------- voiceprint store


def test_store_identifies_enrolled_and_rejects_stranger(tmp_path, embeddings):
    store = VoiceprintStore(tmp_path, "resemblyzer", 256)
    for v in ENROLLED:
        store.enroll(v.replace("flite:", ""), embeddings[v][:3])
    assert store.names() == ["en-us", "kal", "slt"]
    for v in ENROLLED:
        name, score = store.identify(embeddings[v][3], threshold=0.75)
        assert name == v.replace("flite:", ""), (v, name, score)
        assert score >= 0.75
    name, score = store.identify(embeddings[STRANGER][3], threshold=0.75)
    assert name == "unknown" and 0 < score < 0.75, score  # the nearest name is never given
    # A second store on the same folder (another process) sees the same voiceprints.
    again = VoiceprintStore(tmp_path, "resemblyzer", 256)
    assert again.identify(embeddings["flite:kal"][3], 0.75)[0] == "kal"
    assert again.delete("kal") and not again.delete("kal")
    assert store.refresh() and "kal" not in store.names()
    assert VoiceprintStore(tmp_path / "empty", "resemblyzer", 256).identify(embeddings["en-us"][0], 0.5) == \
        ("unknown", 0.0)


def test_store_refuses_other_engines_bad_names_and_sizes(tmp_path, embeddings):
    store = VoiceprintStore(tmp_path, "resemblyzer", 256)
    store.enroll("alice", embeddings["en-us"][:2])
    data = json.loads(store.path.read_text())
    assert data["engine"] == "resemblyzer" and data["dim"] == 256 and len(data["speakers"]["alice"]["embedding"]) == 256
    # the same file claimed by an engine of another size
    (tmp_path / "voiceprints" / "speechbrain.json").write_text(store.path.read_text())
    with pytest.raises(VoiceprintError, match="engine 'resemblyzer'"):
        VoiceprintStore(tmp_path, "speechbrain", 192)
    sb = VoiceprintStore(tmp_path / "other", "speechbrain", 192)
    with pytest.raises(VoiceprintError, match="expects 192"):
        sb.enroll("alice", embeddings["en-us"][:1])
    with pytest.raises(VoiceprintError, match="expects 192"):
        sb.identify(embeddings["en-us"][0], 0.75)
    for bad in ("", "unknown", "a/b", "../x", "x" * 33, "-lead", "bell\x07"):
        with pytest.raises(VoiceprintError, match="bad name|reserved"):
            store.enroll(bad, embeddings["en-us"][:1])
    assert store.names() == ["alice"]


def test_store_write_is_atomic(tmp_path, embeddings, monkeypatch):
    store = VoiceprintStore(tmp_path, "resemblyzer", 256)
    store.enroll("alice", embeddings["en-us"][:2])
    before = store.path.read_bytes()

    def failing_replace(src, dst):  # fault injection: the rename never happens (crash/disk error)
        raise OSError("injected rename failure")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="injected"):
        store.enroll("bob", embeddings["flite:kal"][:2])
    monkeypatch.undo()
    assert store.path.read_bytes() == before  # the old file, whole
    assert sorted(p.name for p in store.dir.iterdir()) == ["resemblyzer.json"]  # no temp file left
    assert VoiceprintStore(tmp_path, "resemblyzer", 256).names() == ["alice"]
    store.path.write_text("{ torn")
    with pytest.raises(VoiceprintError, match="unreadable"):
        VoiceprintStore(tmp_path, "resemblyzer", 256)


# --------------------------------------------------------------------------- enroll CLI


def vigil(args: list[str], state: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "VIGIL_METRICS__STATE_DIR": str(state)}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_enroll_cli(tmp_path, clips):
    state = tmp_path / "state"
    kal = clips["flite:kal"]
    mono = write_wav16(tmp_path / "a.wav", pad(kal[0], 0.2, 0.2))
    # stereo 44.1 kHz float: resampled and mixed down
    x = np.repeat(pad(kal[1], 0.2, 0.2), 1).astype(np.float32) / 32768
    import soxr

    y = soxr.resample(x, SR, 44_100)
    stereo = tmp_path / "b.wav"
    import wave

    with wave.open(str(stereo), "wb") as w:
        w.setnchannels(2), w.setsampwidth(2), w.setframerate(44_100)
        w.writeframes(np.clip(np.stack([y, y], 1) * 32767, -32768, 32767).astype("<i2").tobytes())
    short = write_wav16(tmp_path / "short.wav", kal[2][: int(0.3 * SR)])
    r = vigil(["enroll", "Kal", str(mono), str(stereo)], state)
    assert r.returncode == 0, r.stderr
    assert "enrolled Kal from 2 utterance(s)" in r.stdout
    data = json.loads((state / "voiceprints" / "resemblyzer.json").read_text())
    assert data["speakers"]["Kal"]["utterances"] == 2
    r = vigil(["enroll", "--list"], state)
    assert r.returncode == 0 and r.stdout.startswith("Kal\t2 utterance(s)")

    for args, reason in [
        (["enroll", "Bob", str(short)], "too short"),
        (["enroll", "Bob", str(tmp_path / "missing.wav")], "No such file"),
        (["enroll", "Bob", str(tmp_path)], ""),
        (["enroll", "Bob"], "give WAV files or --mic"),
        (["enroll", "Bob", str(mono), "--mic"], "not both"),
        (["enroll", "Bob", "--mic", str(mono)], "unrecognized arguments"),
        (["enroll", "bad/name", str(mono)], "bad name"),
        (["enroll"], "give NAME"),
        (["enroll", "--delete", "Nobody"], "no voiceprint named"),
        (["enroll", "--list", "Kal"], "no other arguments"),
        (["enroll", "Bob", "--phrases", "x"], "invalid int"),
    ]:
        r = vigil(args, state)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and reason in lines[0], (args, r.stderr)
    r = vigil(["enroll", "--delete", "Kal"], state)
    assert r.returncode == 0 and "deleted Kal" in r.stdout
    assert json.loads((state / "voiceprints" / "resemblyzer.json").read_text())["speakers"] == {}
    assert vigil(["enroll", "--list"], state).stdout.startswith("no voiceprints enrolled")


def test_enroll_from_the_microphone(tmp_path, clips, engine):
    """`enroll NAME --mic` through PyAudio from a private PulseAudio server's virtual microphone."""
    from bench.pulse import VirtualMic, pulse_available

    if not pulse_available():
        pytest.skip("needs pulseaudio and pulseaudio-utils")
    state = tmp_path / "state"
    takes = [write_wav16(tmp_path / f"take{i}.wav", pad(clips["flite:slt"][i], 0.1, 0.1)) for i in range(2)]
    with VirtualMic() as mic:
        env = {**mic.child_env(), "VIGIL_METRICS__STATE_DIR": str(state), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", "enroll", "Sally", "--mic", "--phrases", "2",
                                 "--seconds", "4"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        prompts = 0
        try:
            for line in proc.stdout:
                if "Please say" in line:
                    mic.play(takes[prompts], wait=False)
                    prompts += 1
                if line.startswith("enrolled"):
                    break
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, proc.stderr.read()
        assert prompts == 2
        # a silent microphone: each take is asked for again, then a one-line error, exit 2
        silent = subprocess.run([sys.executable, "-m", "pipeline", "enroll", "Quiet", "--mic", "--phrases", "1",
                                 "--seconds", "1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert silent.returncode == 2 and silent.stdout.count("once more") == 2, (silent.stdout, silent.stderr)
    assert len(silent.stderr.strip().splitlines()) == 1 and "take 1" in silent.stderr
    store = VoiceprintStore(state, "resemblyzer", 256)
    assert store.names() == ["Sally"] and store.info()["Sally"]["utterances"] == 2
    name, score = store.identify(engine.embed(clips["flite:slt"][3]), 0.75)
    assert name == "Sally", score
    assert store.identify(engine.embed(clips["flite:kal"][3]), 0.75)[0] == "unknown"


# --------------------------------------------------------------------------- speechbrain from a local folder


def test_speechbrain_ecapa_from_local_folder(tmp_path, clips):
    pytest.importorskip("speechbrain")
    from bench.ecapa import build_ecapa_folder
    from engines.speaker.speechbrain import SpeechbrainEcapa

    folder = build_ecapa_folder(tmp_path / "ecapa")
    eng = SpeechbrainEcapa(folder, threads=1)
    import torch

    assert torch.get_num_threads() == 1
    assert eng.dim == 96 and eng.name == "speechbrain"
    a = eng.embed(clips["en-us"][0])
    assert a.shape == (96,) and a.dtype == np.float32 and abs(float(np.linalg.norm(a)) - 1) < 1e-5
    assert np.allclose(a, eng.embed(clips["en-us"][0]), atol=1e-6)
    b = eng.embed(clips["flite:kal"][1])
    assert float(a @ b) < 0.9999  # different audio, different embedding
    # the same folder loaded again (fresh object) gives the same embedding: weights came from disk
    assert np.allclose(a, SpeechbrainEcapa(folder).embed(clips["en-us"][0]), atol=1e-5)
    with pytest.raises(SpeakerError, match="missing embedding_model.ckpt"):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "hyperparams.yaml").write_text("x: 1\n")
        SpeechbrainEcapa(tmp_path / "empty")
    with pytest.raises(SpeakerError, match="not a folder"):
        SpeechbrainEcapa("")


# --------------------------------------------------------------------------- the worker, real processes



def test_worker_names_enrolled_voice_rejects_stranger_and_honours_cancel(tmp_path, engine, clips, embeddings):
    from core.messages import Cancel, SpeakerResult, StartListening

    store = VoiceprintStore(tmp_path, "resemblyzer", 256)
    store.enroll("kal", embeddings["flite:kal"][:3])
    rig = WorkerRig(tmp_path)
    try:
        rig.wait_running()
        # Session 1: the enrolled voice.
        seq = rig.speak(pad(clips["flite:kal"][3], 0.4, 0.0))
        rig.send(StartListening(session=1, wake_seq=seq + WAKE_AT, wake_ns=time.monotonic_ns()))
        r1 = rig.result(20)
        assert isinstance(r1, SpeakerResult), r1
        assert (r1.session, r1.name, r1.engine) == (1, "kal", "resemblyzer") and r1.score >= 0.75, r1
        assert r1.done_ns >= r1.started_ns and r1.compute_ms > 0

        # Session 2: a voice never enrolled → "unknown", with its (low) best score.
        seq = rig.speak(pad(clips[STRANGER][3], 0.4, 0.0))
        rig.send(StartListening(session=2, wake_seq=seq + WAKE_AT, wake_ns=time.monotonic_ns()))
        r2 = rig.result(20)
        assert (r2.session, r2.name) == (2, "unknown") and 0 < r2.score < 0.75, r2

        # Session 3: cancelled before its audio exists → no result at all.
        rig.send(StartListening(session=3, wake_seq=rig.audio.write_seq, wake_ns=time.monotonic_ns()))
        time.sleep(0.3)
        rig.send(Cancel(session=3))
        time.sleep(0.3)
        rig.speak(pad(clips["flite:kal"][2], 0.2, 0.0))
        assert rig.result(3.0) is None

        # Enrolling while the worker runs takes effect without a restart.
        store.enroll("awb", embeddings[STRANGER][:3])
        seq = rig.speak(pad(clips[STRANGER][3], 0.4, 0.0))
        rig.send(StartListening(session=4, wake_seq=seq + WAKE_AT, wake_ns=time.monotonic_ns()))
        r4 = rig.result(20)
        assert (r4.session, r4.name) == (4, "awb"), r4

        # Too little speech (silence after the wake) → "unknown", score 0, and the worker lives on.
        seq = rig.speak(np.zeros(SR * 3, dtype=np.int16) + np.int16(3))
        rig.send(StartListening(session=5, wake_seq=seq + WAKE_AT, wake_ns=time.monotonic_ns()))
        r5 = rig.result(20)
        assert (r5.session, r5.name, r5.score) == (5, "unknown", 0.0), r5
        assert not [e for e in rig.events if e["event"] in ("exited", "restarted", "hung")], rig.events
    finally:
        rig.close()


def test_worker_fault_delay_delays_the_result(tmp_path, embeddings, clips):
    from core.messages import StartListening

    VoiceprintStore(tmp_path, "resemblyzer", 256).enroll("kal", embeddings["flite:kal"][:3])
    rig = WorkerRig(tmp_path, fault_delay_ms=1500)
    try:
        rig.wait_running()
        seq = rig.speak(pad(clips["flite:kal"][3], 0.4, 0.0))
        sent = time.monotonic_ns()
        rig.send(StartListening(session=7, wake_seq=seq + WAKE_AT, wake_ns=sent))
        r = rig.result(20)
        assert r is not None and r.name == "kal"
        assert (r.done_ns - r.started_ns) / 1e6 >= 1500 - 5, r
        assert not [e for e in rig.events if e["event"] == "hung"], rig.events  # it beat while sleeping
    finally:
        rig.close()
