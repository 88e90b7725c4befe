"""STT studies behind the defaults: model × decoding WER, endpointing engines and silences, streaming.

    python -m bench.stt_study wer        [--limit N]   # tiny.en vs base, greedy vs beam 5, per voice
    python -m bench.stt_study endpoint                 # Silero vs webrtcvad; end_silence 400/500/700
    python -m bench.stt_study streaming [--rounds N]   # real pipeline, quick corpus, speculative on/off
    python -m bench.stt_study hearing    [--limit N]   # where the request starts x how it is decoded (option table)
    python -m bench.stt_study alone                    # the model or us? requests alone, clean and in a room
    python -m bench.stt_study all

Results go to ``bench/out/stt_study/<study>.json`` and ``<study>.md`` (the printed table).
Timings come from a shared 2-core box: absolute numbers are noisy; compare the ratios of
one run (every configuration of a study runs interleaved, utterance by utterance).

Ground truth is the full bench corpus (``bench.corpus.build_default_corpus(quick=False)``,
cached at ``~/.cache/vigil/corpus-full``): 72 wake utterances from 8 espeak-ng/flite voices,
each "Hey Jarvis, <request>" with the request's transcript and ``speech_end_s``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "stt_study"
RATE = 16_000


def corpus_dir(quick: bool = False) -> Path:
    from bench.corpus import build_default_corpus

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vigil"
    manifest = Path(build_default_corpus(cache / ("corpus-quick" if quick else "corpus-full"), quick=quick,
                                         progress=False))
    return manifest.parent if manifest.name == "manifest.jsonl" else manifest


def load_manifest(directory: Path) -> list[dict]:
    rows = [json.loads(line) for line in (directory / "manifest.jsonl").read_text().splitlines() if line.strip()]
    for row in rows:
        row["path"] = str(directory / row["wav"])
    return rows


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=float), q))


def save(name: str, data: dict, table: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(data, indent=2))
    (OUT / f"{name}.md").write_text(table + "\n")
    print(table)
    print(f"\nsaved {OUT / (name + '.json')} and .md")


# --------------------------------------------------------------------------- 1. WER: model x decoding


def make_decoder(model: Path, beam: int, threads: int):
    """A WhisperEngine (validated file, audio_ctx sizing, float32 input); beam > 1 swaps in beam search."""
    from engines.stt.whispercpp import WhisperEngine

    engine = WhisperEngine(model, n_threads=threads)
    if beam > 1:
        from pywhispercpp.model import Model

        engine._model = Model(str(engine.model_path), n_threads=threads, print_progress=False,
                              redirect_whispercpp_logs_to=None, params_sampling_strategy=1,
                              beam_search={"beam_size": beam, "patience": -1.0}, language="en",
                              no_timestamps=True, single_segment=True, no_context=True, temperature=0.0,
                              print_realtime=False)
    return engine


WAKE_FRAME = 1280
PREROLL_FRAMES = 4  # round(0.3 s * 16000 / 1280), as workers/stt.py computes it


def wake_frames(rows: list[dict], threshold: float = 0.5) -> dict[str, int | None]:
    """Where openWakeWord (the default engine) fires in each file, as the pipeline would see it."""
    from core.audio import load_wav
    from engines.wake.oww import OpenWakeWordEngine

    engine = OpenWakeWordEngine()
    found: dict[str, int | None] = {}
    for row in rows:
        engine.reset()
        audio = np.concatenate([np.zeros(RATE * 2, np.int16), load_wav(row["path"])])  # warm-up lead
        found[row["wav"]] = None
        for f in range(len(audio) // WAKE_FRAME):
            if engine.score(audio[f * WAKE_FRAME:(f + 1) * WAKE_FRAME]) >= threshold and f * WAKE_FRAME >= 2 * RATE:
                found[row["wav"]] = f - 2 * RATE // WAKE_FRAME
                break
    return found


def study_wer(limit: int | None, threads: int) -> dict:
    from bench.wer import word_errors
    from models.provision import WHISPER, WHISPER_BASE, default_models_dir
    from core.audio import load_wav
    from workers.stt import strip_wake_phrase

    models_dir = default_models_dir()
    models = {"tiny.en": models_dir / WHISPER.filename, "base": models_dir / WHISPER_BASE.filename}
    missing = [f"{k} ({p})" for k, p in models.items() if not p.is_file()]
    if missing:
        raise SystemExit(f"missing model(s): {', '.join(missing)} — run `python -m models.provision --base`")
    configs = [(m, beam) for m in models for beam in (1, 5)]
    decoders = {(m, beam): make_decoder(models[m], beam, threads) for m, beam in configs}
    rows = [r for r in load_manifest(corpus_dir()) if r["wake"]]
    if limit:
        rows = rows[:limit]
    wake = wake_frames(rows)
    results = []
    for i, row in enumerate(rows):
        audio = load_wav(row["path"])
        # What the STT worker gets: from the wake frame minus the 0.3 s pre-roll to speech end + 50 ms.
        start = max(0, (wake[row["wav"]] + 1 - PREROLL_FRAMES) * WAKE_FRAME) if wake[row["wav"]] is not None else 0
        clip = audio[start: int((row["speech_end_s"] + 0.05) * RATE)]
        for key in configs:
            decoder = decoders[key]
            if i == 0:
                decoder.transcribe(clip)  # warm-up: first call allocates
            t = time.perf_counter()
            text = strip_wake_phrase(decoder.transcribe(clip))
            ms = (time.perf_counter() - t) * 1000
            errors, n_ref = word_errors(row["transcript"], text)
            results.append({"wav": row["wav"], "voice": row["speaker"], "model": key[0], "beam": key[1],
                            "ref": row["transcript"], "hyp": text, "wake_frame": wake[row["wav"]],
                            "errors": errors, "ref_words": n_ref,
                            "decode_ms": round(ms, 1), "audio_s": round(len(clip) / RATE, 3)})
        print(f"\r  {i + 1}/{len(rows)} utterances", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    data = {"threads": threads, "n_utterances": len(rows), "results": results}
    return summarize_wer(data)


def summarize_wer(data: dict) -> dict:
    """Tables from the per-utterance results (``wer --resummarize`` redoes this from the saved JSON).

    WER counts only files where openWakeWord fired: on the others the pipeline never runs STT, and the study's
    fallback clip (from the file start) holds the wake phrase, which whisper hears as "Hey novice" and the
    wake-phrase stripper cannot remove. The "incl. missed wakes" row counts them anyway.
    """
    results, threads = data["results"], data["threads"]
    configs = list(dict.fromkeys((r["model"], r["beam"]) for r in results))
    voices = sorted({r["voice"] for r in results})
    heard = [r for r in results if r["wake_frame"] is not None]

    def rate(sel: list[dict]) -> float:
        return sum(r["errors"] for r in sel) / max(1, sum(r["ref_words"] for r in sel))

    summary: dict = {}
    for m, beam in configs:
        name = f"{m} {'greedy' if beam == 1 else f'beam{beam}'}"
        sel = [r for r in heard if r["model"] == m and r["beam"] == beam]
        every = [r for r in results if r["model"] == m and r["beam"] == beam]
        ms = [r["decode_ms"] for r in every]
        summary[name] = {"wer": rate(sel), "wer_incl_missed_wakes": rate(every),
                         "wer_by_voice": {v: rate([r for r in sel if r["voice"] == v]) for v in voices},
                         "n_by_voice": {v: sum(1 for r in sel if r["voice"] == v) for v in voices},
                         "decode_ms_p50": pct(ms, 50), "decode_ms_p95": pct(ms, 95),
                         "rtf_p50": pct([r["decode_ms"] / 1000 / r["audio_s"] for r in every], 50), "n": len(sel)}
    ref = summary[next(iter(summary))]["decode_ms_p50"]
    first = next(iter(summary.values()))
    n_files = len({r["wav"] for r in results})
    n_heard = len({r["wav"] for r in heard})
    lines = [f"WER per voice (full corpus: {n_files} wake utterances, {n_heard} where openWakeWord fired; whisper "
             f"{threads} threads; clip = wake frame - 0.3 s pre-roll .. speech end + 50 ms, as the STT worker "
             "gets it; wake phrase stripped). Decode times on a shared, heavily loaded 2-core box (load 5-10): "
             "compare the ratios, not the absolute ms.", "",
             "| voice (files) | " + " | ".join(summary) + " |", "|---" * (len(summary) + 1) + "|"]
    for v in voices:
        lines.append(f"| {v} ({first['n_by_voice'][v]}) | "
                     + " | ".join(f"{s['wer_by_voice'][v] * 100:.1f} %" if s["n_by_voice"][v] else "–"
                                  for s in summary.values()) + " |")
    lines.append("| **all** | " + " | ".join(f"**{s['wer'] * 100:.1f} %**" for s in summary.values()) + " |")
    lines.append("| incl. missed wakes | " + " | ".join(f"{s['wer_incl_missed_wakes'] * 100:.1f} %"
                                                       for s in summary.values()) + " |")
    lines.append("| decode p50 ms | " + " | ".join(f"{s['decode_ms_p50']:.0f}" for s in summary.values()) + " |")
    lines.append("| decode p95 ms | " + " | ".join(f"{s['decode_ms_p95']:.0f}" for s in summary.values()) + " |")
    lines.append("| decode × tiny greedy (p50) | " + " | ".join(f"{s['decode_ms_p50'] / ref:.2f}"
                                                             for s in summary.values()) + " |")
    lines.append("| RTF p50 | " + " | ".join(f"{s['rtf_p50']:.3f}" for s in summary.values()) + " |")
    data = {**data, "summary": summary}
    save("wer", data, "\n".join(lines))
    return data


# --------------------------------------------------------------------------- 2. endpointing


class WebRtcVadAdapter:
    """webrtcvad behind SileroVad's interface: ``prob(512 samples)`` = voiced share of its 10 ms frames.

    512 is not a multiple of 160, so leftover samples carry to the next chunk.
    """

    chunk_samples = 512

    def __init__(self, aggressiveness: int = 2, threshold: float = 0.5) -> None:
        import webrtcvad

        self._vad = webrtcvad.Vad(aggressiveness)
        self.threshold = threshold
        self.reset()

    def reset(self) -> None:
        self._rest = np.zeros(0, dtype=np.int16)
        self._last = 0.0

    def prob(self, chunk: np.ndarray) -> float:
        x = np.asarray(chunk)
        if x.dtype != np.int16:
            x = np.clip(x * 32768.0, -32768, 32767).astype(np.int16)
        buf = np.concatenate((self._rest, x))
        n = len(buf) // 160
        self._rest = buf[n * 160:]
        votes = [self._vad.is_speech(buf[i * 160:(i + 1) * 160].tobytes(), RATE) for i in range(n)]
        self._last = sum(votes) / n if n else self._last
        return self._last


@dataclass
class Clip:
    name: str
    audio: np.ndarray  # int16
    speech_end_s: float
    voice: str
    kind: str  # "natural" (corpus file) or "pause<ms>" (two requests joined by a pause)


def build_clips(rows: list[dict], noise_snr_db: float | None, pauses_ms: tuple[int, ...]) -> list[Clip]:
    """Corpus files, plus hesitation clips: "Hey Jarvis, <request A>" + pause + <request B's speech>."""
    from bench.synth import mix_at_snr, pink_noise
    from core.audio import load_wav

    clips = []
    audio = {r["wav"]: load_wav(r["path"]) for r in rows}
    for r in rows:
        clips.append(Clip(r["wav"], audio[r["wav"]], r["speech_end_s"], r["speaker"], "natural"))
    for k, pause in enumerate(pauses_ms):
        for a in rows[k::max(1, len(pauses_ms))][:16]:
            b = rows[(rows.index(a) + 7) % len(rows)]
            head = audio[a["wav"]][: int(a["speech_end_s"] * RATE)]
            tail = audio[b["wav"]][int(b["speech_start_s"] * RATE): int(b["speech_end_s"] * RATE)]
            # b's speech_start_s is the start of "Hey Jarvis": keep only b's request (skip ~0.9 s of wake phrase)
            tail = tail[int(0.9 * RATE):]
            joined = np.concatenate([head, np.zeros(int(pause * RATE / 1000), np.int16), tail,
                                     np.zeros(int(1.5 * RATE), np.int16)])
            end = (len(head) + int(pause * RATE / 1000) + len(tail)) / RATE
            clips.append(Clip(f"{a['wav']}+pause{pause}", joined, end, a["speaker"], f"pause{pause}"))
    if noise_snr_db is not None:
        for i, c in enumerate(clips):
            speech = c.audio[: int(c.speech_end_s * RATE)]
            noise = pink_noise(len(c.audio) / RATE + 0.1, seed=i)[: len(c.audio)]
            # scale the noise for the given SNR against the speech part, then add it everywhere
            ref = mix_at_snr(speech, noise[: len(speech)], noise_snr_db).astype(np.float64) - speech
            gain = float(np.std(ref) / max(1e-9, np.std(noise[: len(speech)].astype(np.float64))))
            mixed = c.audio.astype(np.float64) + gain * noise.astype(np.float64)
            clips[i] = Clip(c.name, np.clip(mixed, -32768, 32767).astype(np.int16), c.speech_end_s, c.voice, c.kind)
    return clips


