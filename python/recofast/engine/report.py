"""Reports of the closed loop, from its SQLite file: online metrics per source, endpoint,
variant and position; each experiment's variants with 95 % intervals and the always-valid
comparison with the control; and off-policy estimates of another exploration rate. What
``recofast metrics`` prints and the engine's ``/v1/loop`` answers.

Rates (every one per item shown, where an *impression* is one item in one served list):
``ctr`` clicks, ``cart_rate`` add-to-carts, ``conversion`` purchases, ``rpm`` revenue per
thousand items shown; ``hit_rate`` is per list (hits / lists followed by an item event).
"""

from __future__ import annotations

import dataclasses
import math
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from recofast_sidecar.protocol.experiments import Experiment

from recofast.engine import stats
from recofast.engine.attribution import COUNTS, DIMENSIONS

METRIC_COLUMN = {"ctr": "clicks", "cart_rate": "carts", "conversion": "purchases", "rpm": "revenue"}
METRIC_SCALE = {"ctr": 1.0, "cart_rate": 1.0, "conversion": 1.0, "rpm": 1000.0, "hit_rate": 1.0}
RATES = ("ctr", "cart_rate", "conversion", "rpm", "hit_rate")


def rates(c: dict[str, float]) -> dict[str, float | None]:
    """The rates of one row of counts (None where the denominator is 0)."""
    shown, checks = c.get("shown", 0.0), c.get("hit_checks", 0.0)

    def per(x: float, n: float, scale: float = 1.0) -> float | None:
        return x / n * scale if n else None

    return {
        "ctr": per(c.get("clicks", 0.0), shown),
        "cart_rate": per(c.get("carts", 0.0), shown),
        "conversion": per(c.get("purchases", 0.0), shown),
        "rpm": per(c.get("revenue", 0.0), shown, 1000.0),
        "hit_rate": per(c.get("hits", 0.0), checks),
    }


