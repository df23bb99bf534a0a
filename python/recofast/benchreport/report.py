"""``recofast bench``: runs the suites, keeps their raw results in ``results.json``, and
writes ``REPORT.md`` with one PNG per figure; ``compare`` puts two runs side by side."""

from __future__ import annotations

import datetime as _dt
import json
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from recofast.benchreport import figures as F
from recofast.benchreport.machine import machine_info, peers_info
from recofast.benchreport.suites import SECTIONS, SUITES, Suite, root, run_suite

FORMAT = "recofast-bench/1"

SECTION_TITLES = {
    "learning": "Learning",
    "topk": "Top-K scoring",
    "drift": "Drift detectors",
    "engine": "Engine (NATS -> learn -> LMDB)",
    "sidecar": "Sidecar (HTTP)",
    "quality": "Quality (prequential, `recofast eval`)",
}


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root(), capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root(), capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, FileNotFoundError):
        return None


def run_bench(
    mode: str,
    out: Path,
    sections: Sequence[str] | None = None,
    suites: Sequence[Suite] | None = None,
    progress: Callable[[str], None] = print,
    verbose: bool = False,
    bandwidth: bool = True,
) -> dict[str, Any]:
    """Runs the suites of ``sections`` (all by default) in ``mode`` (``quick`` or ``full``),
    writes ``out/results.json`` and ``out/REPORT.md`` with its PNGs, and returns the results."""
    if mode not in ("quick", "full"):
        raise ValueError(f"mode must be quick or full, got {mode!r}")
    chosen = list(suites) if suites is not None else [s for s in SUITES if not sections or s.section in sections]
    if sections:
        unknown = sorted(set(sections) - set(SECTIONS))
        if unknown:
            raise ValueError(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    progress(f"recofast bench --{mode}: {len(chosen)} suite(s) into {out}")
    progress("  measuring the machine (read bandwidth) ...")
    results: dict[str, Any] = {
        "format": FORMAT, "mode": mode, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": _git_commit(), "machine": machine_info(bandwidth=bandwidth), "peers": peers_info(), "suites": {},
    }  # fmt: skip
    for i, suite in enumerate(chosen, 1):
        progress(f"  [{i}/{len(chosen)}] {suite.section}: {suite.name} ({suite.file or 'command'}) ...")
        r = run_suite(suite, mode, out, progress=progress, verbose=verbose)
        results["suites"][suite.name] = r.to_json()
        n = len((r.data or {}).get("benchmarks", [])) if isinstance(r.data, dict) else 0
        status = r.skipped or ("ok" if r.returncode == 0 else f"FAILED (exit {r.returncode}; see {out}/logs/{suite.name}.log)")
        progress(f"        {status}, {r.seconds:.0f} s" + (f", {n} benchmarks" if n else ""))
    results["machine"]["load_average_end"] = list(__import__("os").getloadavg())
    results["wall_seconds"] = time.perf_counter() - t0
    results["figures"] = [f.to_json() for f in F.build(results["suites"])]
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    write_report(results, out)
    progress(f"wrote {out / 'REPORT.md'} and {out / 'results.json'} in {results['wall_seconds']:.0f} s")
    return results


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v == 0:
            return "0"
        a = abs(v)
        return f"{v:,.0f}" if a >= 1000 else f"{v:.1f}" if a >= 100 else f"{v:.3g}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _table(fig: F.Figure) -> list[str]:
    xs = list(dict.fromkeys(x for pts in fig.series.values() for x, _ in pts))
    if fig.kind == "cdf":  # rows: series; columns: percentiles
        qs = sorted({y for pts in fig.series.values() for _, y in pts})
        lines = ["| " + " | ".join(["", *(f"p{q:g}" for q in qs)]) + " |", "|---" * (len(qs) + 1) + "|"]
        for label, pts in fig.series.items():
            at = {y: x for x, y in pts}
            lines.append("| " + " | ".join([label, *(_fmt(at[q]) + " ms" if q in at else "" for q in qs)]) + " |")
        return lines
    labels = list(fig.series)
    head = fig.xlabel or "case"
    lines = ["| " + " | ".join([head, *labels]) + " |", "|---" * (len(labels) + 1) + "|"]
    for x in xs:
        row = [_fmt(x)]
        for label in labels:
            v = dict((a, b) for a, b in fig.series[label]).get(x)
            row.append("" if v is None else _fmt(v))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def write_report(results: dict[str, Any], out: Path) -> Path:
    """Writes ``out/REPORT.md`` and one PNG per figure from ``results`` (a run's ``results.json``)."""
    out.mkdir(parents=True, exist_ok=True)
    m, peers, mode = results["machine"], results["peers"], results["mode"]
    figs = [F.Figure.from_json(f) for f in results.get("figures", [])]
    bw = m.get("read_bandwidth_gbs")
    try:
        shown = out.resolve().relative_to(root().resolve())
    except (ValueError, FileNotFoundError):
        shown = out
    lines = [
        "# recofast benchmark report",
        "",
        f"Run {results['created']} at commit `{results.get('commit')}`, **{mode} mode**, "
        f"{results.get('wall_seconds', 0):.0f} s of wall time. Made by `recofast bench --{mode} --out {shown}`; "
        "the full report: `recofast bench --full --out DIR` (not timed in this run; estimated at about an hour on 2 cores: N up to 10M, every dimension, "
        "200k-event engine runs, the sidecar's every case with 10 s of wrk, quality on 300k events).",
        "",
        "Ratios measured side by side in one run are what to read; absolute times move with the machine's load "
        f"(load average {', '.join(f'{x:.1f}' for x in m.get('load_average', []))} at the start, "
        f"{', '.join(f'{x:.1f}' for x in m.get('load_average_end', []))} at the end). "
        "`OPENBLAS_CORETYPE` and `OPENBLAS_L2_SIZE` are unset for every suite.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {m.get('cpu')} |",
        f"| cores | {m.get('cores')} |",
        f"| SIMD level (recofast.build_info()) | {m.get('simd')} (available: {', '.join(m.get('simd_available') or [])}); CPU flags: {' '.join(m.get('cpu_flags') or [])} |",
        f"| read bandwidth, one thread | {bw:.1f} GB/s (plain sum over 512 MiB, best of 5) |" if bw else "| read bandwidth | not measured |",
        f"| memory | {m.get('memory_gib') or 0:.1f} GiB |",
        f"| Python, OS | {m.get('python')}, {m.get('os')} |",
        "",
        "## Peers",
        "",
        "| package | version |",
        "|---|---|",
        *(f"| {k} | {v or 'not installed'} |" for k, v in peers.get("versions", {}).items()),
        *(f"| {k} | {v} |" for k, v in peers.get("tools", {}).items()),
        "",
        "BLAS and OpenMP libraries loaded (threadpoolctl, after importing numpy, faiss and implicit):",
        "",
        "| API | library | implementation | version | kernel | threads |",
        "|---|---|---|---|---|---|",
        *(f"| {t.get('user_api')} | {t.get('library')} | {t.get('internal_api')} | {t.get('version')} | {t.get('architecture') or ''} | {t.get('num_threads')} |"
          for t in peers.get("threadpools", [])),  # fmt: skip
        "",
    ]
    for section in SECTIONS:
        secfigs = [f for f in figs if f.section == section]
        suites = [s for s in results["suites"].values() if s["section"] == section]
        if not secfigs and not suites:
            continue
        lines += [f"## {SECTION_TITLES[section]}", ""]
        for s in suites:
            if s.get("skipped"):
                lines += [f"*{s['suite']}: not run: {s['skipped']}.*", ""]
            elif s["returncode"] != 0:
                lines += [f"*{s['suite']}: exit {s['returncode']} (some cases failed or skipped; see logs/{s['suite']}.log). Last lines:*", "",
                          "```", s.get("log_tail", "").rstrip(), "```", ""]  # fmt: skip
        for f in secfigs:
            png = f"{f.id}.png"
            F.plot(f, out / png)
            lines += [f"### {f.title}", "", f"![{f.title}]({png})", "", "Rerun:", "", "```sh", f.command, "```", "",
                      *_table(f), ""]  # fmt: skip
            lines += [f"- {n}" for n in dict.fromkeys(f.notes)]
            if f.notes:
                lines.append("")
    lines += [
        "## Raw results",
        "",
        "`results.json` keeps the machine, the peers, every suite's command, its pytest-benchmark JSON and the figures. "
        "Two machines' runs side by side: `recofast bench --compare A/results.json B/results.json`.",
        "",
    ]
    path = out / "REPORT.md"
    path.write_text("\n".join(lines))
    return path


def load(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.exists():
        raise FileNotFoundError(f"no results here: {p}")
    data = json.loads(p.read_text())
    if data.get("format") != FORMAT:
        raise ValueError(f"{p} is not a recofast bench results file (format {data.get('format')!r}, want {FORMAT!r})")
    return data


def compare(a: dict[str, Any], b: dict[str, Any], name_a: str = "A", name_b: str = "B") -> str:
    """A markdown comparison of two runs: every point both have, its two values and the
    ratio B / A, and whether B is better (by each figure's direction)."""
    fa = {f["id"]: F.Figure.from_json(f) for f in a.get("figures", [])}
    fb = {f["id"]: F.Figure.from_json(f) for f in b.get("figures", [])}
    lines = [
        f"# recofast bench: {name_b} vs {name_a}",
        "",
        "| | A | B |",
        "|---|---|---|",
        f"| file | {name_a} | {name_b} |",
        f"| run | {a.get('created')} ({a.get('mode')}) | {b.get('created')} ({b.get('mode')}) |",
        f"| CPU | {a['machine'].get('cpu')} x {a['machine'].get('cores')} | {b['machine'].get('cpu')} x {b['machine'].get('cores')} |",
        f"| SIMD | {a['machine'].get('simd')} | {b['machine'].get('simd')} |",
        f"| read bandwidth | {a['machine'].get('read_bandwidth_gbs') or 0:.1f} GB/s | {b['machine'].get('read_bandwidth_gbs') or 0:.1f} GB/s |",
        "",
    ]
    common = [k for k in fa if k in fb]
    for k in common:
        x, y = fa[k], fb[k]
        lines += [f"## {x.title}", "", f"| series | point | A ({x.unit}) | B | B / A | better |", "|---|---|---|---|---|---|"]
        for label, pts in x.series.items():
            other = {p[1] if x.kind == "cdf" else p[0]: p for p in y.series.get(label, [])}
            for p in pts:
                key = p[1] if x.kind == "cdf" else p[0]
                if key not in other:
                    continue
                va, vb = (p[0], other[key][0]) if x.kind == "cdf" else (p[1], other[key][1])
                ratio = vb / va if va else float("inf")
                better = "B" if (ratio > 1) == x.higher_is_better and ratio != 1 else ("=" if ratio == 1 else "A")
                point = f"p{key:g}" if x.kind == "cdf" else _fmt(key)
                lines.append(f"| {label} | {point} | {_fmt(va)} | {_fmt(vb)} | {ratio:.2f} | {better} |")
        lines.append("")
    only = sorted(set(fa) ^ set(fb))
    if only:
        lines += [f"Figures in one run only: {', '.join(only)}.", ""]
    return "\n".join(lines)
