"""Config values, VIGIL_* variables, pre-start checks and voiceprint files under fuzzing.

The contract at each boundary: a valid result, or a clear error -- one line that names the key,
the variable or the file -- never another exception, and nothing left behind on disk.

1. Any value for any key, through vigil.toml and through VIGIL_<SECTION>__<KEY>: a Config whose
   every value satisfies its key's rule (and survives pickling, as spawn sends it), or ConfigError.
2. Any VIGIL_ variable name: a setting, an error naming it (with the nearest setting when one is
   near), or a variable that is not the config's (VIGIL_LOG_LEVEL).
3. A typo of every key and section: an error that suggests a valid name.
4. `[skills]` lists and paths (events file, state dir, models, input, wake model) through
   pipeline.preflight.check: one-line problems naming the key or flag, or none; nothing created.
5. Voiceprint files of any shape: loaded and usable, or VoiceprintError in one line; a damaged
   file is never rewritten by enroll/delete; the speaker worker's Voiceprints answers "unknown".

Example counts are bounded so the file runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pickle
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, note, settings
from hypothesis import strategies as st

from core.config import (
    SECTIONS,
    Config,
    ConfigError,
    environment_name,
    load_config,
    rule_of,
)
from engines.speaker.voiceprints import VoiceprintError, VoiceprintStore
from pipeline import preflight
from skills import skill_names

NO_FIXTURE_CHECK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
KEYS = [(section, f.name) for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
DEFAULTS = Config()


def default_of(section: str, key: str):
    return getattr(getattr(DEFAULTS, section), key)


def one_line_naming(exc: Exception, *names: str) -> None:
    text = str(exc)
    assert text and "\n" not in text, text
    assert any(name in text for name in names), (names, text)


# ---- 1. any value for any key ------------------------------------------------------------------

def values_near(section: str, key: str):
    """Values around the key's own rule (its bounds, just past them), plus anything at all."""
    rule = rule_of(SECTIONS[section], key)
    bounds = [b for b in (rule.gt, rule.ge, rule.lt, rule.le, rule.off) if b is not None]
    edges = [x for b in bounds for x in (b, b - 1e-9, b + 1e-9, b * 2, -b, b - 1, b + 1)]
    low = next((b for b in (rule.ge, rule.gt) if b is not None), -1e6)
    high = next((b for b in (rule.le, rule.lt) if b is not None), 1e6)
    inside = st.integers(math.ceil(low), math.floor(high)) if isinstance(default_of(section, key), int) \
        else st.floats(low, high)
    return st.one_of(
        inside, inside,
        st.sampled_from(edges or [0]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-(10**12), 10**12),
        st.booleans(),
        st.text(max_size=8),
        st.sampled_from([*rule.choices, "", " ", "nan", "-inf", "1e400", "0x10", "1_000", "true", "maybe",
                         "time,date", "tme, date", "a\x00b"]),
    )


def toml_literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    return json.dumps(value)


@st.composite
def key_and_value(draw):
    section, key = draw(st.sampled_from(KEYS))
    return section, key, draw(values_near(section, key))


def check_config(cfg: Config) -> None:
    """What a returned Config promises: each value of its key's type and within its key's rule."""
    for section, key in KEYS:
        value = getattr(getattr(cfg, section), key)
        assert type(value) is type(default_of(section, key)), (section, key, value)
        if isinstance(value, float):
            assert math.isfinite(value), (section, key, value)
        rule_of(SECTIONS[section], key).check(f"[{section}] {key}", value)  # raises if the loader let it through
    assert pickle.loads(pickle.dumps(cfg)) == cfg  # workers receive it through spawn