def vad_probs(engine: str, audio: np.ndarray) -> tuple[list[float], float]:
    """Per-512-sample-chunk speech probabilities and the CPU seconds it took."""
    from engines.stt.vad import CHUNK_SAMPLES, SileroVad

    vad = SileroVad() if engine == "silero" else WebRtcVadAdapter(int(engine.split(":")[1]))
    vad.reset()
    n = len(audio) // CHUNK_SAMPLES
    cpu = time.process_time()
    probs = [vad.prob(audio[i * CHUNK_SAMPLES:(i + 1) * CHUNK_SAMPLES]) for i in range(n)]
    return probs, time.process_time() - cpu


def endpoint_from_probs(probs: list[float], threshold: float, end_silence_ms: int,
                        min_speech_ms: int = 150) -> float | None:
    """The Endpointer's rule (workers/vad.py) replayed on precomputed probabilities: speech end in seconds."""
    chunk = 512
    end_sil, min_speech = end_silence_ms * RATE // 1000, min_speech_ms * RATE // 1000
    run_start = speech_start = last_voiced_end = None
    for i, p in enumerate(probs):
        start, end = i * chunk, (i + 1) * chunk
        voiced = p >= threshold
        if voiced:
            run_start = start if run_start is None else run_start
            last_voiced_end = end
        else:
            run_start = None
        if speech_start is None:
            if voiced and end - run_start >= min_speech:
                speech_start = run_start
            continue
        if not voiced and last_voiced_end is not None and end - last_voiced_end >= end_sil:
            return last_voiced_end / RATE
    return None


