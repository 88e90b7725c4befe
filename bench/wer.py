"""How well a transcript heard its request: WER, the first word, wake-phrase leaks and decode loops.

The WER is counted the way Whisper's own evaluations count it: both sides go through Whisper's
English normaliser (``whisper-normalizer``, the package that carries ``EnglishTextNormalizer``:
case, punctuation, contractions "what's" → "what is", spelled numbers "five" → "5", fillers "um",
British spellings), then ``jiwer`` aligns the words.  So "Set a timer for 5 minutes." and "set a
timer for five minutes" are the same, while "This, set a timer for 5 minutes" is one insertion.

Per file, beside the word errors:

* ``first_word_ok``: the transcript's first word is the request's first word — the audio given to
  STT started where the wake phrase ended, without cutting the next word ("I'll have you today"
  for "how are you today" is a miss) and without a word of the wake phrase before it;
* ``leak``: words before the request's first word ("This, set a timer", "Jarvis what time is it");
* ``loop``: a repetition loop — a word n-gram said over and over that the request does not say, or
  far more words than the request has ("tell me something about the moon" six times).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import jiwer
from whisper_normalizer.english import EnglishTextNormalizer

from engines.stt.whispercpp import repeated_ngram

_NORMALIZER = EnglishTextNormalizer()


def normalize(text: str | None) -> list[str]:
    """Words of ``text`` after Whisper's English normaliser ("&" is read "and" first: whisper writes both)."""
    if not text:
        return []
    return _NORMALIZER(text.replace("&", " and ")).split()


@dataclass(frozen=True)
class Heard:
    """One transcript against its reference."""
    errors: int          # substitutions + deletions + insertions
    ref_words: int
    first_word_ok: bool  # the transcript starts with the request's first word
    leak: int            # words heard before the request's first word
    loop: bool           # a repetition loop

    @property
    def wer(self) -> float:
        return self.errors / self.ref_words if self.ref_words else float(self.errors > 0)


def _alignment(ref: list[str], hyp: list[str]):
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    return out, out.alignments[0]


def judge(ref: str, hyp: str | None) -> Heard:
    """Word errors, first word, leak and loop of one transcript (both sides normalised)."""
    r, h = normalize(ref), normalize(hyp)
    if not r:
        return Heard(len(h), 0, not h, 0, is_loop(r, h))
    if not h:
        return Heard(len(r), len(r), False, 0, False)
    out, chunks = _alignment(r, h)
    errors = out.substitutions + out.deletions + out.insertions
    leak = next((c.hyp_end_idx - c.hyp_start_idx for c in chunks if c.type == "insert" and c.ref_start_idx == 0
                 and c.hyp_start_idx == 0), 0)
    return Heard(errors, len(r), h[0] == r[0], leak, is_loop(r, h))


def is_loop(ref_words: list[str], hyp_words: list[str]) -> bool:
    """A decode loop: an n-gram repeated back to back that the reference does not repeat, or more than
    twice the reference's words plus four."""
    if len(hyp_words) > 2 * len(ref_words) + 4:
        return True
    found = repeated_ngram(hyp_words)
    return found is not None and repeated_ngram(ref_words) != found


def word_errors(ref: str, hyp: str) -> tuple[int, int]:
    """(substitutions + insertions + deletions, number of reference words) after normalisation."""
    heard = judge(ref, hyp)
    return heard.errors, heard.ref_words


def wer(pairs: Iterable[tuple[str, str]]) -> float:
    """Corpus WER: total errors / total reference words over (reference, hypothesis) pairs.

    NaN when there are no reference words at all (nothing to measure)."""
    errors = words = 0
    for ref, hyp in pairs:
        e, n = word_errors(ref, hyp)
        errors += e
        words += n
    return errors / words if words else float("nan")


def summarize(rows: Iterable[tuple[str, str | None]]) -> dict:
    """Corpus figures over (reference, transcript) pairs: WER, first-word errors, leaks, loops, files."""
    n = errors = words = first_bad = leaks = loops = 0
    for ref, hyp in rows:
        heard = judge(ref, hyp)
        n += 1
        errors += heard.errors
        words += heard.ref_words
        first_bad += not heard.first_word_ok
        leaks += heard.leak > 0
        loops += heard.loop
    return {"wer": round(errors / words, 4) if words else None, "files": n, "ref_words": words,
            "first_word_errors": first_bad, "first_word_error_rate": round(first_bad / n, 4) if n else None,
            "leaks": leaks, "loops": loops}


def summarize_by(rows: Iterable[tuple[str, str, str | None]]) -> dict[str, dict]:
    """``summarize`` per group over (group, reference, transcript) triples, groups in first-seen order."""
    groups: dict[str, list[tuple[str, str | None]]] = {}
    for group, ref, hyp in rows:
        groups.setdefault(group, []).append((ref, hyp))
    return {g: summarize(pairs) for g, pairs in groups.items()}


def top_errors(rows: Iterable[tuple[str, str | None]], n: int = 8) -> list[tuple[str, str, int]]:
    """The most frequent wrong transcripts: (reference, transcript, count), most frequent first."""
    wrong = Counter((ref, hyp or "") for ref, hyp in rows if judge(ref, hyp).errors)
    return [(ref, hyp, k) for (ref, hyp), k in wrong.most_common(n)]


def stt_summary(records: list[dict]) -> dict:
    """The bench report's ``stt``: over wake utterances whose wake was detected, the transcripts against their
    references — overall (``wer``, ``n``, first-word errors, leaks, loops), per voice, per condition, per
    pass, and the most frequent wrong transcripts."""
    heard = [r for r in records if r.get("wake_expected") and r.get("wake_detected")]
    rows = [(r.get("transcript_ref") or "", r.get("transcript") or "") for r in heard]
    out = {**summarize(rows), "n": len(heard)}
    for key, field in (("by_voice", "voice"), ("by_condition", "condition"), ("by_pass", "pass")):
        out[key] = summarize_by((str(r.get(field) or ("clean" if field == "condition" else "")), ref, hyp)
                                for r, (ref, hyp) in zip(heard, rows))
    out["top_errors"] = [{"ref": ref, "heard": hyp, "count": n} for ref, hyp, n in top_errors(rows)]
    return out
