"""The suites ``recofast bench`` runs: which bench file, which cases in quick and full mode,
with which environment, and the exact command that reruns each one."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The report's sections, in order.
SECTIONS = ["learning", "topk", "drift", "engine", "sidecar", "quality"]

#: Variables unset for every suite: OPENBLAS_CORETYPE forces a slow BLAS kernel on these
#: machines (DESIGN.md), which would slow numpy's and faiss' side of the comparison.
UNSET = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


@dataclass(frozen=True)
class Suite:
    """One pytest-benchmark run (``file`` with ``-k`` ``quick``/``full``), or, with ``argv``,
    a command that writes its own JSON (``{json}`` in it is replaced by the output path)."""

    name: str
    section: str
    file: str = ""
    quick: str | None = None  #: -k expression in quick mode (None: every case)
    full: str | None = None  #: -k expression in full mode (None: every case)
    env: dict[str, dict[str, str]] = field(default_factory=dict)  #: per mode
    argv: dict[str, list[str]] = field(default_factory=dict)  #: per mode, for a command
    timeout: float = 1800.0

    def environment(self, mode: str) -> dict[str, str]:
        return {"RECOFAST_BENCH_MODE": mode, **self.env.get(mode, {})}

    def command(self, mode: str, json_path: str, python: str = ".venv/bin/python") -> list[str]:
        if self.argv:
            return [python if a == "{python}" else a.replace("{json}", json_path) for a in self.argv[mode]]
        cmd = [python, "-m", "pytest", self.file, "--benchmark-enable", "--benchmark-only", "-p", "no:randomly",
               "-p", "no:cacheprovider", "-q", f"--benchmark-json={json_path}"]  # fmt: skip
        k = self.quick if mode == "quick" else self.full
        if k:
            cmd[4:4] = ["-k", k]
        return cmd

    def shell(self, mode: str, json_path: str) -> str:
        """The command as one line to paste into a shell at the repository's root."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.environment(mode).items())
        unset = " ".join(f"-u {v}" for v in UNSET)
        return f"env {unset} {env} " + " ".join(shlex.quote(a) for a in self.command(mode, json_path))


def _eval_argv(limit: int) -> list[str]:
    return ["{python}", "-m", "recofast.cli", "eval", "--events", "{shop_log}", "--limit", str(limit), "--k", "20",
            "--model", "recofast,itemknn,recentpop,pop,river,als-daily", "--no-progress", "--json", "{json}"]  # fmt: skip


SUITES = [
    Suite("learn-core", "learning", "bench/test_bench_core.py", quick="learn", full="learn"),
    Suite("learn-shapes", "learning", "bench/test_bench_learn_shapes.py"),
    Suite("topk-1m", "topk", "bench/test_bench_topk.py", quick="one_query or batch or quantized"),
    Suite("topk-sweep", "topk", "bench/test_bench_ann.py"),
    Suite("drift", "drift", "bench/test_bench_drift.py"),
    Suite("engine", "engine", "bench/test_bench_engine.py", quick="not (refresh-2s and 20000)",
          env={"quick": {"RECOFAST_BENCH_EVENTS": "100000"}}),  # fmt: skip
    Suite("sidecar", "sidecar", "bench/test_bench_sidecar.py", quick="http_throughput",
          env={"quick": {"RECOFAST_WRK_SECONDS": "2"}, "full": {"RECOFAST_WRK_SECONDS": "10"}}),  # fmt: skip
    Suite("quality", "quality", argv={"quick": _eval_argv(20_000), "full": _eval_argv(300_000)}),
]


def root() -> Path:
    """The checkout holding ``bench/`` (the current folder, or the package's checkout)."""
    for cand in (Path.cwd(), Path(__file__).resolve().parents[3]):
        if (cand / "bench" / "conftest.py").exists():
            return cand
    raise FileNotFoundError("no bench/ folder here: run `recofast bench` at the root of a recofast checkout")


def shop_log(repo: Path) -> Path | None:
    """The bundled shop log, found as bench/conftest.py finds it."""
    env = os.environ.get("RECOFAST_SHOP_LOG")
    if env:
        return Path(env)
    base = os.environ.get("RECOFAST_SHARED_DATA")
    parents = [Path(base)] if base else [p / "shared" / "data" for p in [repo, *repo.parents]]
    for data in parents:
        path = data / "online_retail" / "interactions.csv.gz"
        if path.exists():
            return path
    return None


@dataclass
class SuiteResult:
    suite: str
    section: str
    mode: str
    command: str  #: the shell line that reruns it
    seconds: float
    returncode: int
    data: dict[str, Any] | None  #: the JSON the run wrote (pytest-benchmark's, or the command's)
    log_tail: str = ""
    skipped: str = ""  #: why it did not run

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def run_suite(suite: Suite, mode: str, out: Path, progress=print, verbose: bool = False) -> SuiteResult:  # noqa: ANN001
    """Runs one suite in a subprocess at the repository's root; its JSON goes to
    ``out/raw/<suite>.json`` and its output to ``out/logs/<suite>.log``."""
    repo = root()
    (out / "raw").mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    json_path = out / "raw" / f"{suite.name}.json"
    log_path = out / "logs" / f"{suite.name}.log"
    # Paths in the rerun line: relative when inside the checkout, else absolute.
    inside = json_path.resolve().is_relative_to(repo.resolve())
    rel = os.path.relpath(json_path, repo) if inside else str(json_path.resolve())
    command = suite.shell(mode, rel)
    log = shop_log(repo)
    if suite.argv:
        if log is None:
            return SuiteResult(suite.name, suite.section, mode, command, 0.0, 0, None, skipped="the shop log is not there (set RECOFAST_SHOP_LOG)")
        command = command.replace("{shop_log}", shlex.quote(os.path.relpath(log, repo)))
    cmd = [a.replace("{shop_log}", str(log)) for a in suite.command(mode, str(json_path), sys.executable)]
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env.update(suite.environment(mode))
    json_path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    with open(log_path, "w") as f:
        with subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    f.write(line)
                    if verbose:
                        progress("    " + line.rstrip())
                proc.wait(timeout=suite.timeout)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
    dt = time.perf_counter() - t0
    data = json.loads(json_path.read_text()) if json_path.exists() else None
    tail = "".join(log_path.read_text().splitlines(keepends=True)[-15:])
    return SuiteResult(suite.name, suite.section, mode, command, dt, proc.returncode, data, tail)
