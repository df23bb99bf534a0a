"""Statistics of the online experiments: ratio metrics per variant, an always-valid
comparison of a variant with the control, and an off-policy estimate of another
exploration rate.

**Ratio metrics.** The unit of randomisation is the user, so a metric such as
clicks per item shown is a ratio of two per-user sums, ``R = Σc / Σs``. The users, not the
impressions, are the independent draws: :func:`ratio` gives the delta-method variance
from six running sums per variant (:class:`UnitSums`), which a store can keep per variant
without keeping the users. The fields of a :class:`UnitSums` may also be numpy arrays of
one shape (one entry per experiment or segment); :func:`ratio` then works elementwise.

**Always-valid comparison.** :func:`compare` puts a confidence sequence around the
difference of the two rates, a mixture sequential probability ratio test with a normal
mixture (Johari, Pekelis and Walsh, "Always valid inference", 2017; Howard et al.,
"Time-uniform, nonparametric, nonasymptotic confidence sequences", 2021): the interval
may be looked at after every batch of users, and the experiment stopped at the first look
where it excludes 0, with a false decision at most ``alpha`` of the time. A fixed-horizon
z-test looked at that way decides falsely far more often.

The mixture's spread ``tau`` sets where the test is most powerful: effects of about
``tau`` are found fastest. Unless ``tau`` is given, it is :data:`TAU_REL` (0.1, fixed in
advance and not tuned on any data) times the control's observed rate, i.e. the test is
aimed at lifts of about 10 % (smaller ones take longer to find, larger ones are found
quickly anyway). Two things
make the guarantee approximate rather than exact: the variance is estimated at each look
(the theory takes it as known), and the default ``tau`` moves with the control's observed
rate (the theory fixes the mixture before the data). Both settle as users come in: in
500 simulated A/A experiments looked at 200 times, after every 25 users per variant, it
decided falsely in 0.6 % of them at ``alpha = 0.05`` (a z-test looked at so: 42 %). For the
strict guarantee, give ``tau`` as an absolute number fixed before the experiment (e.g. 0.1
times the control's rate of the weeks before).

**Off-policy exploration.** A served list had, with probability ``eps`` logged per list,
one slot given to exploration. :func:`ips` estimates the mean reward per list had the
rate been ``target`` instead, by inverse propensity scoring and its self-normalised form.

>>> a, b = UnitSums(), UnitSums()
>>> a.add_many([10, 20] * 400, [1, 0, 2, 1] * 200)
>>> b.add_many([10, 20] * 400, [1, 1, 2, 1] * 200)
>>> compare(a, b).describe(("control", "new ranking"))
'new ranking beats control by 25.0 % (95 % always-valid interval 11.7 % to 38.3 %), decided'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "TAU_REL",
    "Z95",
    "Comparison",
    "Estimate",
    "OffPolicy",
    "UnitSums",
    "always_valid_interval",
    "always_valid_p",
    "compare",
    "interval95",
    "ips",
    "ratio",
]

TAU_REL = 0.1
"""The default mixture spread of :func:`compare`, relative to the control's rate: the test
is aimed at lifts of about 10 %. Chosen before any data and not to be tuned on it."""

Z95 = 1.959963984540054
"""The two-sided 95 % normal quantile."""


# -- ratio metrics --------------------------------------------------------------------------


@dataclass
class UnitSums:
    """The sums over the users of one variant that its ratio metric needs.

    ``n`` users; sums of ``s`` (the denominator, e.g. items shown), ``c`` (the numerator,
    e.g. clicks or revenue), ``ss`` (s²), ``cc`` (c²) and ``cs`` (c·s), each per user.

    >>> us = UnitSums()
    >>> for s, c in [(10, 1), (10, 2), (20, 1), (10, 0)]:
    ...     us.add(s, c)
    >>> us
    UnitSums(n=4, s=50.0, c=4.0, ss=700.0, cc=6.0, cs=50.0)
    >>> other = UnitSums()
    >>> other.add_many([10, 10], [1, 2])
    >>> us.merge(other)
    UnitSums(n=6, s=70.0, c=7.0, ss=900.0, cc=11.0, cs=80.0)
    """

    n: Any = 0
    s: Any = 0.0
    c: Any = 0.0
    ss: Any = 0.0
    cc: Any = 0.0
    cs: Any = 0.0

    def add(self, s: float, c: float) -> None:
        """Adds one user whose sums are ``s`` (denominator) and ``c`` (numerator)."""
        s, c = float(s), float(c)
        self.n += 1
        self.s += s
        self.c += c
        self.ss += s * s
        self.cc += c * c
        self.cs += c * s

    def add_many(self, s: Any, c: Any) -> None:
        """Adds many users at once: ``s`` and ``c`` are sequences, one entry per user."""
        s = np.asarray(s, dtype=np.float64).ravel()
        c = np.asarray(c, dtype=np.float64).ravel()
        if s.shape != c.shape:
            raise ValueError(f"s and c must have one entry per user, got {s.size} and {c.size}")
        self.n += int(s.size)
        self.s += float(s.sum())
        self.c += float(c.sum())
        self.ss += float(s @ s)
        self.cc += float(c @ c)
        self.cs += float(c @ s)

    def merge(self, other: UnitSums) -> UnitSums:
        """The sums of both groups of users (e.g. two shards, or two days); neither changes."""
        return UnitSums(
            self.n + other.n,
            self.s + other.s,
            self.c + other.c,
            self.ss + other.ss,
            self.cc + other.cc,
            self.cs + other.cs,
        )


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its variance. ``value`` is NaN when undefined (no denominator);
    ``var`` is infinite when it cannot be estimated (fewer than two users)."""

    value: Any
    var: Any

    @property
    def sd(self) -> Any:
        """The standard error, ``sqrt(var)``."""
        return np.sqrt(self.var) if isinstance(self.var, np.ndarray) else math.sqrt(self.var)


