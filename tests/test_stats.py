"""The experiment statistics: delta-method ratios, the always-valid comparison (its error
rate under peeking, its power, its one-line summary) and the off-policy estimate of an
exploration rate. Every simulation has a fixed seed."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from recofast.engine import stats
from recofast.engine.stats import (
    TAU_REL,
    Z95,
    Comparison,
    UnitSums,
    always_valid_interval,
    always_valid_p,
    compare,
    interval95,
    ips,
    ratio,
)

FIELDS = ("n", "s", "c", "ss", "cc", "cs")


def users(rng: np.random.Generator, shape: tuple[int, ...], rate: float = 0.05, conc: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-user items shown (1 + Poisson(3)) and clicks; each user has their own click rate
    (Beta with mean ``rate``; small ``conc`` = very different users), so clicks cluster by
    user and a binomial variance over the impressions is too small."""
    s = 1 + rng.poisson(3.0, shape)
    p = rng.beta(rate * conc, (1 - rate) * conc, shape)
    return s.astype(np.float64), rng.binomial(s, p).astype(np.float64)


def sums_last_axis(s: np.ndarray, c: np.ndarray) -> UnitSums:
    """UnitSums with array fields: the users along the last axis summed."""
    n = np.full(s.shape[:-1], s.shape[-1])
    return UnitSums(n, s.sum(-1), c.sum(-1), (s * s).sum(-1), (c * c).sum(-1), (c * s).sum(-1))


def cumulative_looks(s: np.ndarray, c: np.ndarray) -> UnitSums:
    """``s``, ``c`` of shape (experiments, looks, users per look): the sums at every look."""
    return UnitSums(*(np.cumsum(getattr(sums_last_axis(s, c), f), axis=1) for f in FIELDS))


def at(us: UnitSums, *index: int) -> UnitSums:
    return UnitSums(*(getattr(us, f)[index].item() for f in FIELDS))


