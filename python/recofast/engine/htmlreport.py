"""A static HTML report of the closed loop (``recofast report``): one file that stands alone,
its plots drawn by matplotlib (the Agg renderer, no display) and embedded as base64 PNG.

Sections: totals; CTR, conversion and revenue per thousand shown over time by source and by
experiment variant (from the per-minute roll-ups); lists served by source over time; CTR by
position; each experiment's variants with their 95 % intervals as error bars and the
decision; the model's checkpoint versions over time.

>>> parse_since("90m"), parse_since("2d"), parse_since("45s")
(90.0, 2880.0, 0.75)
>>> parse_since("1 week")
Traceback (most recent call last):
...
ValueError: --since: expected a number and a unit (s, m, h or d), like 30m, 1h or 2d; got '1 week'
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from recofast.engine import report
from recofast.engine.attribution import COUNTS

_UNITS = {"s": 1 / 60, "m": 1.0, "h": 60.0, "d": 1440.0}
MAX_POINTS = 120
"""At most this many points per line: longer windows are cut into buckets of several minutes."""
RATES = (("ctr", "CTR", True), ("conversion", "conversion", True), ("rpm", "revenue per 1,000 shown", False))


def parse_since(text: str) -> float:
    """``30m``, ``1h``, ``2d`` (also ``s``) as minutes; ValueError on anything else."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"--since: expected a number and a unit (s, m, h or d), like 30m, 1h or 2d; got {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def timeline(db: sqlite3.Connection, by: str, minutes: float, now: float | None = None) -> tuple[int, dict[str, list[dict[str, Any]]]]:
    """The per-minute roll-ups of the last ``minutes``, summed per ``by`` (``source`` or
    ``variant``: ``experiment/variant``) in buckets of whole minutes; returns the bucket's
    length in minutes and, per group, its rows (``t``: the bucket's start, epoch seconds;
    counts and rates)."""
    if by not in ("source", "variant"):
        raise ValueError(f"cannot plot over time by {by!r}")
    now = time.time() if now is None else now
    first = int((now - minutes * 60) // 60)
    bucket = max(1, math.ceil(minutes / MAX_POINTS))
    key = "source" if by == "source" else "experiment || '/' || variant"
    where = "minute >= ?" + ("" if by == "source" else " AND variant != ''")
    sums = ", ".join(f"sum({c})" for c in COUNTS)
    rows = db.execute(f"SELECT {key}, (minute / ?) * ?, {sums} FROM minutes WHERE {where} GROUP BY 1, 2 ORDER BY 1, 2",
                      (bucket, bucket, first)).fetchall()
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        counts = dict(zip(COUNTS, (float(x or 0) for x in r[2:])))
        out.setdefault(r[0], []).append({"t": r[1] * 60, **counts, **report.rates(counts)})
    return bucket, out


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(rows: int = 1, cols: int = 1, height: float = 3.2) -> tuple[Any, Any]:
    from matplotlib.figure import Figure  # no pyplot: no global state, the Agg renderer

    fig = Figure(figsize=(9, height * rows), layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False)


def _dates(ax: Any, ts: Sequence[float]) -> list[Any]:
    import datetime as dt

    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    loc = AutoDateLocator()
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(loc))
    return [dt.datetime.fromtimestamp(t) for t in ts]


def plot_over_time(groups: dict[str, list[dict[str, Any]]], title: str) -> str:
    """CTR, conversion and RPM of each group over time, one panel each."""
    fig, axes = _figure(len(RATES))
    for ax, (key, label, pct) in zip(axes[:, 0], RATES):
        for name, rows in groups.items():
            pts = [(r["t"], r[key]) for r in rows if r[key] is not None]
            if pts:
                ax.plot(_dates(ax, [p[0] for p in pts]), [100 * p[1] if pct else p[1] for p in pts], marker=".", label=name or "(none)")
        ax.set_ylabel(f"{label} (%)" if pct else label)
        ax.grid(alpha=0.3)
    axes[0, 0].set_title(title)
    axes[0, 0].legend(fontsize="small", ncols=min(4, max(1, len(groups))))
    return _png(fig)


def plot_lists(groups: dict[str, list[dict[str, Any]]], bucket: int) -> str:
    fig, axes = _figure()
    ax = axes[0, 0]
    for name, rows in groups.items():
        ax.plot(_dates(ax, [r["t"] for r in rows]), [r["lists"] for r in rows], marker=".", label=name)
    ax.set_ylabel(f"lists per {bucket} min" if bucket > 1 else "lists per minute")
    ax.set_title("Lists served by source (of the list's first item)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _png(fig)


def plot_positions(rows: list[dict[str, Any]]) -> str:
    fig, axes = _figure()
    ax = axes[0, 0]
    ax.bar([r["position"] + 1 for r in rows], [100 * (r["ctr"] or 0.0) for r in rows])
    ax.set_xlabel("position in the list (1 is the top)")
    ax.set_ylabel("CTR (%)")
    ax.set_title("CTR by position (/v1/recommendations)")
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)


def plot_experiment(exp: dict[str, Any]) -> str:
    """Each variant's metric with its 95 % interval as an error bar; the control in grey."""
    fig, axes = _figure()
    ax = axes[0, 0]
    pct = exp["metric"] != "rpm"
    scale = 100.0 if pct else 1.0
    for i, v in enumerate(exp["variants"]):
        if v["value"] is None:
            continue
        lo, hi = v["lo"] if v["lo"] is not None else v["value"], v["hi"] if v["hi"] is not None else v["value"]
        ax.errorbar([i], [scale * v["value"]], yerr=[[scale * (v["value"] - lo)], [scale * (hi - v["value"])]], fmt="o", capsize=6,
                    color="grey" if v["control"] else "C0")
    ax.set_xticks(range(len(exp["variants"])), [v["variant"] + (" (control)" if v["control"] else "") for v in exp["variants"]])
    ax.set_xlim(-0.5, len(exp["variants"]) - 0.5)
    ax.set_ylabel(f"{exp['metric']} (%)" if pct else exp["metric"])
    ax.set_title(f"Experiment {exp['experiment']}: {exp['metric']} per variant, 95 % intervals")
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)