def ratio(us: UnitSums) -> Estimate:
    """The ratio metric ``R = c / s`` of a variant and its delta-method variance.

    ``Var(R) ≈ Var_u(c_u − R·s_u) / (n·s̄²)`` with ``s̄ = s / n`` and ``Var_u`` the sample
    variance over the users (``n − 1``), computed from the sums alone. Elementwise when the
    fields of ``us`` are arrays.

    >>> us = UnitSums()
    >>> us.add_many([10, 10, 20, 10], [1, 2, 1, 0])
    >>> est = ratio(us)
    >>> round(est.value, 4), round(est.var, 8)
    (0.08, 0.00132267)
    >>> ratio(UnitSums(n=1, s=10.0, c=1.0, ss=100.0, cc=1.0, cs=10.0))
    Estimate(value=0.1, var=inf)
    >>> ratio(UnitSums())
    Estimate(value=nan, var=inf)
    """
    n = np.asarray(us.n, dtype=np.float64)
    s = np.asarray(us.s, dtype=np.float64)
    c = np.asarray(us.c, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ok = s != 0
        r = np.where(ok, c / np.where(ok, s, 1.0), np.nan)
        rr = np.where(ok, r, 0.0)
        # Σ(c_u − R·s_u)² (their mean is exactly 0). When every user has the same rate it
        # is 0 but rounding leaves ~1e-16 of the terms; below 1e-12 of them counts as 0.
        cc, r2ss = np.asarray(us.cc, dtype=np.float64), rr * rr * np.asarray(us.ss, dtype=np.float64)
        d2 = cc - 2.0 * rr * np.asarray(us.cs, dtype=np.float64) + r2ss
        d2 = np.where(d2 > 1e-12 * (cc + r2ss), d2, 0.0)
        enough = ok & (n >= 2)
        nn = np.where(enough, n, 2.0)
        var = np.where(enough, d2 * nn / ((nn - 1.0) * np.where(ok, s, 1.0) ** 2), np.inf)
    if r.ndim == 0:
        return Estimate(float(r), float(var))
    return Estimate(r, var)


def interval95(est: Estimate) -> tuple[float, float]:
    """The normal 95 % interval of an estimate, for display per variant.

    A fixed-horizon interval: right for one look, not for deciding by watching it; use
    :func:`compare` to decide. Infinite when the variance is unknown.

    >>> interval95(Estimate(0.08, 0.0001))
    (0.0604..., 0.0995...)
    >>> interval95(Estimate(0.1, math.inf))
    (-inf, inf)
    """
    half = Z95 * est.sd
    return est.value - half, est.value + half


# -- always-valid comparison ----------------------------------------------------------------


def always_valid_interval(diff: Any, var: Any, tau: Any, alpha: float = 0.05) -> tuple[Any, Any]:
    """The always-valid ``1 − alpha`` confidence sequence at one look: ``diff ± h`` with
    ``h = sqrt(V(V+τ²)/τ² · (2·ln(1/α) + ln((V+τ²)/V)))``, ``V = var`` the variance of
    ``diff`` at this look and ``τ = tau > 0`` the spread of the normal mixture.

    Valid at every look at once: the chance that any look's interval misses the true
    difference is at most ``alpha``. Elementwise on arrays.

    >>> lo, hi = always_valid_interval(0.01, 1e-5, 0.005)
    >>> round(lo, 5), round(hi, 5)
    (-7e-05, 0.02007)
    """
    v = np.asarray(var, dtype=np.float64)
    t2 = np.asarray(tau, dtype=np.float64) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.sqrt(v * (v + t2) / t2 * (2.0 * math.log(1.0 / alpha) + np.log1p(t2 / v)))
    if h.ndim == 0:
        h = float(h)
    return diff - h, diff + h


def always_valid_p(diff: Any, var: Any, tau: Any) -> Any:
    """The always-valid p-value of one look, ``min(1, 1/Λ)`` with the mixture likelihood
    ratio ``Λ = sqrt(V/(V+τ²))·exp(τ²·diff²/(2V(V+τ²)))``.

    This is one look's value. The always-valid p-value of an experiment is the running
    minimum over its looks: keep ``p = min(p, always_valid_p(...))`` from look to look
    (starting at 1). It is at most ``alpha`` exactly when :func:`always_valid_interval`
    excludes 0. Elementwise on arrays.

    >>> round(always_valid_p(0.01, 1e-5, 0.005), 4)
    0.0526
    >>> always_valid_p(0.0, 1e-5, 0.005)
    1.0
    """
    v = np.asarray(var, dtype=np.float64)
    t2 = np.asarray(tau, dtype=np.float64) ** 2
    d = np.asarray(diff, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_lr = -0.5 * np.log1p(t2 / v) + t2 * d * d / (2.0 * v * (v + t2))
        p = np.exp(np.minimum(0.0, -log_lr))
    return float(p) if p.ndim == 0 else p


@dataclass(frozen=True)
class Comparison:
    """The comparison of variant B with the control A at one look (:func:`compare`).

    ``diff = R_B − R_A`` with its always-valid interval ``lo``..``hi``; ``lift``,
    ``lift_lo``, ``lift_hi`` are the same divided by ``R_A`` (fractions: 0.1 is +10 %; NaN
    when ``R_A <= 0``; they hold ``R_A`` fixed, so they leave out its own uncertainty).
    ``p_value`` is this look's always-valid p-value. ``decided`` when the interval excludes
    0; ``winner`` is ``"b"``, ``"a"`` or None. When not decided, ``more_needed`` is how many
    more denominator units (e.g. impressions) — and ``more_users`` how many more users,
    split as now — the interval would take to exclude 0 if the estimate held: 0 when
    decided, ``math.inf`` when ``diff == 0``, None when there is too little data.
    ``reason`` says why nothing could be computed (None otherwise). ``alpha``, ``tau``
    (the mixture spread used) and ``var`` (the variance of ``diff``) are those of the look.
    """

    diff: float
    lo: float
    hi: float
    lift: float
    lift_lo: float
    lift_hi: float
    p_value: float
    decided: bool
    winner: str | None
    more_needed: float | None
    more_users: float | None = None
    reason: str | None = None
    alpha: float = 0.05
    tau: float = math.nan
    var: float = math.nan

    def describe(self, names: tuple[str, str] = ("A", "B"), unit: str = "impressions") -> str:
        """One line for people: ``names`` are (control, variant), ``unit`` the
        denominator's unit. Percentages are relative to the control's rate.

        >>> c = Comparison(0.0123, 0.0041, 0.0206, 0.123, 0.041, 0.206, 0.001, True, "b", 0.0)
        >>> c.describe()
        'B beats A by 12.3 % (95 % always-valid interval 4.1 % to 20.6 %), decided'
        >>> c = Comparison(-0.0123, -0.0206, -0.0041, -0.123, -0.206, -0.041, 0.001, True, "a", 0.0)
        >>> c.describe(("old", "new"))
        'old beats new by 12.3 % (95 % always-valid interval 4.1 % to 20.6 %), decided'
        >>> c = Comparison(0.003, -0.002, 0.008, 0.03, -0.02, 0.08, 0.6, False, None, 4213.0)
        >>> c.describe()
        'not yet: about 4,200 more impressions (B vs A +3.0 %, 95 % always-valid interval -2.0 % to 8.0 %)'
        >>> compare(UnitSums(), UnitSums()).describe()
        'not yet: too little data'
        """
        a_name, b_name = names
        if self.reason is not None:
            return f"not yet: {self.reason}"
        level = f"{(1.0 - self.alpha) * 100:g} % always-valid interval"
        relative = math.isfinite(self.lift)
        if self.decided:
            sign = 1.0 if self.winner == "b" else -1.0
            first, second = (b_name, a_name) if self.winner == "b" else (a_name, b_name)
            if relative:
                by, lo, hi = sign * self.lift, sign * self.lift_lo, sign * self.lift_hi
            else:
                by, lo, hi = sign * self.diff, sign * self.lo, sign * self.hi
            if sign < 0:
                lo, hi = hi, lo
            return f"{first} beats {second} by {_num(by, relative)} ({level} {_num(lo, relative)} to {_num(hi, relative)}), decided"
        if relative:
            now = f"{b_name} vs {a_name} {_num(self.lift, True, signed=True)}, {level} {_num(self.lift_lo, True)} to {_num(self.lift_hi, True)}"
        else:
            now = f"{b_name} vs {a_name} {_num(self.diff, False, signed=True)}, {level} {_num(self.lo, False)} to {_num(self.hi, False)}"
        if self.diff == 0:
            return f"not yet: no difference so far ({now})"
        if self.more_needed is None or not math.isfinite(self.more_needed):
            return f"not yet: the difference is too small to decide ({now})"
        return f"not yet: about {_about(self.more_needed)} more {unit} ({now})"


def _num(x: float, relative: bool, signed: bool = False) -> str:
    if relative:
        return f"{x * 100:+.1f} %" if signed else f"{x * 100:.1f} %"
    return f"{x:+#.3g}" if signed else f"{x:#.3g}"


def _about(x: float) -> str:
    """``x`` to two significant figures, with thousands separators (at least 1)."""
    if x < 1:
        return "1"
    e = math.floor(math.log10(x))
    return f"{round(x, 1 - e):,.0f}"


def _too_little(alpha: float, tau: float = math.nan, diff: float = math.nan, lift: float = math.nan) -> Comparison:
    return Comparison(
        diff, -math.inf, math.inf, lift, -math.inf, math.inf, 1.0, False, None, None,
        None, "too little data", alpha, tau,
    )  # fmt: skip


def compare(a: UnitSums, b: UnitSums, alpha: float = 0.05, tau: float | None = None) -> Comparison:
    """Variant ``b`` against the control ``a`` at one look, always valid.

    ``diff = R_B − R_A`` (:func:`ratio`), ``V = Var(R_A) + Var(R_B)``, and the interval of
    :func:`always_valid_interval` with mixture spread ``tau``; by default
    ``tau = TAU_REL · |R_A|`` (approximately valid only, see the module's notes; give an
    absolute ``tau`` fixed in advance for the strict guarantee). The p-value is this look's
    (:func:`always_valid_p`); keep the running minimum over looks.

    Never raises on thin data: with fewer than two users or no denominator in a variant, no
    variance, or a control rate of 0 and no ``tau``, the answer has
    ``reason="too little data"``, an infinite interval and ``p_value=1``.

    >>> a, b = UnitSums(), UnitSums()
    >>> a.add_many([10, 20] * 100, [1, 0, 2, 1] * 50)
    >>> b.add_many([10, 20] * 100, [1, 1, 2, 1] * 50)
    >>> c = compare(a, b)
    >>> c.decided, round(c.lift, 3), round(c.p_value, 3), round(c.more_users)
    (False, 0.25, 0.148, 135)
    >>> c.describe()
    'not yet: about 2,000 more impressions (B vs A +25.0 %, 95 % always-valid interval -5.2 % to 55.2 %)'
    """
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    if tau is not None and not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a positive number, got {tau}")
    ea, eb = ratio(a), ratio(b)
    ra, rb = float(ea.value), float(eb.value)
    diff = rb - ra
    lift = diff / ra if ra > 0 else math.nan
    t = float(tau) if tau is not None else TAU_REL * abs(ra)
    v = float(ea.var) + float(eb.var)
    if not (math.isfinite(diff) and math.isfinite(v) and v > 0 and math.isfinite(t) and t > 0):
        return _too_little(alpha, t, diff, lift)
    lo, hi = always_valid_interval(diff, v, t, alpha)
    p = always_valid_p(diff, v, t)
    winner = "b" if lo > 0 else "a" if hi < 0 else None
    decided = winner is not None
    if decided:
        more_users: float = 0.0
    elif diff == 0:
        more_users = math.inf
    else:
        more_users = (_scale_to_decide(diff, v, t, alpha) - 1.0) * (float(a.n) + float(b.n))
    s_bar = (float(a.s) + float(b.s)) / (float(a.n) + float(b.n))
    more_needed = more_users * s_bar if math.isfinite(more_users) else math.inf
    if ra > 0:
        lift_lo, lift_hi = lo / ra, hi / ra
    else:
        lift_lo = lift_hi = math.nan
    return Comparison(
        diff, lo, hi, lift, lift_lo, lift_hi, p, decided, winner, more_needed,
        more_users, None, alpha, t, v,
    )  # fmt: skip


def _scale_to_decide(diff: float, var: float, tau: float, alpha: float) -> float:
    """The smallest ``k >= 1`` with ``|diff|`` beyond the half-width at variance
    ``var / k`` (bisection on ``log k``; the half-width falls as ``k`` grows for
    ``alpha < 0.6``), or ``math.inf`` past 2⁶⁰."""

    t2, two_log = tau * tau, 2.0 * math.log(1.0 / alpha)

    def decides(k: float) -> bool:  # always_valid_interval's half-width, on floats
        v = var / k
        return diff * diff > v * (v + t2) / t2 * (two_log + math.log1p(t2 / v))

    lo_k, hi_k = 1.0, 2.0
    while not decides(hi_k):
        lo_k, hi_k = hi_k, hi_k * 2.0
        if hi_k > 2.0**60:
            return math.inf
    while hi_k / lo_k > 1.0 + 1e-6:
        mid = math.sqrt(lo_k * hi_k)
        if decides(mid):
            hi_k = mid
        else:
            lo_k = mid
    return hi_k


# -- off-policy estimate of an exploration rate ---------------------------------------------


@dataclass(frozen=True)
class OffPolicy:
    """The estimated mean reward per list at another exploration rate (:func:`ips`).

    ``ips`` (inverse propensity scoring, unbiased) and ``snips`` (self-normalised, a little
    biased, usually less variable), each with a normal 95 % interval; ``n`` lists used,
    ``ess`` their effective sample size ``(Σw)²/Σw²`` (``n`` when every weight is 1) and
    ``dropped`` the lists left out as unsupported (with ``drop_unsupported=True``).
    """

    ips: float
    ips_lo: float
    ips_hi: float
    snips: float
    snips_lo: float
    snips_hi: float
    n: int
    ess: float
    dropped: int = 0


def ips(explored: Any, eps: Any, reward: Any, target: float, *, drop_unsupported: bool = False) -> OffPolicy:
    """Off-policy estimate of the mean reward per list had the exploration rate been
    ``target`` rather than the logged one.

    Each list was explored (one slot given to exploration) with its logged probability
    ``eps``; ``explored`` says whether it was, ``reward`` is its reward (e.g. clicks per
    item shown). A list's weight is ``target/eps`` if explored, else
    ``(1 − target)/(1 − eps)``. IPS is ``mean(w·r)``, with interval ``± 1.96·sd(w·r)/√n``;
    SNIPS is ``Σw·r / Σw``, with the delta-method interval
    ``± 1.96·sd(w·(r − snips)) / (mean(w)·√n)`` (sample sd; infinite intervals when
    ``n < 2``).

    A list logged with ``eps = 0`` says nothing about exploring it, so a ``target > 0``
    is unsupported there (likewise ``eps = 1`` for ``target < 1``): the estimate would be
    biased, so such lists raise ``ValueError``. With ``drop_unsupported=True`` they are
    left out instead and counted in ``dropped``; the estimate is then for the other lists
    only, which is a different population when the rate depends on the user or the list.
    A target outside [0, 1], logs that cannot happen (explored with ``eps = 0``, not
    explored with ``eps = 1``), mismatched lengths and non-finite values raise too.

    >>> est = ips([True, False, False, False], [0.25] * 4, [0.0, 0.2, 0.1, 0.3], target=0.5)
    >>> round(est.ips, 4), round(est.snips, 4), est.n, round(est.ess, 3)
    (0.1, 0.1, 4, 3.0)
    >>> ips([False, False], [0.25, 0.25], [0.1, 0.3], target=0.25).ips
    0.2
    """
    if not (isinstance(target, (int, float, np.floating, np.integer)) and 0.0 <= float(target) <= 1.0):
        raise ValueError(f"target exploration rate must be a number in [0, 1], got {target!r}")
    t = float(target)
    x = np.asarray(explored)
    e = np.asarray(eps, dtype=np.float64)
    r = np.asarray(reward, dtype=np.float64)
    if x.ndim != 1 or e.shape != x.shape or r.shape != x.shape:
        raise ValueError(f"explored, eps and reward must be 1-D of one length, got shapes {x.shape}, {e.shape}, {r.shape}")
    if x.dtype != np.bool_:
        if not np.isin(x, (0, 1)).all():
            raise ValueError("explored must be booleans (or 0/1)")
        x = x.astype(np.bool_)
    if not (np.isfinite(e).all() and ((e >= 0) & (e <= 1)).all()):
        raise ValueError("every logged eps must be a probability in [0, 1]")
    if not np.isfinite(r).all():
        raise ValueError("every reward must be finite")
    impossible = int(np.count_nonzero((x & (e == 0)) | (~x & (e == 1))))
    if impossible:
        raise ValueError(f"{impossible} list(s) logged as explored with eps = 0 or not explored with eps = 1")
    unsupported = ((e == 0) & (t > 0)) | ((e == 1) & (t < 1))
    dropped = int(np.count_nonzero(unsupported))
    if dropped:
        if not drop_unsupported:
            raise ValueError(
                f"target {t:g} is unsupported by {dropped} list(s) logged with eps = 0 or 1 "
                "(their other branch was never served); filter them or pass drop_unsupported=True"
            )
        keep = ~unsupported
        x, e, r = x[keep], e[keep], r[keep]
    n = int(x.size)
    if n == 0:
        raise ValueError("no lists to estimate from")
    w = np.empty(n)
    w[x] = t / e[x]
    w[~x] = (1.0 - t) / (1.0 - e[~x])
    wr = w * r
    sw = float(w.sum())
    est_ips = float(wr.mean())
    if sw > 0:
        est_snips = float(wr.sum() / sw)
    else:
        est_snips = math.nan
    if n >= 2:
        h_ips = Z95 * float(wr.std(ddof=1)) / math.sqrt(n)
        if sw > 0:
            h_snips = Z95 * float((w * (r - est_snips)).std(ddof=1)) / (sw / n * math.sqrt(n))
        else:
            h_snips = math.nan
    else:
        h_ips = h_snips = math.inf
    sww = float(w @ w)
    ess = sw * sw / sww if sww > 0 else 0.0
    return OffPolicy(
        est_ips, est_ips - h_ips, est_ips + h_ips,
        est_snips, est_snips - h_snips, est_snips + h_snips,
        n, ess, dropped,
    )  # fmt: skip