def check_replay_matches_endpointer(clip: Clip, end_silence_ms: int) -> None:
    """The replayed rule must agree with the real Endpointer (else the study measures the wrong thing)."""
    from engines.stt.vad import Endpointer, SileroVad

    ep = Endpointer(SileroVad(), end_silence_ms=end_silence_ms, no_speech_timeout_s=30, max_utterance_s=60)
    real = None
    for i in range(0, len(clip.audio), 1280):
        ev = ep.feed(clip.audio[i:i + 1280])
        if ev is not None and ev.kind == "speech_end":
            real = ev.sample_index / RATE
            break
    probs, _ = vad_probs("silero", clip.audio)
    replay = endpoint_from_probs(probs, 0.5, end_silence_ms)
    if real != replay:
        raise AssertionError(f"replayed endpoint {replay} != Endpointer {real} on {clip.name}")


def study_endpoint(silences=(400, 500, 700), pauses_ms=(250, 350, 450, 600)) -> dict:
    rows = [r for r in load_manifest(corpus_dir()) if r["wake"]]
    engines = ["silero"]
    try:
        import webrtcvad  # noqa: F401

        engines += ["webrtc:2", "webrtc:3"]
    except ImportError:
        print("webrtcvad not installed (pip install webrtcvad-wheels): Silero only", file=sys.stderr)
    conditions = {"clean": None, "pink 10 dB": 10.0}
    check_replay_matches_endpointer(build_clips(rows[:1], None, ())[0], 500)
    results = []
    cpu: dict = defaultdict(float)
    audio_s: dict = defaultdict(float)
    for cond, snr in conditions.items():
        clips = build_clips(rows, snr, pauses_ms)
        for n, clip in enumerate(clips):
            for eng in engines:
                probs, spent = vad_probs(eng, clip.audio)
                cpu[eng] += spent
                audio_s[eng] += len(clip.audio) / RATE
                for sil in silences:
                    end = endpoint_from_probs(probs, 0.5, sil)
                    results.append({"condition": cond, "engine": eng, "end_silence_ms": sil, "clip": clip.name,
                                    "kind": clip.kind, "voice": clip.voice, "true_end_s": clip.speech_end_s,
                                    "detected_end_s": end,
                                    "fired_s": None if end is None else end + sil / 1000})
            print(f"\r  {cond}: {n + 1}/{len(clips)} clips", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    summary = []
    for cond in conditions:
        for eng in engines:
            for sil in silences:
                sel = [r for r in results if r["condition"] == cond and r["engine"] == eng
                       and r["end_silence_ms"] == sil]
                found = [r for r in sel if r["detected_end_s"] is not None]
                early = [r for r in found if r["detected_end_s"] < r["true_end_s"] - 0.15]
                late_ok = [r for r in found if r not in early]
                err = [(r["detected_end_s"] - r["true_end_s"]) * 1000 for r in late_ok]
                lat = [(r["fired_s"] - r["true_end_s"]) * 1000 for r in late_ok]
                by_kind = {k: sum(1 for r in early if r["kind"] == k) for k in sorted({r["kind"] for r in sel})}
                n_kind = {k: sum(1 for r in sel if r["kind"] == k) for k in by_kind}
                summary.append({
                    "condition": cond, "engine": eng, "end_silence_ms": sil, "n": len(sel),
                    "missed": len(sel) - len(found), "false_early": len(early), "false_early_by_kind": by_kind,
                    "n_by_kind": n_kind,
                    "end_err_ms_p50": pct([abs(e) for e in err], 50), "end_err_ms_p95": pct([abs(e) for e in err], 95),
                    "end_err_signed_ms_p50": pct(err, 50),
                    "fire_after_true_end_ms_p50": pct(lat, 50), "fire_after_true_end_ms_p95": pct(lat, 95)})
    cpu_ms_per_s = {e: 1000 * cpu[e] / audio_s[e] for e in engines}
    kinds = list(summary[0]["false_early_by_kind"])
    lines = ["Endpointing (full corpus wake files + hesitation clips \"request A <pause> request B\"; "
             "false early end = detected end > 150 ms before the true end)", "",
             "| condition | engine | end silence | |err| p50 ms | |err| p95 ms | signed p50 "
             "| fires after end p50/p95 ms | missed | " + " | ".join(f"early {k}" for k in kinds) + " |",
             "|---" * (8 + len(kinds)) + "|"]
    for s in summary:
        lines.append(f"| {s['condition']} | {s['engine']} | {s['end_silence_ms']} | {s['end_err_ms_p50']:.0f} | "
                     f"{s['end_err_ms_p95']:.0f} | {s['end_err_signed_ms_p50']:+.0f} | "
                     f"{s['fire_after_true_end_ms_p50']:.0f} / {s['fire_after_true_end_ms_p95']:.0f} | {s['missed']} | "
                     + " | ".join(f"{s['false_early_by_kind'][k]}/{s['n_by_kind'][k]}" for k in kinds) + " |")
    lines += ["", "CPU per audio second (1 thread, this run): "
              + ", ".join(f"{e} {v:.1f} ms" for e, v in cpu_ms_per_s.items()),
              "whisper.cpp's own VAD: not measured — pywhispercpp 1.5.1 exposes `vad`/`vad_model_path`, but it needs "
              "a ggml Silero model (ggml-silero-*.bin) that no package on PyPI ships (hub download only)."]
    data = {"silences_ms": list(silences), "pauses_ms": list(pauses_ms), "engines": engines,
            "cpu_ms_per_audio_s": cpu_ms_per_s, "summary": summary, "results": results}
    save("endpoint", data, "\n".join(lines))
    return data


# --------------------------------------------------------------------------- 3. streaming (speculative) vs not


def study_streaming(rounds: int = 2) -> dict:
    """The real pipeline on the quick corpus, speculative STT on and off, alternated ``rounds`` times
    (on, off, on, off...) so a change in the machine's load hits both modes alike."""
    from bench.corpus import load_corpus
    from bench.replay import build_replay, run_pipeline
    from core.events import ResponseEvent

    directory = corpus_dir(quick=True)
    utterances = list(load_corpus(directory))
    OUT.mkdir(parents=True, exist_ok=True)
    wav = OUT / "streaming-replay.wav"
    placements = build_replay(utterances, wav, passes=1, gap_s=1.5)
    modes = {"speculative 150 ms (default)": {}, "off (0)": {"VIGIL_STT__SPECULATIVE_SILENCE_MS": "0"}}
    collected: dict = {label: {"se_tr": [], "se_ft": [], "stt_compute": [], "sessions": 0, "returncodes": [],
                               "load_avg": []} for label in modes}
    for rnd in range(rounds):
        for label, env in modes.items():
            print(f"  round {rnd + 1}/{rounds}: {label}", file=sys.stderr)
            c = collected[label]
            c["load_avg"].append(round(os.getloadavg()[0], 2))
            result = run_pipeline(wav, OUT / f"streaming-{'on' if not env else 'off'}-{rnd}",
                                  extra_args=("--exit-when-done",), env={**env, "VIGIL_HTTP__ENABLED": "false"},
                                  timeout_s=120 + sum(p.duration_s + 1.5 for p in placements) * 2)
            c["returncodes"].append(result.returncode)
            c["sessions"] += len(result.sessions)
            for e in result.events:
                if not isinstance(e, ResponseEvent):
                    continue
                lat = e.latency_ms
                for key, name in (("se_tr", "speech_end_to_transcript"), ("se_ft", "speech_end_to_first_token"),
                                  ("stt_compute", "stt_compute")):
                    if lat.get(name) is not None:
                        c[key].append(lat[name])
    runs = {}
    for label, c in collected.items():
        runs[label] = {"returncodes": c["returncodes"], "responses": len(c["se_tr"]),
                       "load_avg_at_start": c["load_avg"],
                       "speech_end_to_transcript_ms": {"p50": pct(c["se_tr"], 50), "p95": pct(c["se_tr"], 95),
                                                       "n": len(c["se_tr"]), "values": c["se_tr"]},
                       "speech_end_to_first_token_ms": {"p50": pct(c["se_ft"], 50), "p95": pct(c["se_ft"], 95),
                                                        "n": len(c["se_ft"])},
                       "stt_compute_ms": {"p50": pct(c["stt_compute"], 50), "p95": pct(c["stt_compute"], 95)}}
    data = {"rounds": rounds, "n_files": len(utterances), "n_wake": sum(1 for u in utterances if u.wake),
            "runs": runs}
    return render_streaming(data)


def render_streaming(data: dict) -> dict:
    """The table; min and p25 beside p50/p95 because on a loaded box the upper quantiles measure the queue."""
    lines = [f"Speech end → final transcript, real pipeline (`python -m pipeline run --input`), quick corpus "
             f"({data['n_files']} files, {data['n_wake']} with the wake phrase) × {data['rounds']} rounds alternating "
             "the modes; end_silence_ms from config (500). Box shared and loaded (load avg 4-6 on 2 cores).", "",
             "| STT mode | speech_end→transcript min | p25 | p50 | p95 | n | speech_end→first token p50 | p95 | "
             "STT compute p50 | load avg at start |", "|---|---|---|---|---|---|---|---|---|---|"]
    for label, r in data["runs"].items():
        a, b, cpt = r["speech_end_to_transcript_ms"], r["speech_end_to_first_token_ms"], r["stt_compute_ms"]
        vals = a["values"]
        lines.append(f"| {label} | {min(vals) if vals else float('nan'):.0f} | {pct(vals, 25):.0f} | {a['p50']:.0f} | "
                     f"{a['p95']:.0f} | {a['n']} | {b['p50']:.0f} | {b['p95']:.0f} | {cpt['p50']:.0f} | "
                     f"{r['load_avg_at_start']} |")
    save("streaming", data, "\n".join(lines))
    return data


# --------------------------------------------------------------------------- 4. hearing
# where the request starts, how it is decoded


@dataclass(frozen=True)
class Start:
    """Where the clip given to STT begins (the end is always the true speech end + 50 ms, as the worker's).

    ``preroll``: ``offset_s`` before the end of openWakeWord's peak frame (the pipeline's rule for an
    openWakeWord proposal); ``aligned``: the forced verifier's aligned wake-phrase end + ``offset_s``;
    ``truth``: the wake corpus's measured phrase end + ``offset_s`` (an oracle: wake corpus only);
    ``whole``: the utterance from its start, wake phrase stripped from the text (the Wyoming peer's way);
    ``pipeline``: what the pipeline did before this study (sure wake → pre-roll 0.3 s, verified onset
    proposal → aligned end, verified openWakeWord proposal → pre-roll 0.3 s); ``verified``: every verified
    proposal → aligned end + ``offset_s``, a sure wake (never verified) → pre-roll 0.3 s; ``worker``: what
    workers/stt.py does now, every wake's aligned end + ``offset_s`` but never before the session's first
    sample (the pre-roll before the proposal).
    """
    rule: str
    offset_s: float = 0.0

    @property
    def label(self) -> str:
        if self.rule == "worker":
            return f"aligned end {self.offset_s * 1000:+.0f} ms, never before the session's pre-roll"
        if self.rule == "verified":
            return f"aligned end {self.offset_s * 1000:+.0f} ms when verified, sure wake: pre-roll 0.30 s"
        if self.rule in ("whole", "pipeline"):
            return {"whole": "whole utterance, wake phrase stripped",
                    "pipeline": "before: pre-roll / aligned"}[self.rule]
        name = {"preroll": "pre-roll", "aligned": "aligned end", "truth": "true end (oracle)"}[self.rule]
        return f"{name} {self.offset_s * 1000:+.0f} ms" if self.rule != "preroll" else f"{name} {self.offset_s:.2f} s"


def hearing_rows() -> list[tuple[str, Start, object, str]]:
    """(label, start, decoding, model): every choice varied alone around the chosen default."""
    from dataclasses import replace

    from engines.stt.whispercpp import DEFAULT_DECODING as best
    from engines.stt.whispercpp import Decoding

    # what the engine did before this study: no timestamps, whisper.cpp's fallback on, up to 128 tokens
    before = Decoding(timestamps=False, temperature_inc=0.2, pad_s=0.0, tokens_per_s=0.0, min_tokens=128,
                      retry_on_loop=False)
    start = Start("worker", 0.05)  # what workers/stt.py does (WAKE_END_LAG_S; a sure wake is aligned too)
    rows = [("before (pipeline start, no timestamps, fallback, 128 tokens, old strip)", Start("pipeline"), before,
             "tiny.en"),
            ("chosen", start, best, "tiny.en")]
    for p in (0.15, 0.3, 0.5):
        rows.append((f"start: pre-roll {p:.2f} s", Start("preroll", p), best, "tiny.en"))
    for o in (-0.1, 0.0, 0.05, 0.1):
        rows.append((f"start: aligned end {o * 1000:+.0f} ms", Start("aligned", o), best, "tiny.en"))
    rows += [("start: aligned end +50 ms when verified, sure wake pre-roll 0.30 s", Start("verified", 0.05), best,
              "tiny.en"),
             ("start: pipeline before", Start("pipeline"), best, "tiny.en"),
             ("start: true end (oracle)", Start("truth", 0.0), best, "tiny.en"),
             ("start: whole utterance + strip", Start("whole"), best, "tiny.en"),
             ("strip: \"hey jarvis\" only (before), not its tail", start, best, "tiny.en"),
             ("pad 0.2 s silence", start, replace(best, pad_s=0.2), "tiny.en"),
             ("prompt \"Hey Jarvis,\"", start, replace(best, initial_prompt="Hey Jarvis,"), "tiny.en"),
             ("timestamps on", start, replace(best, timestamps=True), "tiny.en"),
             ("timestamps on, prompt \"Hey Jarvis,\"", start, replace(best, timestamps=True,
                                                                       initial_prompt="Hey Jarvis,"), "tiny.en"),
             ("no loop guard (no budget, no retry)", start, replace(best, retry_on_loop=False, tokens_per_s=0.0,
                                                                    min_tokens=128), "tiny.en"),
             ("temperature fallback on (0.2)", start, replace(best, temperature_inc=0.2), "tiny.en"),
             ("beam 5", start, replace(best, beam_size=5), "tiny.en"),
             ("base (multilingual)", start, best, "base")]
    return rows


# What workers/stt.py stripped before this study: "hey jarvis" only (not the tail of "Jarvis": "This, ...").
_STRIP_BEFORE = re.compile(r"^\W*(?:(?:hey|hi|a|okay|ok)\W+)?(?:jarvis|jervis|travis|javis)\b\W*", re.IGNORECASE)


def strip_before(text: str) -> str:
    return _STRIP_BEFORE.sub("", text.strip(), count=1).strip()


def hearing_files(quick: bool = False, corpus: Path | None = None, wake_corpus: Path | None = None) -> list[dict]:
    """Wake utterances of the bench corpus ("bench", hesitations left out) and the wake corpus's positives
    ("wake", every condition); each corpus is built (or found built) unless given."""
    from bench.wake_corpus import build_wake_corpus, default_wake_corpus_dir, load_wake_corpus

    corpus = corpus or corpus_dir(quick)
    files = [{**r, "source": "bench", "condition": r.get("condition") or "clean"}
             for r in load_manifest(corpus) if r["wake"] and r.get("pause_s") is None]
    if wake_corpus is None:
        wake_corpus = build_wake_corpus(default_wake_corpus_dir(corpus_dir(quick).parent, quick), quick=quick,
                                        progress=False).parent
    files += [{**r, "source": "wake"} for r in load_wake_corpus(wake_corpus) if r["set"] == "positive"]
    return files


def wake_geometry(files: list[dict], say=None) -> dict[str, dict]:
    """Per file, what the wake stage tells STT: openWakeWord's proposal (peak frame, sure or not), the onset
    proposal, which came first, and the forced verifier's verdict and aligned phrase end on that proposal's
    window — in samples of the file, computed as the pipeline's workers do with the default config."""
    from core.audio import load_wav
    from core.config import Config
    from engines.wake.detector import WakeDetector
    from engines.wake.forced import ForcedPhraseScorer, ForcedVerifier
    from engines.wake.onset import OnsetProposer
    from engines.wake.oww import OpenWakeWordEngine
    from engines.wake.text_verify import WINDOW_AFTER_S, WINDOW_BEFORE_S
    from models.provision import WHISPER_CT2, default_models_dir

    w = Config().wake
    oww = OpenWakeWordEngine()
    verifier = ForcedVerifier(ForcedPhraseScorer((default_models_dir() / WHISPER_CT2.filename).parent, threads=1),
                              min_margin=w.verify_margin, min_log10p=w.verify_floor)
    before = int(np.ceil(WINDOW_BEFORE_S * RATE / WAKE_FRAME))
    after = int(np.ceil(WINDOW_AFTER_S * RATE / WAKE_FRAME))
    lead = 2 * RATE
    out = {}
    for k, f in enumerate(files):
        audio = np.concatenate([np.zeros(lead, np.int16), load_wav(f["path"]), np.zeros(RATE, np.int16)])
        oww.reset()
        detector = WakeDetector(oww, threshold=w.proposal_threshold, warmup_s=w.warmup_s, refractory_s=w.refractory_s,
                                settle_score=w.sure_threshold)
        onset = OnsetProposer(WAKE_FRAME)
        warm = int(w.warmup_s * RATE / WAKE_FRAME)
        found_oww = found_onset = None
        for i in range(audio.size // WAKE_FRAME):
            frame = audio[i * WAKE_FRAME:(i + 1) * WAKE_FRAME]
            if onset.feed(frame) and i > warm and found_onset is None:
                found_onset = {"source": "onset", "seq": i, "start_seq": i - onset.propose_frames, "report": i}
            d = detector.feed(frame)
            if d is not None and found_oww is None:
                found_oww = {"source": "oww", "seq": i - d.frames_ago, "sure": d.score >= w.sure_threshold,
                             "score": round(d.score, 3), "report": i}
            if found_oww and found_onset:
                break
        # the session is the first proposal; a sure openWakeWord wake reported before that proposal's
        # verdict (window end) takes over, as the coordinator does
        first = min((p for p in (found_oww, found_onset) if p), key=lambda p: p["report"], default=None)
        if (first is found_onset and found_oww and found_oww["sure"]
                and found_oww["report"] <= found_onset["seq"] + after):
            first = found_oww
        g = {"first": first and first["source"], "oww_seq": found_oww and found_oww["seq"],
             "sure": bool(first is found_oww and found_oww and found_oww["sure"]), "accepted": None,
             "phrase_end": None, "start_seq": first and first.get("start_seq")}
        if first is not None:
            w0 = (first["seq"] + 1 - before) * WAKE_FRAME
            window = audio[max(0, w0):(first["seq"] + 1 + after) * WAKE_FRAME]
            verdict = verifier.check(window)
            g["accepted"] = bool(verdict.accepted)
            if verdict.phrase_end_s is not None:
                g["phrase_end"] = max(0, w0) + int(verdict.phrase_end_s * RATE)
        for key in ("oww_seq", "start_seq"):  # frames of the lead-padded stream -> samples of the file
            if g[key] is not None:
                g[key.replace("_seq", "_sample")] = (g[key] + 1) * WAKE_FRAME - lead if key == "oww_seq" else \
                    g[key] * WAKE_FRAME - lead
        if g["phrase_end"] is not None:
            g["phrase_end"] -= lead
        out[f["path"]] = g
        if say and (k + 1) % 25 == 0:
            say(f"  wake geometry {k + 1}/{len(files)}")
    return out


def start_sample(start: Start, f: dict, g: dict) -> int | None:
    """Where the clip begins for this rule (None: the rule has nothing to go on for this file)."""
    preroll = int(round(0.3 * RATE / WAKE_FRAME)) * WAKE_FRAME
    oww_end = g.get("oww_sample")
    if start.rule == "whole":
        return 0
    if start.rule == "truth":
        return None if f.get("wake_end_s") is None else int((f["wake_end_s"] + start.offset_s) * RATE)
    if start.rule == "preroll":
        if oww_end is None:
            return None
        return max(0, oww_end - int(round(start.offset_s * RATE / WAKE_FRAME)) * WAKE_FRAME)
    if start.rule == "aligned":
        return None if g.get("phrase_end") is None else max(0, g["phrase_end"] + int(start.offset_s * RATE))
    if (start.rule == "verified" and not g["sure"] or start.rule == "worker") and g.get("phrase_end") is not None:
        # as workers/stt.py: never before the session's first sample (the pre-roll before the proposal)
        first = g["start_sample"] if g["first"] == "onset" else oww_end
        return max(0, g["phrase_end"] + int(start.offset_s * RATE), (first or 0) - preroll)
    # "pipeline": what workers/stt.py did (and "verified" for a sure wake)
    if g["first"] == "onset":
        if g.get("phrase_end") is not None:
            return max(0, g["phrase_end"])
        return max(0, g["start_sample"] - preroll)
    return None if oww_end is None else max(0, oww_end - preroll)


def study_hearing(quick: bool = False, limit: int | None = None, threads: int = 2, corpus: Path | None = None,
                  wake_corpus: Path | None = None, only: list[str] | None = None) -> dict:
    """Every start rule and decode choice on the same clips, one utterance at a time through every row
    (``only``: the rows whose label starts with one of these, "chosen" always among them)."""
    from bench.wer import judge
    from core.audio import load_wav
    from engines.stt.whispercpp import WhisperEngine
    from models.provision import WHISPER, WHISPER_BASE, default_models_dir
    from workers.stt import strip_wake_phrase

    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    files = hearing_files(quick, corpus, wake_corpus)
    if limit and limit < len(files):  # evenly spread over both corpora, every voice and condition
        files = [files[i] for i in np.unique(np.linspace(0, len(files) - 1, limit).round().astype(int))]
    rows = hearing_rows()
    if only:
        rows = [r for r in rows if r[0] == "chosen" or r[0].startswith(tuple(only))]
    models = {"tiny.en": default_models_dir() / WHISPER.filename, "base": default_models_dir() / WHISPER_BASE.filename}
    if not models["base"].is_file():
        say(f"no {models['base']} (python -m pipeline models --base): the base row is left out")
        rows = [r for r in rows if r[3] != "base"]
    engines = {m: WhisperEngine(models[m], n_threads=threads) for m in {r[3] for r in rows}}
    for e in engines.values():
        e.transcribe(np.zeros(RATE, np.int16))  # the first call allocates
    say(f"hearing study: {len(files)} files x {len(rows)} rows")
    geometry = wake_geometry(files, say)
    results, cache = [], {}
    for k, f in enumerate(files):
        audio = load_wav(f["path"])
        g = geometry[f["path"]]
        end = min(audio.size, int((f["speech_end_s"] + 0.05) * RATE))
        for label, start, decoding, model in rows:
            s0 = start_sample(start, f, g)
            if s0 is None or s0 >= end - int(0.1 * RATE):
                results.append({"row": label, "path": f["path"], "skipped": True})
                continue
            key = (f["path"], model, decoding, s0, end)
            if key not in cache:
                cache[key] = engines[model].hear(audio[s0:end], decoding)
            heard = cache[key]
            text = (strip_before if label.startswith(("before", "strip:")) else strip_wake_phrase)(heard.text)
            j = judge(f["transcript"], text)
            results.append({"row": label, "path": f["path"], "source": f["source"], "condition": f["condition"],
                            "voice": f["voice"], "ref": f["transcript"], "raw": heard.text, "hyp": text,
                            "errors": j.errors, "ref_words": j.ref_words, "first_word_ok": j.first_word_ok,
                            "leak": j.leak, "loop": j.loop, "loop_caught": heard.loop, "retried": heard.retried,
                            "cut": heard.cut, "decode_ms": heard.compute_ms, "audio_s": round((end - s0) / RATE, 3),
                            "start_vs_truth_ms": None if f.get("wake_end_s") is None
                            else round((s0 / RATE - f["wake_end_s"]) * 1000)})
        if (k + 1) % 10 == 0:
            say(f"  decoded {k + 1}/{len(files)} files")
            OUT.mkdir(parents=True, exist_ok=True)  # what is done so far survives an interrupted run
            (OUT / "hearing.partial.json").write_text(json.dumps({"results": results}))
    data = {"threads": threads, "quick": quick, "n_files": len(files), "rows": [r[0] for r in rows],
            "geometry": {"first": dict(Counter(g["first"] for g in geometry.values())),
                         "sure": sum(g["sure"] for g in geometry.values()),
                         "no_alignment": sum(g["phrase_end"] is None for g in geometry.values()),
                         "by_file": geometry},
            "results": results}
    return render_hearing(data)


def _rate(sel: list[dict]) -> float:
    words = sum(r["ref_words"] for r in sel)
    return sum(r["errors"] for r in sel) / words if words else float("nan")


def _group(r: dict) -> str:
    return f"{r['source']} {r['condition']}"


def render_hearing(data: dict) -> dict:
    """The option table (one line per row), then WER per voice and condition for the chosen row."""
    results = [r for r in data["results"] if not r.get("skipped")]
    groups = list(dict.fromkeys(_group(r) for r in sorted(results, key=lambda r: r["source"])))
    lines = [f"Hearing: where the request starts and how it is decoded ({data['n_files']} wake utterances: the "
             "bench corpus's (\"bench\") and the wake corpus's positives (\"wake\"), per condition; clip end = true "
             "speech end + 50 ms; wake stage as the default config computes it — first proposal "
             f"{data['geometry']['first']}, sure wakes {data['geometry']['sure']}, no alignment "
             f"{data['geometry']['no_alignment']}). WER with Whisper's English normaliser; first word = the transcript "
             "starts with the request's first word; leaks = files with words before it; loops = repetition loops "
             "left in the text / caught and retried by the engine. Decode ms from one interleaved run (every row "
             "decodes the same utterance back to back).", "",
             "| row | files | " + " | ".join(f"WER {g}" for g in groups)
             + " | WER all | first-word errors | leaks | loops left / caught | decode p50 / p95 ms |",
             "|---" * (7 + len(groups)) + "|"]
    summary = {}
    for row in data["rows"]:
        sel = [r for r in results if r["row"] == row]
        if not sel:
            continue
        ms = [r["decode_ms"] for r in sel]
        s = {"files": len(sel), "wer": _rate(sel), "wer_by_group": {g: _rate([r for r in sel if _group(r) == g])
                                                                      for g in groups},
             "first_word_errors": sum(not r["first_word_ok"] for r in sel), "leaks": sum(r["leak"] > 0 for r in sel),
             "loops": sum(r["loop"] for r in sel), "loops_caught": sum(bool(r["loop_caught"]) for r in sel),
             "decode_ms_p50": pct(ms, 50), "decode_ms_p95": pct(ms, 95)}
        summary[row] = s
        lines.append(f"| {row} | {s['files']} | "
                     + " | ".join("–" if np.isnan(s["wer_by_group"][g]) else f"{s['wer_by_group'][g]:.3f}"
                                  for g in groups)
                     + f" | {s['wer']:.3f} | {s['first_word_errors']} ({100 * s['first_word_errors'] / len(sel):.1f} %)"
                     f" | {s['leaks']} | {s['loops']} / {s['loops_caught']} | {s['decode_ms_p50']:.0f} / "
                     f"{s['decode_ms_p95']:.0f} |")
    chosen = [r for r in results if r["row"] == "chosen"]
    for row in ("chosen", "base (multilingual)"):  # per voice: tiny.en as chosen, and base on the same clips
        sel = [r for r in results if r["row"] == row]
        if not sel:
            continue
        voices = sorted({r["voice"] for r in sel})
        lines += ["", f"WER of the {row} row per voice (first-word errors / files in the last column):", "",
                  "| voice | " + " | ".join(groups) + " | first word |", "|---" * (2 + len(groups)) + "|"]
        for v in voices:
            cells = [_rate([r for r in sel if r["voice"] == v and _group(r) == g]) for g in groups]
            mine = [r for r in sel if r["voice"] == v]
            lines.append(f"| {v} | " + " | ".join("–" if np.isnan(x) else f"{x:.3f}" for x in cells)
                         + f" | {sum(not r['first_word_ok'] for r in mine)}/{len(mine)} |")
    if chosen:
        wrong = Counter((r["ref"], r["hyp"]) for r in chosen if r["errors"])
        lines += ["", "Most frequent errors of the chosen row:", ""]
        lines += [f"- {n}× {ref!r} → {hyp!r}" for (ref, hyp), n in wrong.most_common(15)]
    data = {**data, "summary": summary}
    save("hearing", data, "\n".join(lines))
    return data


# --------------------------------------------------------------------------- 5. the request alone: the model or us?


def study_alone(threads: int = 2, corpus: Path | None = None) -> dict:
    """Each wake request of the bench corpus spoken again by the same voice *without* the wake phrase
    (0.3 s of silence around it), clean and in the same simulated room as its room copy, and transcribed by
    tiny.en and base: what the model makes of the voice when nothing of ours (where the request starts, the
    strip of the wake phrase) is in the way. A voice whose WER stays high here is misheard by the model; one
    that is fine here and bad in the hearing study's chosen row is cut or leaked by us."""
    from bench.corpus import plan
    from bench.rooms import in_room
    from bench.synth import tts_samples
    from bench.wer import judge
    from engines.stt.whispercpp import WhisperEngine
    from models.provision import WHISPER, WHISPER_BASE, default_models_dir

    files = [r for r in load_manifest(corpus or corpus_dir()) if r["wake"] and r.get("pause_s") is None
             and (r.get("condition") or "clean") == "clean" and r.get("voice")]
    room_seed = {item.file: item.seed for item in plan() if item.condition == "room"}  # the corpus's own room
    models = {m: default_models_dir() / spec.filename for m, spec in (("tiny.en", WHISPER), ("base", WHISPER_BASE))}
    engines = {m: WhisperEngine(p, n_threads=threads) for m, p in models.items() if p.is_file()}
    silence = np.zeros(int(0.3 * RATE), np.int16)
    results = []
    for k, r in enumerate(files):
        engine_name, voice, *rate = r["voice"].split(":")
        audio = np.concatenate([silence, tts_samples(r["transcript"], engine_name, voice,
                                                     int(rate[0]) if rate else None), silence])
        views = {"clean": audio}
        if f"room_{r['wav']}" in room_seed:
            views["room"] = in_room(audio, room_seed[f"room_{r['wav']}"])
        for condition, clip in views.items():
            for m, engine in engines.items():
                heard = engine.transcribe(clip)
                j = judge(r["transcript"], heard)
                results.append({"model": m, "condition": condition, "voice": r["voice"], "ref": r["transcript"],
                                "hyp": heard, "errors": j.errors, "ref_words": j.ref_words,
                                "first_word_ok": j.first_word_ok})
        if (k + 1) % 20 == 0:
            print(f"  {k + 1}/{len(files)} requests", file=sys.stderr, flush=True)
    voices = sorted({r["voice"] for r in results})
    columns = [(m, c) for m in engines for c in ("clean", "room")]
    lines = [f"The request alone ({len(files)} wake requests of the bench corpus, each synthesized again by its "
             "voice without the wake phrase, clean and in its room copy's simulated room): WER with Whisper's "
             "normaliser, first-word errors.", "",
             "| voice | " + " | ".join(f"{m} {c}" for m, c in columns) + " |", "|---" * (1 + len(columns)) + "|"]
    summary: dict = {}
    for v in [*voices, "all"]:
        cells = []
        for m, c in columns:
            sel = [r for r in results if r["model"] == m and r["condition"] == c and v in ("all", r["voice"])]
            s = {"wer": _rate(sel), "first_word_errors": sum(not r["first_word_ok"] for r in sel), "files": len(sel)}
            summary.setdefault(m, {}).setdefault(c, {})[v] = s
            cells.append(f"{s['wer']:.3f} ({s['first_word_errors']}/{s['files']})" if sel else "–")
        lines.append(f"| {'**all**' if v == 'all' else v} | " + " | ".join(cells) + " |")
    real = _real_speech_in_rooms(engines)
    if real:
        conditions = list(next(iter(real.values())))
        lines += ["", "Real speech (`../shared/audio/jfk.wav`, one man, 22 words), clean and in each simulated room:",
                  "", "| model | " + " | ".join(conditions) + " |", "|---" * (1 + len(conditions)) + "|"]
        lines += [f"| {m} | " + " | ".join(f"{r['wer']:.3f}" for r in by.values()) + " |" for m, by in real.items()]
    wrong = Counter((r["condition"], r["voice"], r["ref"], r["hyp"]) for r in results
                    if r["errors"] and r["model"] == "tiny.en")
    lines += ["", "tiny.en's errors:", ""] + [f"- {c}, {v}: {ref!r} → {hyp!r}"
                                              for (c, v, ref, hyp), _n in wrong.most_common()]
    data = {"threads": threads, "n_files": len(files), "summary": summary, "results": results, "real_speech": real}
    save("alone", data, "\n".join(lines))
    return data


JFK = ("and so my fellow americans ask not what your country can do for you "
       "ask what you can do for your country")


def _real_speech_in_rooms(engines: dict) -> dict[str, dict[str, dict]]:
    """{model: {condition: {"wer", "hyp"}}} for the one real voice with a known transcript beside the checkout
    (``../shared/audio/jfk.wav``), clean and in each room of ``bench.rooms``; {} when that folder is absent."""
    from bench.rooms import ROOMS, in_room
    from bench.wer import judge
    from core.audio import load_wav

    path = Path(__file__).resolve().parents[2] / "shared" / "audio" / "jfk.wav"
    if not path.is_file():
        print(f"  {path} absent: no real-speech rows", file=sys.stderr)
        return {}
    clean = load_wav(path)
    views = {"clean": clean, **{room.name: in_room(clean, k) for k, room in enumerate(ROOMS)}}
    out: dict[str, dict[str, dict]] = {}
    for m, engine in engines.items():
        for condition, clip in views.items():
            heard = engine.transcribe(clip)
            j = judge(JFK, heard)
            out.setdefault(m, {})[condition] = {"wer": round(j.errors / j.ref_words, 3), "hyp": heard}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stt_study", description=__doc__.split("\n\n")[0])
    parser.add_argument("study", choices=["wer", "endpoint", "streaming", "hearing", "alone", "all"])
    parser.add_argument("--quick", action="store_true", help="hearing: the quick corpora")
    parser.add_argument("--corpus", type=Path,
                        help="hearing, alone: a bench corpus folder (default: build the default one)")
    parser.add_argument("--wake-corpus", type=Path, help="hearing: a wake corpus folder (default: build it)")
    parser.add_argument("--limit", type=int,
                        help="wer: only the first N wake utterances; hearing: N spread over the files")
    parser.add_argument("--rows", nargs="*", help="hearing: only the rows whose label starts so (\"chosen\" always)")
    parser.add_argument("--resummarize", action="store_true",
                        help="wer, streaming: redo the tables from the saved JSON")
    parser.add_argument("--threads", type=int, default=2, help="wer: whisper threads (default 2, as [stt] threads)")
    parser.add_argument("--rounds", type=int, default=2, help="streaming: on/off alternations (default 2)")
    args = parser.parse_args(argv)
    if args.study in ("wer", "all") and args.resummarize:
        summarize_wer(json.loads((OUT / "wer.json").read_text()))
    elif args.study in ("wer", "all"):
        study_wer(args.limit, args.threads)
    if args.study in ("endpoint", "all"):
        study_endpoint()
    if args.study in ("hearing", "all") and args.resummarize:
        render_hearing(json.loads((OUT / "hearing.json").read_text()))
    elif args.study in ("hearing", "all"):
        study_hearing(args.quick, args.limit, args.threads, args.corpus, args.wake_corpus, args.rows)
    if args.study in ("alone", "all"):
        study_alone(args.threads, args.corpus)
    if args.study in ("streaming", "all") and args.resummarize:
        data = json.loads((OUT / "streaming.json").read_text())
        data.setdefault("n_files", 12)
        data.setdefault("n_wake", 9)
        render_streaming(data)
    elif args.study in ("streaming", "all"):
        study_streaming(args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