def plot_versions(rows: list[dict[str, Any]]) -> str:
    fig, axes = _figure()
    ax = axes[0, 0]
    pts = [r for r in rows if r.get("time") is not None]
    ax.step(_dates(ax, [r["time"] for r in pts]), [r["version"] for r in pts], where="post", marker="o")
    for r in pts:
        if r.get("rolled_back_from") is not None:
            ax.annotate(f"rolled back from v{r['rolled_back_from']}", (_dates(ax, [r["time"]])[0], r["version"]), fontsize="small")
    ax.set_ylabel("model version")
    ax.set_title("Checkpoints (model versions) over time")
    ax.grid(alpha=0.3)
    return _png(fig)


def _table(rows: Sequence[dict[str, Any]], cols: Sequence[tuple[str, str, bool]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(report._fmt(r.get(k), pct))}</td>" for k, _, pct in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


_CSS = ("body{font-family:sans-serif;max-width:60rem;margin:2rem auto;color:#222}table{border-collapse:collapse;margin:.5rem 0}"
        "td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:right}th{background:#f3f3f3}img{max-width:100%}"
        ".none{color:#777}")


def render(db: sqlite3.Connection, *, minutes: float, experiments: Sequence[Any] = (), checkpoints: list[dict[str, Any]] | None = None,
           now: float | None = None, progress: Callable[[str], None] | None = None) -> str:
    """The report's HTML: the loop database ``db`` over the last ``minutes``, the
    ``experiments`` of the configuration (and any other the database holds), and the
    checkpoint listing (:meth:`~recofast.engine.checkpoints.CheckpointStore.listing`)."""
    now = time.time() if now is None else now
    say = progress or (lambda _: None)
    parts: list[str] = []

    def section(title: str, body: str) -> None:
        parts.append(f"<h2>{html.escape(title)}</h2>\n{body}")

    none = '<p class="none">Nothing in this window.</p>'
    say("totals")
    rep = report.loop_report(db, experiments, ("endpoint", "source"), minutes)
    cols = [(d, d, False) for d in rep["by"]] + report.RATE_COLUMNS
    section("Totals", (_table([rep["total"]], report.RATE_COLUMNS) + _table(rep["rows"], cols)) if rep["rows"] else none)
    say("over time by source")
    bucket, by_source = timeline(db, "source", minutes, now)
    section("Over time by source", _img(plot_over_time(by_source, "By source"), "CTR, conversion and revenue by source") if by_source else none)
    say("over time by variant")
    _, by_variant = timeline(db, "variant", minutes, now)
    section("Over time by experiment variant",
            _img(plot_over_time(by_variant, "By experiment / variant"), "CTR, conversion and revenue by variant") if by_variant else none)
    section("Lists served by source", _img(plot_lists(by_source, bucket), "lists served by source") if by_source else none)
    say("positions")
    section("CTR by position", _img(plot_positions(rep["positions"]), "CTR by position") if rep["positions"] else none)
    exp_parts = []
    for e in rep["experiments"]:
        say(f"experiment {e['experiment']}")
        lines = [f"<h3>{html.escape(e['experiment'])} (decided on {html.escape(e['metric'])}, control {html.escape(str(e['control']))})</h3>"]
        if any(v["users"] for v in e["variants"]):
            lines.append(_img(plot_experiment(e), f"experiment {e['experiment']}"))
        lines.append(_table(e["variants"], [("variant", "variant", False), ("users", "users", False), ("shown", "shown", False),
                                           ("clicks", "clicks", False), ("purchases", "purchases", False), ("revenue", "revenue", False),
                                           ("value", e["metric"], False), ("lo", "95% lo", False), ("hi", "95% hi", False)]))
        lines += [f"<p>{html.escape(c['text'])}</p>" for c in e["comparisons"]]
        exp_parts.append("\n".join(lines))
    section("Experiments (everything kept)", "\n".join(exp_parts) if exp_parts else '<p class="none">No experiments.</p>')
    say("model versions")
    ok = [r for r in checkpoints or [] if "error" not in r]
    if ok:
        body = _img(plot_versions(ok), "model versions over time") + _table(
            [{**r, "time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["time"])) if r.get("time") else None} for r in ok],
            [("version", "version", False), ("time", "time", False), ("stream_seq", "stream seq", False),
             ("events_applied_total", "events applied", False), ("rolled_back_from", "rolled back from", False)])
    else:
        body = '<p class="none">No checkpoints.</p>'
    bad = [r for r in checkpoints or [] if "error" in r]
    body += "".join(f"<p>Unreadable: {html.escape(r['error'])}</p>" for r in bad)
    section("Model versions", body)
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    return (f'<!doctype html>\n<html><head><meta charset="utf-8"><title>recofast report</title><style>{_CSS}</style></head>\n'
            f"<body><h1>recofast report</h1>\n<p>The last {minutes:g} minutes, to {when}.</p>\n" + "\n".join(parts) + "\n</body></html>\n")


def write(out: str | Path, db: sqlite3.Connection, **kw: Any) -> Path:
    """Renders the report (:func:`render`) to the file ``out``, written whole or not at all."""
    path = Path(out)
    text = render(db, **kw)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


__all__ = ["parse_since", "render", "timeline", "write"]
