"""`pip install vigil` works: the built wheel, installed into a fresh venv, answers a spoken request.

What this proves, and how it stays quick and offline:
- The wheel is built from a copy of this checkout (its tracked and new files, as an sdist would hold
  them) and holds every package and data file of the product.
- A fresh venv gets the wheel (`pip install --no-deps`) and sees, through a .pth file, exactly the
  distributions that the wheel's own metadata requires, transitively (Requires-Dist, markers and
  extras evaluated), each linked from the project venv where `make deps` put it. Nothing else: a
  dependency the wheel forgot to declare is missing there (a forgotten ctranslate2 means no wake
  verifier), and bench- or test-only packages (matplotlib, torch, pytest) cannot be imported.
  `pip check` then holds the pins against the linked versions.
- The installed `vigil` command, started from an empty folder (so not this source tree), answers
  a spoken request: a wake confirmed by the verifier, a transcript and an answer, and no error.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.e2e.test_pipeline_e2e import ROOT, read_events, spoken_request

PRODUCT = ("core", "shm", "engines", "models", "skills", "workers", "pipeline", "tools", "bench")
NOT_RUNTIME = ("matplotlib", "torch", "speechbrain", "pytest", "hypothesis", "pvporcupine", "tests")


def copy_checkout(dest: Path) -> Path:
    """This checkout's tracked and new (not ignored) files, as `git archive` of the work tree would give."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # a file deleted in the work tree but not yet in the index is gone
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def product_files(tree: Path) -> tuple[set[str], set[str]]:
    """The packages (dotted) and the non-Python data files (paths) under the product's folders."""
    packages, data = set(), set()
    for top in PRODUCT:
        for path in (tree / top).rglob("*"):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            relative = path.relative_to(tree)
            if path.suffix == ".py":
                packages.add(".".join(relative.parent.parts))
            else:
                data.add(relative.as_posix())
    return packages, data


def dependency_closure(requirements: list[str]) -> dict[str, metadata.Distribution]:
    """The installed distributions these requirements need, transitively, as pip would resolve them."""
    found: dict[str, metadata.Distribution] = {}
    done: set[tuple[str, frozenset[str]]] = set()
    todo = [(Requirement(text), frozenset()) for text in requirements]
    while todo:
        requirement, parent_extras = todo.pop()
        marker = requirement.marker
        if marker is not None and not any(marker.evaluate({"extra": extra}) for extra in parent_extras | {""}):
            continue
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in done:
            continue
        done.add(key)
        dist = metadata.distribution(requirement.name)  # PackageNotFoundError: not in the project venv either
        found[name] = dist
        todo.extend((Requirement(text), frozenset(requirement.extras)) for text in dist.requires or [])
    return found


def link_distributions(dists: dict[str, metadata.Distribution], folder: Path) -> list[Path]:
    """One folder per distribution with links to its top-level entries (packages, .so files, .libs,
    .dist-info); namespace packages shared by several distributions stay separate folders."""
    roots = []
    for name, dist in sorted(dists.items()):
        root = folder / name
        root.mkdir(parents=True)
        assert dist.files is not None, f"{name} has no RECORD: cannot tell its files"
        for top in sorted({path.parts[0] for path in dist.files if path.parts[0] != ".."}):
            (root / top).symlink_to(Path(dist.locate_file(top)).resolve())
        roots.append(root)
    return roots


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(VIGIL_METRICS__STATE_DIR=str(tmp_path / "state"), PYTHONUNBUFFERED="1", VIGIL_LLM__TEMPERATURE="0.0",
               # niced beside the main lane (Makefile): a verdict that comes late under a starved CPU must not
               # turn into "verifier failed, the proposer's score decides" — what this test checks is the wheel
               VIGIL_WAKE__VERIFY_DEADLINE_S="30")
    return env


def test_wheel_installs_into_a_fresh_venv_and_answers(tmp_path, models):
    t0 = time.monotonic()
    source = copy_checkout(tmp_path / "src")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=180)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("vigil-*.whl")

    # Every package and data file of the product is in the wheel; the metadata is pyproject's.
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(archive.read(f"{dist_info}/METADATA").decode())
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    packages, data = product_files(source)
    missing = sorted(p for p in packages if f"{p.replace('.', '/')}/__init__.py" not in names)
    assert not missing, f"packages not in the wheel (no __init__.py, or not found by pyproject): {missing}"
    assert not sorted(data - names), f"data files not in the wheel: {sorted(data - names)}"
    assert not [n for n in names if n.startswith("tests/")]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["Version"] == project["version"]
    assert "vigil = pipeline.cli:main" in entry_points
    runtime = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
    assert {canonicalize_name(Requirement(r).name) for r in runtime} >= {"ctranslate2", "threadpoolctl"}
    assert all("==" in r for r in runtime), f"unpinned runtime dependencies: {[r for r in runtime if '==' not in r]}"

    # A fresh venv that sees only what the wheel declares.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    closure = dependency_closure(runtime)
    roots = link_distributions(closure, tmp_path / "deps")
    (site / "vigil_test_dependencies.pth").write_text("".join(f"{root}\n" for root in roots))
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    install = subprocess.run(pip + ["install", "-q", "--no-deps", "--no-index", str(wheel)], capture_output=True,
                             text=True, timeout=120)
    assert install.returncode == 0, install.stderr[-3000:]
    check = subprocess.run(pip + ["check"], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr

    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = clean_env(tmp_path)
    vigil = env_dir / "bin" / "vigil"
    version = subprocess.run([vigil, "--version"], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert version.stdout.strip() == f"vigil {project['version']}", version.stdout + version.stderr
    probe = ("import importlib.util as u, json, pipeline, ctranslate2; "
             f"print(json.dumps([pipeline.__file__, [m for m in {NOT_RUNTIME!r} if u.find_spec(m)]]))")
    where, importable = json.loads(subprocess.run([python, "-c", probe], cwd=cwd, env=env, capture_output=True,
                                                  text=True, check=True).stdout)
    assert Path(where).is_relative_to(site), f"pipeline imported from {where}, not the installed wheel"
    assert importable == [], f"not runtime dependencies, yet importable in the fresh venv: {importable}"
    t_installed = time.monotonic() - t0

    # The installed command answers a spoken request.
    request = spoken_request(tmp_path / "request.wav")
    events_path = tmp_path / "events.jsonl"
    run = subprocess.run([vigil, "run", "--input", str(request), "--exit-when-done", "--events", str(events_path)],
                         cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    events = read_events(events_path)
    kinds = [e["type"] for e in events]
    assert not [e for e in events if e["type"] == "error"], [e for e in events if e["type"] == "error"]
    wakes = [e for e in events if e["type"] == "wake"]
    assert len(wakes) == 1 and wakes[0]["verify_score"] is not None, (kinds, run.stderr[-2000:])  # verifier ran
    transcripts = [e["text"] for e in events if e["type"] == "transcript" and e["final"] and e["text"].strip()]
    assert transcripts, kinds  # what it heard is test_pipeline_e2e's to judge; here: that it heard
    responses = [e for e in events if e["type"] == "response"]
    assert len(responses) == 1 and responses[0]["text"].strip(), kinds
    print(f"wheel built and installed in {t_installed:.1f} s ({len(closure)} distributions linked); "
          f"whole test {time.monotonic() - t0:.1f} s")
