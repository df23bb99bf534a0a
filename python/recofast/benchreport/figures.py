"""Figures from the suites' raw JSON: each one a title, axes, series of points, and the
command that reruns it. A figure is plain data (kept in ``results.json``); :func:`plot`
draws it with matplotlib's Agg backend."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Figure:
    id: str
    section: str
    title: str
    kind: str  #: "line" (numeric x), "bar" (category x), "cdf" (x = ms, y = percentile)
    xlabel: str
    ylabel: str
    unit: str  #: of the values compared (y for line/bar, x for cdf)
    higher_is_better: bool
    series: dict[str, list[list[Any]]] = field(default_factory=dict)  #: label -> [[x, y], ...]
    command: str = ""
    notes: list[str] = field(default_factory=list)
    logx: bool = False
    logy: bool = False

    def add(self, label: str, x: Any, y: float | None) -> None:
        if y is not None:
            self.series.setdefault(label, []).append([x, float(y)])

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Figure:
        return cls(**d)


def _benchmarks(res: dict[str, Any] | None) -> list[dict[str, Any]]:
    data = (res or {}).get("data") or {}
    return data.get("benchmarks", []) if isinstance(data, dict) else []


def _param(b: dict[str, Any]) -> str:
    m = re.search(r"\[(.*)\]$", b.get("name", ""))
    return m.group(1) if m else ""


def _min(b: dict[str, Any]) -> float:
    return float(b["stats"]["min"])


def _median(b: dict[str, Any]) -> float:
    return float(b["stats"]["median"])


def learning(res: dict[str, dict[str, Any]]) -> list[Figure]:
    core, shapes = _benchmarks(res.get("learn-core")), _benchmarks(res.get("learn-shapes"))
    cmd = " ; ".join(res[s]["command"] for s in ("learn-core", "learn-shapes") if s in res)
    dim = Figure("learn-dim", "learning", "learn_many on the shop log (100k events), by dimension", "line",
                 "dimension", "events/s", "events/s", True, command=res.get("learn-shapes", {}).get("command", ""))  # fmt: skip
    shape = Figure("learn-shape", "learning", "Learning throughput, dim 64: recofast by stream shape vs River FunkMF and implicit",
                   "bar", "", "events/s (log)", "events/s", True, command=cmd, logy=True)  # fmt: skip
    for b in shapes:
        info = b.get("extra_info", {})
        rate = info.get("events_per_s")
        if b["group"] == "learn: shop log by dim":
            dim.add("recofast (fresh model)", info.get("dim"), rate)
        elif b["group"] == "learn: stream shape, dim 64":
            shape.add("recofast", f"recofast: {info.get('shape')}", rate)
        elif b["group"] == "learn: implicit fit, shop log":
            shape.add("implicit (batch fit)", f"implicit {info.get('algo', '').upper()} fit ({info.get('iterations')} it.)", rate)
    for b in core:
        rate = b.get("extra_info", {}).get("events_per_s") or b.get("extra_info", {}).get("events_per_s_cpu")
        p = _param(b)
        if b["name"].startswith("test_river_funkmf"):
            shape.add("River FunkMF", f"River FunkMF ({'+1 negative' if 'negative' in p else 'positives only'})", rate)
        elif b["name"].startswith("test_learn_many_100k"):
            shape.add("recofast", f"recofast: {p} (warm 100k x 100k, CPU time)", rate)
    shape.notes.append("River learns one event per call (the `+1 negative` variant also learns a sampled negative, "
                       "the work recofast's BPR step does); implicit's rate is the events divided by a whole batch fit.")  # fmt: skip
    return [f for f in (dim, shape) if f.series]


def topk(res: dict[str, dict[str, Any]]) -> list[Figure]:
    out = []
    sweep = _benchmarks(res.get("topk-sweep"))
    cmd = res.get("topk-sweep", {}).get("command", "")
    by_n = Figure("topk-n", "topk", "One query, top-20, d = 64: ms per query vs N", "line", "items N", "ms per query",
                  "ms", False, command=cmd, logx=True, logy=True)  # fmt: skip
    sizes = [(b["extra_info"]["n"], b["extra_info"]["d"]) for b in sweep if "n" in b.get("extra_info", {})]
    ds_at = {}
    for n, d in sizes:
        ds_at.setdefault(n, set()).add(d)
    n_for_d = max(ds_at, key=lambda n: (len(ds_at[n]), n)) if ds_at else None
    by_d = Figure("topk-d", "topk", f"One query, top-20, N = {n_for_d:,}: ms per query vs d" if n_for_d else "", "line",
                  "dimension d", "ms per query", "ms", False, command=cmd)  # fmt: skip
    for b in sweep:
        info = b.get("extra_info", {})
        label = {"read": "plain read of the matrix (bandwidth line)"}.get(info.get("impl"), info.get("impl"))
        if info.get("impl") == "usearch-hnsw":
            label = "usearch HNSW (recall@20 >= 0.99)"
        if info.get("d") == 64:
            by_n.add(label, info["n"], _median(b) * 1e3)
        if info.get("n") == n_for_d:
            by_d.add(label, info["d"], _median(b) * 1e3)
        if info.get("impl") == "usearch-hnsw" and info.get("d") == 64:
            by_n.notes.append(f"usearch at N = {info['n']:,}: expansion_search {info.get('expansion_search')}, "
                              f"recall@20 {info.get('recall@20', 0):.3f}, index build {info.get('build_s', 0):.1f} s")  # fmt: skip
    by_n.notes.append("Medians; the items are clustered (1,000 centres plus noise), exact answers checked against float64 numpy.")
    out += [f for f in (by_n, by_d) if f.series]
    one = _benchmarks(res.get("topk-1m"))
    cmd = res.get("topk-1m", {}).get("command", "")
    f1 = Figure("topk-1m", "topk", "One query over 1M x 64, one thread: ms (median)", "bar", "", "ms per query", "ms", False, command=cmd)
    fb = Figure("topk-batch", "topk", "256 queries in one batch over 1M x 64, 2 threads: queries/s", "bar", "", "queries/s",
                "queries/s", True, command=cmd)  # fmt: skip
    fq = Figure("topk-int8", "topk", "int8 scan + exact rescoring vs exact, one query over 1M x 64: ms (median)", "bar", "",
                "ms per query", "ms", False, command=cmd)  # fmt: skip
    for b in one:
        p = _param(b)
        if b["group"] == "1-query":
            f1.add("ms", p, _median(b) * 1e3)
        elif b["group"] == "256-queries":
            fb.add("queries/s", p, 256 / _median(b))
        elif b["group"] == "quantized":
            fq.add("ms", p, _median(b) * 1e3)
            r = b.get("extra_info", {}).get("recall@20 (1000 queries)")
            if r is not None:
                fq.notes.append(f"{p}: recall@20 {r:.4f} over 1,000 queries")
    return out + [f for f in (f1, fb, fq) if f.series]


def drift(res: dict[str, dict[str, Any]]) -> list[Figure]:
    f = Figure("drift", "drift", "Drift detectors: updates/s, recofast (update_many) vs River (update loop)", "bar", "",
               "updates/s (log)", "updates/s", True, command=res.get("drift", {}).get("command", ""), logy=True)  # fmt: skip
    for b in _benchmarks(res.get("drift")):
        info = b.get("extra_info", {})
        rate = info.get("updates_per_s")
        if rate is None:
            m = re.search(r"\(([\d,]+) values\)", b["group"])
            rate = int(m.group(1).replace(",", "")) / _min(b) if m else None
        name = info.get("detector") or b["group"].split()[1]
        f.add(info.get("implementation", _param(b)), name, rate)
    return [f] if f.series else []


def engine(res: dict[str, dict[str, Any]]) -> list[Figure]:
    cmd = res.get("engine", {}).get("command", "")
    tp = Figure("engine-throughput", "engine", "Engine: events/s through NATS -> learn -> LMDB vs the bare consumer", "bar", "",
                "events/s", "events/s", True, command=cmd)  # fmt: skip
    cdf = Figure("engine-freshness", "engine", "Freshness: event time -> LMDB commit (CDF)", "cdf", "ms (log)", "percentile",
                 "ms", False, command=cmd, logx=True)  # fmt: skip
    names = {"test_consumer": "bare consumer (backlog)", "test_engine_backlog": "engine (backlog)",
             "test_engine_live": "engine (live publisher)"}  # fmt: skip
    for b in _benchmarks(res.get("engine")):
        info = b.get("extra_info", {})
        base = b["name"].split("[")[0]
        if base in names:
            tp.add("events/s", names[base], info.get("events_per_s"))
            if base == "test_engine_backlog" and info.get("seconds"):
                s = info["seconds"]
                tp.notes.append(f"engine (backlog): learn {info.get('learn_s', 0) / s:.0%}, top-N {info.get('lists_s', 0) / s:.0%}, "
                                f"LMDB {info.get('commit_s', 0) / s:.0%} of the wall time")  # fmt: skip
        elif base == "test_freshness" and "cdf_ms" in info:
            label = f"{info.get('rate'):,} events/s, {_param(b).replace(str(info.get('rate')), '').strip('-')}"
            for q, ms in sorted(info["cdf_ms"].items(), key=lambda kv: float(kv[0])):
                cdf.add(label, ms, float(q))
    return [f for f in (tp, cdf) if f.series]


def sidecar(res: dict[str, dict[str, Any]]) -> list[Figure]:
    cmd = res.get("sidecar", {}).get("command", "")
    rps = Figure("sidecar-rps", "sidecar", "Sidecar: req/s per feature vs the bare aiohttp + LMDB handler (wrk -t2 -c16)", "bar", "",
                 "req/s", "req/s", True, command=cmd)  # fmt: skip
    cdf = Figure("sidecar-latency", "sidecar", "Sidecar latency under wrk -t2 -c16 (the percentiles wrk reports)", "cdf",
                 "ms (log)", "percentile", "ms", False, command=cmd, logx=True)  # fmt: skip
    bare = None
    for b in _benchmarks(res.get("sidecar")):
        info = b.get("extra_info", {})
        if not b["name"].startswith("test_http_throughput") or "req_per_s" not in info:
            continue
        name = _param(b)
        rps.add("req/s", name, info["req_per_s"])
        bare = info["req_per_s"] if name.startswith("bare") else bare
        for key, val in info.items():
            m = re.fullmatch(r"p(\d+(?:\.\d+)?)_ms", key)
            if m:
                cdf.add(name, val, float(m.group(1)))
    if bare:
        rps.notes.append("vs the bare handler: " + ", ".join(f"{x} {y / bare:.2f} x" for x, y in rps.series.get("req/s", [])))
    for pts in cdf.series.values():
        pts.sort(key=lambda p: p[1])
    return [f for f in (rps, cdf) if f.series]


def quality(res: dict[str, dict[str, Any]]) -> list[Figure]:
    r = res.get("quality") or {}
    data = r.get("data") or {}
    if not data.get("scores"):
        return []
    k = data.get("k", 20)
    f = Figure("quality", "quality", f"Prequential Recall@{k} and NDCG@{k} on the first {data.get('events', 0):,} shop-log events",
               "bar", "", "score", "score", True, command=r.get("command", ""))  # fmt: skip
    for s in data["scores"]:
        f.add(f"Recall@{k}", s["model"], s["recall"])
        f.add(f"NDCG@{k}", s["model"], s["ndcg"])
    return [f]


EXTRACTORS = {"learning": learning, "topk": topk, "drift": drift, "engine": engine, "sidecar": sidecar, "quality": quality}


def build(results: dict[str, dict[str, Any]]) -> list[Figure]:
    """Every figure the suites' results give, section by section."""
    out: list[Figure] = []
    for fn in EXTRACTORS.values():
        out += fn(results)
    return out