@settings(max_examples=400, deadline=None, suppress_health_check=NO_FIXTURE_CHECK)
@given(items=st.lists(key_and_value(), min_size=1, max_size=3), through=st.sampled_from(["toml", "env"]))
def test_any_value_for_any_key_is_a_valid_config_or_names_the_key(items, through, tmp_path):
    path = tmp_path / "vigil.toml"
    environ: dict[str, str] = {}
    tables: dict[str, dict] = {}
    for section, key, value in items:
        if through == "env":
            environ[environment_name(section, key)] = str(value)
        else:
            tables.setdefault(section, {})[key] = value
    path.write_text("".join(f"[{s}]\n" + "".join(f"{k} = {toml_literal(v)}\n" for k, v in t.items())
                            for s, t in tables.items()))
    try:
        cfg = load_config(path, environ=environ)
    except ConfigError as exc:
        event(f"ConfigError via {through}")
        one_line_naming(exc, *(f"[{s}] {k}" for s, k, _ in items), *environ, str(path))
        return
    event(f"valid via {through}")
    check_config(cfg)


# ---- 2. any VIGIL_ variable name ---------------------------------------------------------------

SETTINGS = [environment_name(s, k) for s, k in KEYS]
names_near_settings = st.sampled_from(SETTINGS).flatmap(lambda name: st.one_of(
    st.just(name.replace("__", "_", 1)),  # one underscore
    st.integers(6, len(name) - 1).map(lambda i: name[:i] + name[i + 1:]),  # a letter dropped
    st.integers(6, len(name) - 1).map(lambda i: name[:i] + "X" + name[i:]),  # a letter added
    st.just(name.lower()),
    st.just(name),
))


@settings(max_examples=300, deadline=None)
@given(var=st.one_of(names_near_settings, st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ_", max_size=20).map(
    lambda tail: "VIGIL_" + tail)), value=st.sampled_from(["1", "2", "true", "x"]))
def test_a_vigil_variable_is_a_setting_an_error_naming_it_or_not_ours(var, value):
    try:
        load_config(None, environ={var: value})
    except ConfigError as exc:
        one_line_naming(exc, var)
        if var.upper() not in SETTINGS and "__" not in var:  # refused for being near a setting: say which
            assert "did you mean VIGIL_" in str(exc), str(exc)
        event("ConfigError")
        return
    event("accepted")
    # Accepted: it is a setting (the value was good), or too far from every setting to be a typo of one.
    import difflib

    assert var.upper() in SETTINGS or ("__" not in var and not difflib.get_close_matches(
        var.upper(), SETTINGS, n=1, cutoff=0.85)), var


def test_variables_of_other_parts_of_vigil_are_not_the_configs():
    config = load_config(None, environ={"VIGIL_LOG_LEVEL": "DEBUG", "VIGIL_USER": "vigil", "VIGIL_COLOR": "0",
                                        "VIGIL_TOOL_MODEL": "/m.gguf", "VIGIL_LLM_FAILURES_OUT": "/tmp/x"})
    assert config == Config()


# ---- 3. typos of every key and section ---------------------------------------------------------

