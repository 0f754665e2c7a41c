"""Shared test setup: MindSpore on CPU in graph mode, and reference fixtures made by the PyTorch oracle.

The reference (torch + transformers + diffusers) lives in its own virtual environment; each
``tests/reference/<name>.py`` script runs there, builds a tiny random reference model, saves it in the
Hugging Face layout with its inputs and outputs, and the tests here convert and compare.
Fixtures are cached under ``.ref_fixtures/`` keyed by the script's content and the pinned versions.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REF_DIR = ROOT / "tests" / "reference"
CACHE = Path(os.environ.get("MINDGLM_REF_CACHE", ROOT / ".ref_fixtures"))
REPORT = CACHE / "parity_report.json"

sys.path.insert(0, str(ROOT / "tests"))


def _ref_python() -> Path:
    return Path(os.environ.get("MINDGLM_REF_PYTHON", ROOT / ".venv-ref" / "bin" / "python"))


@pytest.fixture(scope="session", autouse=True)
def mindspore_cpu_graph_mode():
    from mindglm_image.runtime import setup_runtime

    setup_runtime("CPU", graph_mode=True)


def _fixture_key(name: str) -> str:
    """Hash of the script, common.py, the reference pins and the repo files the script names in a
    ``# fixture-depends: path ...`` line (package modules it imports, e.g. tiny-model writers)."""
    script = REF_DIR / f"{name}.py"
    paths = [script, REF_DIR / "common.py", ROOT / "scripts" / "reference_requirements.txt"]
    for line in script.read_text().splitlines():
        if line.startswith("# fixture-depends:"):
            paths += [ROOT / p for p in line.split(":", 1)[1].split()]
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def _cache_lock(name: str):
    """Hold ``.ref_fixtures/<name>.lock``: pytest-xdist workers that need the same fixture (or merge the parity
    report) wait for the one building it instead of building it twice into the same folder."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _run_reference_script(name: str, out: Path, *args: str) -> None:
    """Run ``tests/reference/<name>.py OUT *args`` in the reference environment; fail the test on error."""
    python = _ref_python()
    if not python.is_file():
        pytest.fail(
            f"reference interpreter {python} not found: run `bash scripts/setup_reference_env.sh` "
            "(or set MINDGLM_REF_PYTHON) to create the PyTorch reference environment"
        )
    proc = subprocess.run([str(python), str(REF_DIR / f"{name}.py"), str(out), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": f"{REF_DIR}{os.pathsep}{ROOT}"})
    if proc.returncode != 0:
        pytest.fail(f"reference script {name}.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")


@pytest.fixture(scope="session")
def reference_fixture():
    """Return ``get(name) -> Path``: the folder made by ``tests/reference/<name>.py`` in the reference env."""
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name in made:
            return made[name]
        out = CACHE / f"{name}-{_fixture_key(name)}"
        with _cache_lock(name):
            if not (out / "DONE").is_file():
                tmp = out.with_name(out.name + ".partial")
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                _run_reference_script(name, tmp)
                (tmp / "DONE").write_text("ok\n")
                for stale in CACHE.glob(f"{name}-*"):  # fixtures of older script versions
                    if stale.is_dir() and stale.name.count("-") == name.count("-") + 1 and stale != tmp:
                        shutil.rmtree(stale, ignore_errors=True)
                os.replace(tmp, out)
        made[name] = out
        return out

    return get


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory):
    """Return ``run(name, *args) -> Path``: runs ``tests/reference/<name>.py OUT *args`` uncached (inputs made
    by the test, e.g. a model folder, go in ``args``) in a fresh OUT folder, and returns OUT."""

    def run(name: str, *args) -> Path:
        out = tmp_path_factory.mktemp(f"ref-{name}")
        _run_reference_script(name, out, *args)
        return out

    return run


@pytest.fixture(scope="session")
def parity_report():
    """Collects worst relative errors per component; written to ``.ref_fixtures/parity_report.json``."""
    results: dict[str, float] = {}
    yield results
    if results:
        with _cache_lock("parity_report"):  # each xdist worker merges its own results
            merged = json.loads(REPORT.read_text()) if REPORT.is_file() else {}
            merged.update(results)
            REPORT.write_text(json.dumps(dict(sorted(merged.items())), indent=2) + "\n")