def breakdown(db: sqlite3.Connection, by: Sequence[str] = ("endpoint", "source"), minutes: float | None = None,
              now: float | None = None) -> list[dict[str, Any]]:
    """Counts and rates grouped by ``by`` (of :data:`DIMENSIONS`), over the last ``minutes``
    (None: everything kept)."""
    bad = [d for d in by if d not in DIMENSIONS]
    if bad:
        raise ValueError(f"cannot group by {bad[0]!r}; expected some of {', '.join(DIMENSIONS)}")
    cols = ", ".join(by)
    sums = ", ".join(f"sum({c})" for c in COUNTS)
    where, args = "", ()
    if minutes is not None:
        where, args = "WHERE minute >= ?", (int(((time.time() if now is None else now) - minutes * 60) // 60),)
    group = f"GROUP BY {cols} ORDER BY {cols}" if by else ""
    rows = db.execute(f"SELECT {cols + ', ' if by else ''}{sums} FROM minutes {where} {group}", args).fetchall()
    out = []
    for r in rows:
        counts = dict(zip(COUNTS, (float(x or 0) for x in r[len(by):])))
        if not any(counts.values()):
            continue
        out.append({**dict(zip(by, r[: len(by)])), **counts, **rates(counts)})
    return out


def _where(first: tuple[str, list[Any]], experiment: str | None, variant: str | None,
           since: tuple[str, int] | None) -> tuple[str, list[Any]]:
    """A WHERE clause: ``first``, the experiment and variant when given, and ``col >= value``."""
    where, args = [first[0]], list(first[1])
    for col, v in (("experiment", experiment), ("variant", variant)):
        if v is not None:
            where.append(f"{col} = ?")
            args.append(v)
    if since is not None:
        where.append(f"{since[0]} >= ?")
        args.append(since[1])
    return " AND ".join(where), args


def by_position(db: sqlite3.Connection, endpoint: str = "recommendations", experiment: str | None = None,
                variant: str | None = None, hours: float | None = None, now: float | None = None) -> list[dict[str, Any]]:
    """Counts and rates per position of ``endpoint``'s lists (position 0 is the top)."""
    since = None if hours is None else ("hour", int(((time.time() if now is None else now) - hours * 3600) // 3600))
    where, args = _where(("endpoint = ?", [endpoint]), experiment, variant, since)
    sums = ", ".join(f"sum({c})" for c in COUNTS)
    rows = db.execute(f"SELECT position, {sums} FROM positions WHERE {where} GROUP BY position ORDER BY position", args)
    out = []
    for r in rows:
        counts = dict(zip(COUNTS, (float(x or 0) for x in r[1:])))
        out.append({"position": int(r[0]), **counts, **rates(counts)})
    return out


def unit_sums(db: sqlite3.Connection, experiment: str, metric: str) -> dict[str, stats.UnitSums]:
    """Per variant, the per-user sums of the metric's denominator (items shown; lists
    followed by an item event for ``hit_rate``) and numerator."""
    c, s = (METRIC_COLUMN[metric], "shown") if metric != "hit_rate" else ("hits", "hit_checks")
    rows = db.execute(
        f"SELECT variant, count(*), sum({s}), sum({c}), sum({s} * {s}), sum({c} * {c}), sum({s} * {c})"
        f" FROM units WHERE experiment = ? AND {s} > 0 GROUP BY variant", (experiment,),
    ).fetchall()
    return {r[0]: stats.UnitSums(int(r[1]), *(float(x or 0) for x in r[2:])) for r in rows}


def experiment_report(db: sqlite3.Connection, exp: Experiment | str, metric: str | None = None,
                      control: str | None = None) -> dict[str, Any]:
    """One experiment: each variant's users, counts, rates and its metric with a 95 %
    interval, and each variant against the control (lift, always-valid interval, decision)."""
    name = exp if isinstance(exp, str) else exp.name
    metric = metric or (exp.metric if isinstance(exp, Experiment) else "ctr")
    alpha = exp.alpha if isinstance(exp, Experiment) else 0.05
    sums = unit_sums(db, name, metric)
    declared = [v.name for v in exp.variants] if isinstance(exp, Experiment) else sorted(sums)
    if control is None:
        control = exp.control_variant().name if isinstance(exp, Experiment) else ("popular" if "popular" in sums else (declared or [None])[0])
    counts = {r["variant"]: r for r in breakdown(db, ("experiment", "variant")) if r["experiment"] == name}
    scale = METRIC_SCALE[metric]
    every = {m: unit_sums(db, name, m) for m in RATES}
    variants = []
    for v in declared:
        us = sums.get(v, stats.UnitSums())
        est = stats.ratio(us)
        lo, hi = stats.interval95(est)
        row = {"variant": v, "control": v == control, "users": us.n, **{k: counts.get(v, {}).get(k, 0.0) for k in COUNTS},
               "metric": metric, "value": _num(est.value * scale), "lo": _num(lo * scale), "hi": _num(hi * scale)}
        row.update(rates(row))
        # Every rate with its 95 % interval over users (the users are what is randomised).
        row["intervals"] = {}
        for m in RATES:
            e = stats.ratio(every[m].get(v, stats.UnitSums()))
            mlo, mhi = stats.interval95(e)
            k = METRIC_SCALE[m]
            row["intervals"][m] = [_num(e.value * k), _num(mlo * k), _num(mhi * k)]
        variants.append(row)
    comparisons = []
    a = sums.get(control) if control is not None else None
    for v in declared:
        if v == control or control is None:
            continue
        cmp = stats.compare(a or stats.UnitSums(), sums.get(v, stats.UnitSums()), alpha=alpha)
        comparisons.append({
            "variant": v, "control": control, "lift": _num(cmp.lift), "lift_lo": _num(cmp.lift_lo), "lift_hi": _num(cmp.lift_hi),
            "diff": _num(cmp.diff * scale), "diff_lo": _num(cmp.lo * scale), "diff_hi": _num(cmp.hi * scale),
            "p_value": _num(cmp.p_value), "decided": cmp.decided, "winner": {"b": v, "a": control}.get(cmp.winner or ""),
            "more_needed": _num(cmp.more_needed), "text": cmp.describe((control, v)),
        })
    return {"experiment": name, "metric": metric, "alpha": alpha, "control": control, "variants": variants, "comparisons": comparisons}


def ips_report(db: sqlite3.Connection, target: float, experiment: str | None = None, variant: str | None = None,
               hours: float | None = None, now: float | None = None) -> dict[str, Any]:
    """The CTR of ``/v1/recommendations`` lists had their exploration rate been ``target``,
    estimated from the lists kept (IPS and self-normalised IPS, 95 % intervals); beside it,
    the CTR the logged lists had."""
    import numpy as np

    since = None if hours is None else ("ts", int(((time.time() if now is None else now) - hours * 3600) * 1000))
    where, args = _where(("endpoint = 'recommendations'", []), experiment, variant, since)
    rows = db.execute(f"SELECT explored, explore, clicks, json_array_length(items) FROM impressions WHERE {where}", args).fetchall()
    if not rows:
        return {"target": target, "lists": 0, "error": "no served lists kept to estimate from"}
    arr = np.asarray(rows, dtype=np.float64)
    reward = np.divide(arr[:, 2], arr[:, 3], out=np.zeros(len(arr)), where=arr[:, 3] > 0)
    # Lists logged at a rate that cannot speak for the target (0 for a positive target, 1 for
    # a target below 1) are left out, and counted.
    try:
        est = stats.ips(arr[:, 0].astype(bool), arr[:, 1], reward, target, drop_unsupported=True)
    except ValueError as e:
        return {"target": target, "lists": len(rows), "error": str(e)}
    return {"target": target, "lists": len(rows), "logged_explore": _num(float(arr[:, 1].mean())),
            "logged_ctr": _num(float(reward.mean())), **{k: _num(v) for k, v in dataclasses.asdict(est).items()}}


def loop_report(db: sqlite3.Connection, experiments: Sequence[Experiment] = (), by: Sequence[str] = ("endpoint", "source"),
                minutes: float | None = None) -> dict[str, Any]:
    """Everything at once (the JSON of ``/v1/loop`` and ``recofast metrics --json``)."""
    known = {e.name for e in experiments}
    seen = [r[0] for r in db.execute("SELECT DISTINCT experiment FROM units")]
    exps: list[Experiment | str] = [*experiments, *(n for n in seen if n and n not in known)]
    total = breakdown(db, (), minutes)
    unatt = [{"type": k, "reason": r, "n": n} for k, r, n in db.execute("SELECT kind, reason, n FROM unattributed ORDER BY kind, reason")]
    return {
        "generated": time.time(),
        "window_minutes": minutes,
        "total": total[0] if total else {},
        "by": list(by),
        "rows": breakdown(db, by, minutes),
        "positions": by_position(db, hours=None if minutes is None else minutes / 60),
        "experiments": [experiment_report(db, e) for e in exps],
        "unattributed": unatt,
    }


def _num(x: float | None) -> float | None:
    """A number JSON can carry (None for NaN, infinities and None)."""
    if x is None or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def _fmt(x: Any, pct: bool = False, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and pct:
        return f"{100 * x:.2f}%"
    if isinstance(x, float):
        return f"{x:,.0f}" if x.is_integer() else f"{x:.{digits}g}"
    return str(x)


def table(rows: Sequence[dict[str, Any]], cols: Sequence[tuple[str, str, bool]]) -> str:
    """A plain text table: ``cols`` are (key, heading, as a percentage)."""
    cells = [[h for _, h, _ in cols]] + [[_fmt(r.get(k), pct) for k, _, pct in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    lines = ["  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths))) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


RATE_COLUMNS = [("lists", "lists", False), ("shown", "shown", False), ("clicks", "clicks", False),
                ("ctr", "CTR", True), ("cart_rate", "cart", True), ("conversion", "conv", True),
                ("revenue", "revenue", False), ("rpm", "RPM", False), ("hit_rate", "hit rate", True)]


def format_report(rep: dict[str, Any]) -> str:
    """The text ``recofast metrics`` prints."""
    out = []
    span = "everything kept" if rep.get("window_minutes") is None else f"the last {rep['window_minutes']:g} minutes"
    out.append(f"Served lists and what they earned ({span})")
    keys = [(d, d, False) for d in rep["by"]]
    out.append(table(rep["rows"], keys + RATE_COLUMNS) if rep["rows"] else "(nothing served yet)")
    if rep.get("positions"):
        out.append("\nBy position (/v1/recommendations)")
        out.append(table(rep["positions"][:20], [("position", "pos", False), ("shown", "shown", False), ("clicks", "clicks", False),
                                                 ("ctr", "CTR", True), ("conversion", "conv", True)]))
    for e in rep.get("experiments", []):
        out.append(f"\nExperiment {e['experiment']} (decided on {e['metric']}, control {e['control']})")
        out.append(table(e["variants"], [("variant", "variant", False), ("users", "users", False), ("shown", "shown", False),
                                         ("clicks", "clicks", False), ("purchases", "purch.", False), ("revenue", "revenue", False),
                                         ("value", e["metric"], False), ("lo", "95% lo", False), ("hi", "95% hi", False)]))
        def iv(m: str, pct: bool) -> Any:
            return lambda r: "-" if r["intervals"][m][0] is None else (
                f"{_fmt(r['intervals'][m][0], pct)} ({_fmt(r['intervals'][m][1], pct)}-{_fmt(r['intervals'][m][2], pct)})")

        rows = [{"variant": r["variant"], **{m: iv(m, m != "rpm")(r) for m in RATES}} for r in e["variants"]]
        out.append(table(rows, [("variant", "variant", False), ("ctr", "CTR (95%)", False), ("cart_rate", "cart", False),
                                ("conversion", "conversion", False), ("rpm", "RPM", False), ("hit_rate", "hit rate", False)]))
        for c in e["comparisons"]:
            out.append(f"  {c['text']}")
    if rep.get("unattributed"):
        out.append("\nNot attributed")
        out.append(table(rep["unattributed"], [("type", "type", False), ("reason", "reason", False), ("n", "events", False)]))
    return "\n".join(out)


def format_ips(rep: dict[str, Any]) -> str:
    if rep.get("error"):
        return f"explore={rep['target']:g}: {rep['error']}"
    dropped = f", {rep['dropped']:,.0f} left out: logged at a rate that cannot speak for it" if rep.get("dropped") else ""
    return (f"explore={rep['target']:g} (logged: mean explore {rep['logged_explore']:.4g}, CTR per list {rep['logged_ctr']:.4%}, "
            f"{rep['lists']:,} lists{dropped})\n"
            f"  IPS    {_pct(rep.get('ips'))}  (95% {_pct(rep.get('ips_lo'))} to {_pct(rep.get('ips_hi'))})\n"
            f"  SNIPS  {_pct(rep.get('snips'))}  (95% {_pct(rep.get('snips_lo'))} to {_pct(rep.get('snips_hi'))})")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.3f}%"


__all__ = ["DIMENSIONS", "breakdown", "by_position", "experiment_report", "format_ips", "format_report", "ips_report",
           "loop_report", "rates", "table", "unit_sums"]