def plot(fig: Figure, path: Path) -> None:
    """Draws ``fig`` into the PNG ``path`` (Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if fig.kind == "bar":
        cats = list(dict.fromkeys(x for pts in fig.series.values() for x, _ in pts))
        width = 0.8 / max(1, len(fig.series))
        p, ax = plt.subplots(figsize=(max(6.4, 0.55 * len(cats) * max(1, len(fig.series)) + 2), 4.8))
        for j, (label, pts) in enumerate(fig.series.items()):
            vals = dict((x, y) for x, y in pts)
            xs = [i + (j - (len(fig.series) - 1) / 2) * width for i, c in enumerate(cats) if c in vals]
            ax.bar(xs, [vals[c] for c in cats if c in vals], width, label=label)
        ax.set_xticks(range(len(cats)), cats, rotation=30, ha="right", fontsize=8)
        if len(fig.series) > 1:
            ax.legend(fontsize=8)
    else:
        p, ax = plt.subplots(figsize=(7.2, 4.8))
        for label, pts in fig.series.items():
            pts = sorted(pts, key=lambda q: q[0])
            style = "--" if "bandwidth" in str(label) else "-"
            ax.plot([q[0] for q in pts], [q[1] for q in pts], style, marker="o", ms=3, label=label)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if fig.logx:
        ax.set_xscale("log")
    if fig.logy:
        ax.set_yscale("log")
    ax.set_title(fig.title, fontsize=10)
    ax.set_xlabel(fig.xlabel)
    ax.set_ylabel(fig.ylabel)
    p.tight_layout()
    p.savefig(path, dpi=90)
    plt.close(p)