@pytest.mark.parametrize("section,key", KEYS)
def test_a_typo_in_any_key_suggests_a_valid_one(section, key, tmp_path):
    typo = key[:-1] if len(key) > 3 else key + "x"
    path = tmp_path / "vigil.toml"
    path.write_text(f"[{section}]\n{typo} = 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    one_line_naming(err.value, f"unknown key(s) in [{section}]: {typo}")
    suggested = str(err.value).split("did you mean ")[-1]
    assert "did you mean" in str(err.value) and suggested.strip("'?)") in {f.name for f in
                                                                           dataclasses.fields(SECTIONS[section])}
    with pytest.raises(ConfigError) as err:
        load_config(None, environ={environment_name(section, typo): "1"})
    one_line_naming(err.value, environment_name(section, typo))
    assert "did you mean" in str(err.value)


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_a_typo_in_any_section_suggests_a_valid_one(section, tmp_path):
    typo = section[:-1] + section[-1] * 2
    path = tmp_path / "vigil.toml"
    path.write_text(f"[{typo}]\nx = 1\n")
    with pytest.raises(ConfigError, match=rf"unknown section\(s\): {typo} \(did you mean '{section}'\?\)"):
        load_config(path, environ={})


# ---- 4. pre-start checks ----------------------------------------------------------------------

skill_lists = st.lists(st.one_of(st.sampled_from(skill_names()), st.sampled_from(["tme", "timr", "dat", "weather",
                                                                                  "Time", " status "])),
                       max_size=4).map(",".join)


@settings(max_examples=150, deadline=None)
@given(allowed=skill_lists, enrolled_only=skill_lists)
def test_skill_lists_are_known_names_or_one_line_naming_the_first_unknown(allowed, enrolled_only):
    try:
        config = Config().replace("skills", allowed=allowed, enrolled_only=enrolled_only)
    except ConfigError as exc:  # only a name that is not a name at all (none generated here)
        pytest.fail(str(exc))
    problems = preflight._skills(config, None)
    names = [n.strip().lower() for n in f"{allowed},{enrolled_only}".split(",") if n.strip()]
    unknown = [n for n in names if n not in skill_names()]
    if not unknown:
        assert problems is None
        event("known")
        return
    event("unknown name")
    assert problems is not None and "\n" not in problems and f"no skill named {unknown[0]!r}" in problems, problems
    if unknown[0] in ("tme", "timr", "dat"):
        assert "(did you mean '" in problems, problems


def tree(root: Path) -> dict[str, tuple]:
    """Every path under root with its kind and size: to check that a check created nothing."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            out[str(p)] = (p.is_dir(), p.stat().st_size if p.is_file() else 0)
    return out


@settings(max_examples=120, deadline=None, suppress_health_check=NO_FIXTURE_CHECK)
@given(picks=st.fixed_dictionaries({
    "events": st.sampled_from([None, "dir", "file", "missing_dir/ev.jsonl", "file/ev.jsonl", "new.jsonl",
                               "ro/ev.jsonl"]),
    "state_dir": st.sampled_from(["dir", "file", "file/sub", "missing/deep", "ro", "/dev/null"]),
    "stt_model": st.sampled_from(["", "missing.bin", "dir", "file", "empty"]),
    "llm_model": st.sampled_from(["", "missing.gguf", "dir", "file", "empty"]),
    "speaker_dir": st.sampled_from(["", "missing.pt", "dir", "file"]),
    "input": st.sampled_from(["mic", "missing.wav", "dir", "file", "empty"]),
    "wake_model": st.sampled_from(["hey_jarvis", "hey_jarvs", "alexa", "missing.onnx", "dir/x.tflite"]),
}))
def test_pre_start_checks_give_one_line_problems_naming_the_key_and_create_nothing(picks, tmp_path_factory):
    root = tmp_path_factory.mktemp("preflight")
    (root / "dir").mkdir()
    (root / "ro").mkdir()
    (root / "file").write_bytes(b"not a model, not a wav, not a folder\n" * 4)
    (root / "empty").write_bytes(b"")
    os.chmod(root / "ro", 0o555)

    def at(name: str | None) -> str | None:
        return None if name is None else name if name in ("mic", "", "hey_jarvis", "hey_jarvs", "alexa") or \
            name.startswith("/") else str(root / name)

    config = (Config().replace("metrics", state_dir=at(picks["state_dir"]))
              .replace("stt", model=at(picks["stt_model"])).replace("llm", model=at(picks["llm_model"]))
              .replace("speaker", model_dir=at(picks["speaker_dir"])).replace("audio", input=at(picks["input"]))
              .replace("wake", model=at(picks["wake_model"])))
    before = tree(root)
    try:
        problems = preflight.check(config, at(picks["events"]))
        preflight.warnings(config)
    finally:
        os.chmod(root / "ro", 0o755)
    assert tree(root) == before, "a pre-start check created or changed something"
    for problem in problems:
        assert "\n" not in problem and problem.startswith(("[", "--")), problem
    note(f"{picks} -> {problems}")
    event(f"{len(problems)} problem(s)")
    flags = " ".join(problems)
    if picks["stt_model"]:
        assert "[stt] model" in flags
    if picks["llm_model"]:
        assert "[llm] model" in flags
    if picks["speaker_dir"]:
        assert "[speaker] model_dir" in flags
    if picks["input"] != "mic":
        assert "--input" in flags
    if picks["state_dir"] in ("file", "file/sub", "/dev/null"):
        assert "[metrics] state_dir" in flags
    if picks["events"] in ("dir", "missing_dir/ev.jsonl", "file/ev.jsonl") or (
            picks["events"] == "ro/ev.jsonl" and os.geteuid() != 0):
        assert "--events" in flags
    if picks["wake_model"] in ("hey_jarvs", "missing.onnx", "dir/x.tflite"):
        assert "[wake] model" in flags
    if not problems:
        assert picks["events"] in (None, "file", "new.jsonl", "ro/ev.jsonl") and picks["stt_model"] == "" \
            and picks["input"] == "mic"


# ---- 5. voiceprint files ----------------------------------------------------------------------

DIM = 4
ENGINE = SimpleNamespace(name="resemblyzer", dim=DIM)  # what Voiceprints reads of an engine: its name and size
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.floats(), st.text(max_size=6))
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c,
                                                                                             max_size=3), max_leaves=8)


def valid_document() -> dict:
    return {"version": 1, "engine": "resemblyzer", "dim": DIM, "speakers": {
        "Alice": {"embedding": [1.0, 0.0, 0.0, 0.0], "utterances": 3, "enrolled_at": 1764000000.0},
        "José": {"embedding": [0.0, 1.0, 0.0, 0.0], "utterances": 1, "enrolled_at": 1764000001.5}}}


@st.composite
def voiceprint_files(draw) -> bytes:
    kind = draw(st.sampled_from(["valid", "random json", "field", "entry", "embedding item", "name", "bytes",
                                 "truncated"]))
    event(kind)
    doc = valid_document()
    if kind == "valid":
        for name in draw(st.lists(st.sampled_from(["Bob", "Zoë", "O'Brien", "li.wei", "Ana María", "7"]), unique=True)):
            doc["speakers"][name] = {
                "embedding": [draw(st.floats(0.01, 1)), *draw(st.lists(st.floats(-1, 1), min_size=DIM - 1,
                                                                         max_size=DIM - 1))],
                "utterances": draw(st.integers(1, 20)), "enrolled_at": draw(st.floats(0, 2e9))}
    elif kind == "random json":
        doc = draw(json_values)
    elif kind == "field":
        doc[draw(st.sampled_from(["version", "engine", "dim", "speakers"]))] = draw(json_values)
    elif kind == "entry":
        entry = doc["speakers"]["Alice"]
        if draw(st.booleans()):
            doc["speakers"]["Alice"] = draw(json_values)
        else:
            entry[draw(st.sampled_from(["embedding", "utterances", "enrolled_at"]))] = draw(st.one_of(
                json_values, st.sampled_from(["yesterday", -1, 1e300, float("nan"), [], [0, 0, 0, 0], True])))
    elif kind == "embedding item":
        doc["speakers"]["Alice"]["embedding"][draw(st.integers(0, DIM - 1))] = draw(st.one_of(
            json_values, st.sampled_from(["0.5", float("inf"), None, True])))
    elif kind == "name":
        doc["speakers"][draw(st.one_of(st.text(max_size=40), st.sampled_from(["alice", "ALICE", "unknown", "",
                                                                              "a/b", "-x", "Zoë"])))] = \
            {"embedding": [0.0, 0.0, 1.0, 0.0], "utterances": 1, "enrolled_at": 1.0}
    data = json.dumps(doc).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "truncated":
        return data[: draw(st.integers(0, len(data) - 1))]
    return data


@settings(max_examples=400, deadline=None, suppress_health_check=NO_FIXTURE_CHECK)
@given(blob=voiceprint_files())
# a name not in its stored form (a trailing control character; found by this test): it could never be found
@example(blob=json.dumps({"version": 1, "engine": "resemblyzer", "dim": DIM, "speakers": {
    "0\r": {"embedding": [0.0, 0.0, 1.0, 0.0], "utterances": 1, "enrolled_at": 1.0}}}).encode())
def test_a_voiceprint_file_loads_or_is_one_line_and_is_never_rewritten(blob, tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    early = VoiceprintStore(state, "resemblyzer", DIM)  # a store opened before the file was damaged
    (state / "voiceprints").mkdir()
    path = state / "voiceprints" / "resemblyzer.json"
    path.write_bytes(blob)
    try:
        store = VoiceprintStore(state, "resemblyzer", DIM)
    except VoiceprintError as exc:
        one_line_naming(exc, str(path))
        for write in (lambda: early.enroll("Bob", [np.ones(DIM)]), lambda: early.delete("Alice")):
            with pytest.raises(VoiceprintError):
                write()
            assert path.read_bytes() == blob, "a damaged voiceprint file was rewritten"
        prints = _voiceprints(state)
        assert prints.identify(np.ones(DIM), 0.5) == ("unknown", 0.0)
        assert sorted(p.name for p in path.parent.iterdir()) == ["resemblyzer.json"]  # no temp file left
        return
    event("loaded")
    for name, entry in store.info().items():  # what `enroll --list` prints must be printable
        time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.get("enrolled_at", 0)))
        assert store.find(name.upper()) == name
    speakers = json.loads(blob)["speakers"]
    unit = {n: np.asarray(e["embedding"], dtype=np.float64) / np.linalg.norm(e["embedding"])
            for n, e in speakers.items()}
    for name in store.names():  # each voice is recognised (or one with the very same direction)
        found, score = store.identify(unit[name], 0.99)
        assert score >= 0.99 and found in unit and float(unit[found] @ unit[name]) >= 0.99, (name, found, score)


def _voiceprints(state: Path):
    from workers.speaker import Voiceprints

    return Voiceprints(logging.getLogger("test"), str(state), ENGINE)


def test_damaged_voiceprints_make_everyone_unknown_until_repaired(tmp_path):
    store = VoiceprintStore(tmp_path, "resemblyzer", DIM)
    store.enroll("Alice", [np.array([1.0, 0, 0, 0])])
    prints = _voiceprints(tmp_path)
    assert prints.identify(np.array([1.0, 0, 0, 0]), 0.5)[0] == "Alice"
    good = store.path.read_bytes()
    for damage in ({"speakers": {"alice": 5}}, {**json.loads(good), "speakers": {"Alice": {
            "embedding": [1, "x", 0, 0]}}}, {**json.loads(good), "speakers": {"Alice": {
            "embedding": [1.0, 0, 0, 0], "enrolled_at": "yesterday"}}}):
        store.path.write_text(json.dumps(damage))
        os.utime(store.path, ns=(time.time_ns(), time.time_ns()))
        assert prints.identify(np.array([1.0, 0, 0, 0]), 0.5) == ("unknown", 0.0), damage
        assert prints.error and "\n" not in prints.error
    store.path.write_bytes(good)  # repaired: names come back without a restart
    assert prints.identify(np.array([1.0, 0, 0, 0]), 0.5)[0] == "Alice" and prints.error == ""


def test_names_are_unicode_and_case_insensitive(tmp_path):
    store = VoiceprintStore(tmp_path, "resemblyzer", DIM)
    store.enroll("José", [np.array([1.0, 0, 0, 0])])
    store.enroll("Jose\u0301", [np.array([1.0, 0.1, 0, 0])])  # the same name typed with a combining accent
    store.enroll("Carol", [np.array([0, 1.0, 0, 0])])
    store.enroll("carol", [np.array([0, 1.0, 0.1, 0])])  # one person: the newer spelling replaces the older
    assert store.names() == ["José", "carol"]
    assert store.identify(np.array([0, 1.0, 0, 0]), 0.5)[0] == "carol"
    assert store.delete("CAROL") and store.names() == ["José"]
    for bad in ("", "unknown", "Unknown", "a/b", "-x", "_x", "bell\x07", "x" * 33):
        with pytest.raises(VoiceprintError):
            store.enroll(bad, [np.ones(DIM)])
    data = json.loads(store.path.read_text())
    data["speakers"]["JOSÉ"] = data["speakers"]["José"]  # two entries for one person in a hand-edited file
    store.path.write_text(json.dumps(data))
    with pytest.raises(VoiceprintError, match="are one name"):
        VoiceprintStore(tmp_path, "resemblyzer", DIM)