def test_docstring_examples() -> None:
    result = doctest.testmod(stats, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted >= 20


# -- ratio metrics --------------------------------------------------------------------------


def test_sums_accumulate_and_merge() -> None:
    rng = np.random.default_rng(0)
    s, c = users(rng, (300,))
    one = UnitSums()
    for si, ci in zip(s, c):
        one.add(si, ci)
    half = UnitSums()
    half.add_many(s[:120], c[:120])
    rest = UnitSums()
    rest.add_many(s[120:], c[120:])
    both = half.merge(rest)
    assert half.n == 120 and both.n == one.n == 300
    for f in FIELDS:
        assert getattr(both, f) == pytest.approx(getattr(one, f), rel=1e-12)
    assert both.cs == pytest.approx(float(s @ c))
    with pytest.raises(ValueError, match="one entry per user"):
        UnitSums().add_many([1, 2], [1])


def test_delta_variance_equals_the_per_user_formula() -> None:
    rng = np.random.default_rng(1)
    s, c = users(rng, (500,))
    us = UnitSums()
    us.add_many(s, c)
    r = c.sum() / s.sum()
    brute = np.var(c - r * s, ddof=1) / (len(s) * s.mean() ** 2)
    est = ratio(us)
    assert est.value == pytest.approx(r, rel=1e-12)
    assert est.var == pytest.approx(brute, rel=1e-9)
    lo, hi = interval95(est)
    assert hi - est.value == pytest.approx(Z95 * math.sqrt(brute), rel=1e-9)
    assert est.value - lo == pytest.approx(hi - est.value)


def test_delta_variance_agrees_with_the_bootstrap() -> None:
    rng = np.random.default_rng(2)
    s, c = users(rng, (2000,))
    us = UnitSums()
    us.add_many(s, c)
    idx = rng.integers(0, len(s), (4000, len(s)))
    boot = c[idx].sum(1) / s[idx].sum(1)
    assert ratio(us).var == pytest.approx(boot.var(ddof=1), rel=0.08)


def test_interval95_covers_the_true_rate_about_95_percent() -> None:
    # 2000 experiments of 1000 users, true rate 0.05; sd of the coverage about 0.005.
    rng = np.random.default_rng(3)
    s, c = users(rng, (2000, 1000))
    est = ratio(sums_last_axis(s, c))
    lo, hi = interval95(est)
    coverage = float(((lo <= 0.05) & (0.05 <= hi)).mean())
    assert 0.935 <= coverage <= 0.965
    # Treating the impressions as independent (binomial) ignores that clicks cluster by user.
    naive = Z95 * np.sqrt(est.value * (1 - est.value) / s.sum(1))
    assert float((np.abs(est.value - 0.05) <= naive).mean()) < 0.90


def test_ratio_degenerate_cases() -> None:
    assert math.isnan(ratio(UnitSums()).value)
    one = UnitSums()
    one.add(10, 2)
    assert ratio(one).value == 0.2 and ratio(one).var == math.inf
    assert interval95(ratio(one)) == (-math.inf, math.inf)
    nothing_shown = UnitSums(n=5)
    assert math.isnan(ratio(nothing_shown).value) and ratio(nothing_shown).var == math.inf
    alike = UnitSums()
    alike.add_many([10, 20, 30], [1, 2, 3])  # every user at the same rate
    assert ratio(alike).value == pytest.approx(0.1) and ratio(alike).var == 0.0


# -- always-valid comparison ----------------------------------------------------------------

LOOKS, PER_LOOK = 200, 25  # 200 looks, 25 new users per variant before each


@pytest.fixture(scope="module")
def aa() -> tuple[UnitSums, UnitSums]:
    """500 A/A experiments (no difference), the sums of both variants at each of 200 looks."""
    rng = np.random.default_rng(4)
    shape = (500, LOOKS, PER_LOOK)
    return cumulative_looks(*users(rng, shape)), cumulative_looks(*users(rng, shape))


def decisions(a: UnitSums, b: UnitSums, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """The always-valid decision and the fixed-horizon z-test's at every look (vectorised,
    with compare's default tau)."""
    ea, eb = ratio(a), ratio(b)
    diff, var = eb.value - ea.value, ea.var + eb.var
    lo, hi = always_valid_interval(diff, var, TAU_REL * np.abs(ea.value), alpha)
    return (lo > 0) | (hi < 0), np.abs(diff) > Z95 * np.sqrt(var)


def test_peeking_at_an_aa_test_rarely_decides(aa: tuple[UnitSums, UnitSums]) -> None:
    always_valid, z_test = decisions(*aa)
    ever_av = float(always_valid.any(axis=1).mean())
    ever_z = float(z_test.any(axis=1).mean())
    assert ever_av <= 0.05 + 0.02
    # The same looks with a fixed-horizon test: many times alpha (why peeking needs it).
    assert ever_z >= 0.25
    assert float(z_test[:, -1].mean()) <= 0.09  # one look of the z-test is about alpha


def test_compare_matches_the_vectorised_decision(aa: tuple[UnitSums, UnitSums]) -> None:
    a, b = aa
    always_valid, _ = decisions(a, b)
    for e in range(12):
        p_running = 1.0
        for look in range(0, LOOKS, 3):
            c = compare(at(a, e, look), at(b, e, look))
            assert c.decided == bool(always_valid[e, look])
            assert c.decided == (c.p_value <= 0.05)
            assert (c.more_needed == 0) == c.decided
            p_running = min(p_running, c.p_value)
        assert 0 < p_running <= 1


@pytest.mark.parametrize("better", ["b", "a"])
def test_a_real_difference_is_decided(better: str) -> None:
    # One variant at +40 % (0.07 vs 0.05); 100 experiments watched over 200 looks.
    rng = np.random.default_rng(5 if better == "b" else 6)
    shape = (100, LOOKS, PER_LOOK)
    low, high = cumulative_looks(*users(rng, shape)), cumulative_looks(*users(rng, shape, rate=0.07))
    a, b = (low, high) if better == "b" else (high, low)
    always_valid, _ = decisions(a, b)
    first = always_valid.argmax(axis=1)
    assert always_valid.any(axis=1).mean() >= 0.95
    assert np.median(first) < 0.75 * LOOKS  # well before the end
    wrong_way = 0
    for e in np.flatnonzero(always_valid.any(axis=1)):
        c = compare(at(a, e, first[e]), at(b, e, first[e]))
        assert c.decided
        wrong_way += c.winner != better
    assert wrong_way == 0
    final = compare(at(a, 0, LOOKS - 1), at(b, 0, LOOKS - 1))
    assert final.winner == better and final.lift_lo <= final.lift <= final.lift_hi


def test_always_valid_interval_and_p_value_agree() -> None:
    rng = np.random.default_rng(7)
    diff = rng.normal(0, 0.01, 2000)
    var = rng.uniform(1e-6, 1e-4, 2000)
    tau = rng.uniform(1e-3, 1e-2, 2000)
    lo, hi = always_valid_interval(diff, var, tau)
    p = always_valid_p(diff, var, tau)
    excluded = (lo > 0) | (hi < 0)
    assert 0 < excluded.sum() < 2000
    assert np.array_equal(excluded, p < 0.05)
    # Wider than the fixed-horizon interval, and wider for a smaller alpha.
    assert np.all(hi - diff > Z95 * np.sqrt(var))
    assert np.all(always_valid_interval(diff, var, tau, 0.01)[1] > hi)


def scaled(us: UnitSums, k: float) -> UnitSums:
    return UnitSums(*(getattr(us, f) * k for f in FIELDS))


def test_more_needed_is_where_the_interval_would_exclude_zero() -> None:
    a, b = UnitSums(), UnitSums()
    a.add_many([10, 20] * 100, [1, 0, 2, 1] * 50)
    b.add_many([10, 20] * 100, [1, 1, 2, 1] * 50)
    c = compare(a, b)
    assert not c.decided and c.more_users > 0
    users_now = a.n + b.n
    assert c.more_needed == pytest.approx(c.more_users * (a.s + b.s) / users_now)
    k = 1 + c.more_users / users_now
    # n/(n−1) in the sample variance makes scaled sums a hair off V/k: 2 % either side.
    assert compare(scaled(a, k * 1.02), scaled(b, k * 1.02)).decided
    assert not compare(scaled(a, k * 0.98), scaled(b, k * 0.98)).decided
    # With an absolute tau, the mixture is the caller's.
    assert compare(a, b, tau=0.5).tau == 0.5 and c.tau == pytest.approx(TAU_REL * ratio(a).value)


# -- one line for people --------------------------------------------------------------------


def grouped(pattern_a: list[int], pattern_b: list[int], repeat: int, shown: tuple[int, int] = (10, 20)) -> tuple[UnitSums, UnitSums]:
    a, b = UnitSums(), UnitSums()
    a.add_many(list(shown) * (len(pattern_a) // 2 * repeat), pattern_a * repeat)
    b.add_many(list(shown) * (len(pattern_b) // 2 * repeat), pattern_b * repeat)
    return a, b


def test_describe_decided_both_ways() -> None:
    a, b = grouped([1, 0, 2, 1], [1, 1, 2, 1], 200)
    assert compare(a, b).describe() == "B beats A by 25.0 % (95 % always-valid interval 11.7 % to 38.3 %), decided"
    worse = compare(b, a)
    assert worse.winner == "a" and worse.lift == pytest.approx(-0.2)
    assert worse.describe(("new", "old")) == "new beats old by 20.0 % (95 % always-valid interval 9.4 % to 30.6 %), decided"
    assert compare(a, b, alpha=0.01).describe().startswith("B beats A by 25.0 % (99 % always-valid interval")


def test_describe_not_yet() -> None:
    a, b = grouped([1, 0, 2, 1], [1, 1, 2, 1], 50)
    line = compare(a, b).describe(unit="items shown")
    assert line == "not yet: about 2,000 more items shown (B vs A +25.0 %, 95 % always-valid interval -5.2 % to 55.2 %)"
    same = compare(*grouped([1, 0, 2, 1], [1, 0, 2, 1], 50))
    assert same.more_needed == math.inf and not same.decided
    assert same.describe().startswith("not yet: no difference so far (B vs A +0.0 %")


@pytest.mark.parametrize(
    "a, b, tau",
    [
        (UnitSums(), UnitSums(), None),  # nobody yet
        (UnitSums(1, 10.0, 1.0, 100.0, 1.0, 10.0), UnitSums(1, 10.0, 2.0, 100.0, 4.0, 20.0), None),  # n < 2
        (UnitSums(50), UnitSums(50), None),  # nothing shown (s == 0)
        (UnitSums(50, 500.0, 0.0, 5000.0, 0.0, 0.0), UnitSums(50, 500.0, 0.0, 5000.0, 0.0, 0.0), 0.01),  # V == 0
        (UnitSums(50, 500.0, 0.0, 5000.0, 0.0, 0.0), UnitSums(50, 500.0, 30.0, 5000.0, 40.0, 300.0), None),  # R_A == 0
    ],
)
def test_degenerate_data_says_too_little(a: UnitSums, b: UnitSums, tau: float | None) -> None:
    c = compare(a, b, tau=tau)
    assert c.reason == "too little data" and not c.decided and c.winner is None
    assert c.p_value == 1.0 and (c.lo, c.hi) == (-math.inf, math.inf) and c.more_needed is None
    assert c.describe(("control", "test")) == "not yet: too little data"


def test_a_zero_control_rate_with_tau_compares_absolute_differences() -> None:
    a = UnitSums(500, 5000.0, 0.0, 50000.0, 0.0, 0.0)
    b = UnitSums()
    b.add_many([10] * 500, [1, 0, 2, 1] * 125)
    c = compare(a, b, tau=0.01)
    assert c.reason is None and c.winner == "b" and math.isnan(c.lift)
    assert c.describe() == "B beats A by 0.100 (95 % always-valid interval 0.0904 to 0.110), decided"


def test_bad_parameters_raise() -> None:
    a, b = grouped([1, 0, 2, 1], [1, 1, 2, 1], 50)
    for alpha in (0.0, 0.5, -1.0, math.nan):
        with pytest.raises(ValueError, match="alpha"):
            compare(a, b, alpha=alpha)
    for tau in (0.0, -0.1, math.inf, math.nan):
        with pytest.raises(ValueError, match="tau"):
            compare(a, b, tau=tau)


def test_describe_rounds_counts_to_two_figures() -> None:
    for more, text in [(0.4, "1"), (37.0, "37"), (4249.0, "4,200"), (1_234_567.0, "1,200,000")]:
        line = Comparison(0.01, -0.01, 0.03, 0.1, -0.1, 0.3, 0.5, False, None, more).describe()
        assert line.startswith(f"not yet: about {text} more impressions (")


# -- off-policy estimate of the exploration rate --------------------------------------------

P_PLAIN, P_EXPLORED, SLOTS = 0.06, 0.035, 10  # click rate per item; items per list


def exploration_log(rng: np.random.Generator, n: int, eps: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lists of 10 items; an explored list (probability eps) clicks less, and its clicks
    are more spread (a share of its lists get nothing). Reward = clicks / items shown."""
    eps = np.broadcast_to(np.asarray(eps, dtype=np.float64), (n,))
    explored = rng.random(n) < eps
    plain = rng.binomial(SLOTS, P_PLAIN, n)
    lucky = rng.random(n) < 0.5  # explored: half the lists at twice the rate, half at none
    wild = np.where(lucky, rng.binomial(SLOTS, 2 * P_EXPLORED, n), 0)
    return explored, eps.copy(), np.where(explored, wild, plain) / SLOTS


def truth(target: float) -> float:
    return target * P_EXPLORED + (1 - target) * P_PLAIN


@pytest.mark.parametrize("target", [0.05, 0.5])
def test_ips_and_snips_cover_the_true_value(target: float) -> None:
    rng = np.random.default_rng(8)
    est = ips(*exploration_log(rng, 20_000, 0.2), target=target)
    assert est.n == 20_000 and est.dropped == 0
    assert est.ips_lo <= truth(target) <= est.ips_hi
    assert est.snips_lo <= truth(target) <= est.snips_hi
    assert 0 < est.ess < est.n
    # Over repeated logs of 2000 lists, both intervals cover about 95 % of the time.
    hits = np.zeros(2)
    reps = 400
    for _ in range(reps):
        e = ips(*exploration_log(rng, 2000, 0.2), target=target)
        hits += [e.ips_lo <= truth(target) <= e.ips_hi, e.snips_lo <= truth(target) <= e.snips_hi]
    assert np.all((0.92 <= hits / reps) & (hits / reps <= 0.98)), hits / reps


def test_snips_is_the_ratio_metric_of_weighted_rewards_to_weights() -> None:
    # Σw·r / Σw is a ratio over lists, so its delta-method interval is ratio()'s with
    # s = w and c = w·r. A log with few explored lists keeps mean(w) away from 1.
    rng = np.random.default_rng(12)
    explored, eps, reward = exploration_log(rng, 400, 0.2)
    explored[:200] = False
    target = 0.5
    w = np.where(explored, target / eps, (1 - target) / (1 - eps))
    assert abs(w.mean() - 1) > 0.1
    us = UnitSums()
    us.add_many(w, w * reward)
    est = ips(explored, eps, reward, target=target)
    lo, hi = interval95(ratio(us))
    assert (est.snips_lo, est.snips, est.snips_hi) == pytest.approx((lo, ratio(us).value, hi), rel=1e-9)
    assert est.ips == pytest.approx(float((w * reward).mean()), rel=1e-12)
    assert est.ess == pytest.approx(w.sum() ** 2 / (w @ w), rel=1e-12)


def test_snips_moves_with_a_shifted_reward_and_keeps_its_width() -> None:
    # Self-normalised: adding 1 to every reward adds 1 to the estimate and leaves its
    # interval as wide; plain IPS is not so (its weights do not average to 1 exactly).
    rng = np.random.default_rng(11)
    explored, eps, reward = exploration_log(rng, 5000, 0.2)
    est, up = ips(explored, eps, reward, target=0.5), ips(explored, eps, reward + 1.0, target=0.5)
    assert up.snips == pytest.approx(est.snips + 1.0, rel=1e-12)
    assert up.snips_hi - up.snips == pytest.approx(est.snips_hi - est.snips, rel=1e-9)
    assert up.ips_hi - up.ips > 5 * (est.ips_hi - est.ips)


def test_ips_with_a_rate_logged_per_list() -> None:
    rng = np.random.default_rng(9)
    eps = rng.choice([0.1, 0.2, 0.4], 20_000)
    explored, logged, reward = exploration_log(rng, 20_000, eps)
    est = ips(explored, logged, reward, target=0.3)
    assert est.ips_lo <= truth(0.3) <= est.ips_hi
    assert est.snips_lo <= truth(0.3) <= est.snips_hi
    # The plain mean estimates the logged mix of rates (0.233 on average), not 0.3.
    assert abs(float(reward.mean()) - truth(0.3)) > est.snips_hi - est.snips


def test_target_equal_to_the_logged_rate_gives_the_mean_reward() -> None:
    rng = np.random.default_rng(10)
    explored, eps, reward = exploration_log(rng, 3000, 0.2)
    est = ips(explored, eps, reward, target=0.2)
    assert est.ips == pytest.approx(reward.mean(), rel=1e-12)
    assert est.snips == pytest.approx(reward.mean(), rel=1e-12)
    assert est.ess == pytest.approx(3000)
    half = Z95 * reward.std(ddof=1) / math.sqrt(3000)
    assert est.ips_hi - est.ips == pytest.approx(half, rel=1e-9)
    assert est.snips_hi - est.snips == pytest.approx(half, rel=1e-9)


def test_ips_refuses_what_it_cannot_estimate() -> None:
    explored, eps, reward = [True, False, False], [0.2, 0.2, 0.2], [0.1, 0.0, 0.2]
    for target in (-0.1, 1.1, math.nan, math.inf, "0.5", None):
        with pytest.raises(ValueError, match=r"target exploration rate must be a number in \[0, 1\]"):
            ips(explored, eps, reward, target=target)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1-D of one length"):
        ips(explored, eps[:2], reward, target=0.1)
    with pytest.raises(ValueError, match="probability"):
        ips(explored, [0.2, 1.5, 0.2], reward, target=0.1)
    with pytest.raises(ValueError, match="finite"):
        ips(explored, eps, [0.1, math.nan, 0.2], target=0.1)
    with pytest.raises(ValueError, match="explored with eps = 0"):
        ips([True, False], [0.0, 0.2], [0.1, 0.0], target=0.1)
    with pytest.raises(ValueError, match="booleans"):
        ips([2, 0], [0.2, 0.2], [0.1, 0.0], target=0.1)


def test_unsupported_lists_raise_or_are_dropped() -> None:
    explored = [False, False, True, False, True]
    eps = [0.0, 0.0, 0.5, 0.5, 1.0]
    reward = [0.3, 0.1, 0.2, 0.0, 0.4]
    with pytest.raises(ValueError, match=r"unsupported by 3 list\(s\)"):
        ips(explored, eps, reward, target=0.1)
    est = ips(explored, eps, reward, target=0.1, drop_unsupported=True)
    kept = ips(explored[2:4], eps[2:4], reward[2:4], target=0.1)
    assert est.dropped == 3 and est.n == 2
    assert (est.ips, est.snips, est.ess) == (kept.ips, kept.snips, kept.ess)
    # eps = 0 supports target 0, eps = 1 supports target 1.
    assert ips([False, False], [0.0, 0.0], [0.1, 0.3], target=0.0).ips == pytest.approx(0.2)
    assert ips([True, True], [1.0, 1.0], [0.1, 0.3], target=1.0).snips == pytest.approx(0.2)
    with pytest.raises(ValueError, match="no lists"):
        ips([False], [0.0], [0.1], target=0.5, drop_unsupported=True)


def test_ips_small_and_empty_inputs() -> None:
    one = ips([True], [0.5], [0.2], target=0.25)
    assert one.ips == pytest.approx(0.1) and (one.ips_lo, one.ips_hi) == (-math.inf, math.inf)
    with pytest.raises(ValueError, match="no lists"):
        ips([], [], [], target=0.5)
    # target 1 with no explored list: no weight at all, so no self-normalised estimate.
    none = ips([False, False], [0.2, 0.2], [0.1, 0.3], target=1.0)
    assert none.ips == 0.0 and math.isnan(none.snips) and none.ess == 0.0
