"""Statistics of n runs: mean, spread, a confidence interval, and the one-sided t-test against 94%.

For accuracies x_1..x_n (fractions; the target is 0.94):
    mean m = sum(x) / n,   sample std s = sqrt(sum((x - m)^2) / (n - 1)),
    95% CI of the mean:    m -+ t(0.975; n-1) * s / sqrt(n),
    one-sided test of H1 "mean > 0.94" against H0 "mean <= 0.94":
        t = (m - 0.94) / (s / sqrt(n)),   p = P(T >= t) for T ~ Student t with n - 1 degrees of freedom.
p < 0.05 is reported as "mean >= 94% shown". p >= 0.05 shows nothing either way: it is not evidence that the
mean is below 94%. The same test with more runs at the same m and s has a larger t and more degrees of freedom,
so p falls as n grows; runs_needed() finds the smallest n with p < 0.05 (as modded-nanogpt record READMEs do).

compare() is Welch's t-test, which does not assume equal variances:
    t = (m_b - m_a) / sqrt(v_a/n_a + v_b/n_b),
    df = (v_a/n_a + v_b/n_b)^2 / ((v_a/n_a)^2/(n_a-1) + (v_b/n_b)^2/(n_b-1)),   p = 2 * P(T >= |t|).
Only the t distribution's quantile and tail come from scipy; the rest is written out here.
"""
import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import t as student_t

TARGET = 0.94  # the speedrun's accuracy goal, as a fraction
ALPHA = 0.05   # one-sided significance level of the verdict
# The runs a claim of mean >= TARGET takes, fixed before the runs: a p-value read after each seed, stopping at the
# first below ALPHA, passes by chance more often than ALPHA. A verdict passed at fewer says so.
CONFIRM_N = 10
AT_TARGET_SLACK = 1e-6  # a float32 9400/10000 is 0.93999999..; accuracies step by 1e-4, so this counts it


@dataclass
class Summary:
    n: int
    mean: float
    std: float               # sample std (n - 1); nan for n = 1
    ci_low: float            # 95% t-interval of the mean; nan for n = 1
    ci_high: float
    p: float                 # P(T >= t) under H0 "mean <= target"; nan for n = 1
    runs_needed: int | None  # smallest n with p < ALPHA at this mean and std; None: never (mean <= target)
    share_at_target: float   # share of runs with accuracy >= target
    time_median: float
    time_min: float
    time_max: float


def values(rows, key):
    return np.array([row[key] for row in rows], dtype=float)


def mean_std(x):
    if len(x) > 1 and np.ptp(x) == 0:  # identical runs: the sum's rounding would make a tiny nonzero std
        return float(x[0]), 0.0
    mean = float(np.sum(x) / len(x))
    std = math.sqrt(float(np.sum((x - mean) ** 2)) / (len(x) - 1)) if len(x) > 1 else math.nan
    return mean, std


def t_test_greater(mean, std, n, target=TARGET):
    """p = P(T >= t) of the one-sided one-sample t-test of H1 "mean > target"; nan below 2 runs."""
    if n < 2 or math.isnan(std):
        return math.nan
    if std == 0:  # identical runs: t is +-infinity (or undefined at the target, where nothing is shown)
        return 0.0 if mean > target else 1.0
    t = (mean - target) / (std / math.sqrt(n))
    return float(student_t.sf(t, n - 1))


def runs_needed(mean, std, target=TARGET, alpha=ALPHA):
    """Smallest n for which runs with this mean and std would give p < alpha; None if mean <= target."""
    if not mean > target or math.isnan(std):
        return None

    def shown(n):
        return t_test_greater(mean, std, n, target) < alpha
    low, high = 1, 2  # shown(low) is False (one run tests nothing); double high until shown, then bisect
    while not shown(high):
        low, high = high, 2 * high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if shown(middle) else (middle, high)
    return high


def confidence_interval(mean, std, n, level=0.95):
    if n < 2:
        return math.nan, math.nan
    half = float(student_t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return mean - half, mean + half


def describe(rows, key='tta_val_acc', target=TARGET):
    """Summary of the runs in `rows` (dicts with `key` and 'time_seconds'); at least one row."""
    x, seconds = values(rows, key), values(rows, 'time_seconds')
    mean, std = mean_std(x)
    ci_low, ci_high = confidence_interval(mean, std, len(x))
    return Summary(n=len(x), mean=mean, std=std, ci_low=ci_low, ci_high=ci_high,
                   p=t_test_greater(mean, std, len(x), target), runs_needed=runs_needed(mean, std, target),
                   share_at_target=float(np.mean(x >= target - AT_TARGET_SLACK)), time_median=float(np.median(seconds)),
                   time_min=float(seconds.min()), time_max=float(seconds.max()))


def compare(rows_a, rows_b, key='tta_val_acc'):
    """B against A: difference of means (b - a), Welch's two-sided p, and the time ratio median_b / median_a."""
    a, b = values(rows_a, key), values(rows_b, key)
    (mean_a, std_a), (mean_b, std_b) = mean_std(a), mean_std(b)
    diff = mean_b - mean_a
    p, df = math.nan, math.nan
    if len(a) > 1 and len(b) > 1:
        se_a, se_b = std_a ** 2 / len(a), std_b ** 2 / len(b)  # squared standard errors of the two means
        if se_a + se_b == 0:
            p = 1.0 if diff == 0 else 0.0
        else:
            df = (se_a + se_b) ** 2 / (se_a ** 2 / (len(a) - 1) + se_b ** 2 / (len(b) - 1))
            p = float(2 * student_t.sf(abs(diff) / math.sqrt(se_a + se_b), df))
    time_a, time_b = (float(np.median(values(rows, 'time_seconds'))) for rows in (rows_a, rows_b))
    # A median time of 0 s (a log edited by hand, a timer that never ran) leaves the ratio undefined, not inf.
    time_ratio = time_b / time_a if time_a > 0 else math.nan
    return {'n_a': len(a), 'n_b': len(b), 'mean_a': mean_a, 'mean_b': mean_b, 'diff': diff, 'p': p, 'df': df,
            'time_ratio': time_ratio}


def format_p(p):
    return 'n/a' if math.isnan(p) else 'p<0.0001' if p < 1e-4 else f'p={p:.2g}'


def format_percent(x, digits=2):
    return 'n/a' if math.isnan(x) else f'{100 * x:.{digits}f}%'


def verdict(s, target=TARGET, alpha=ALPHA):
    """One line: whether the runs show mean >= target at level alpha, phrased so "not shown" is not read as
    "shown below"."""
    goal = format_percent(target, 0)
    if s.n < 2:
        return f'not shown: n={s.n}, the t-test needs at least 2 runs'
    if s.std == 0:  # t is infinite (or 0/0): its p says nothing about the runs' spread, which is unmeasured
        return f'not tested: the t-test is degenerate (all {s.n} runs equal, {format_percent(s.mean)}; std 0)'
    if s.p < alpha:
        return (f'mean {format_percent(s.mean)} >= {goal} shown (one-sided t-test {format_p(s.p)}, n={s.n})'
                + f', but n < {CONFIRM_N}: a claim takes n >= {CONFIRM_N} runs, fixed before them' * (s.n < CONFIRM_N))
    more = ('more runs cannot show it at this mean' if s.runs_needed is None
            else f'about {s.runs_needed} runs at this mean and std would')
    return f'mean >= {goal} not shown: mean {format_percent(s.mean)} ({format_p(s.p)}, n={s.n}); {more}'


def format_summary(s, target=TARGET):
    ci = 'n/a' if s.n < 2 else f'{format_percent(s.ci_low)} to {format_percent(s.ci_high)}'
    return (f'n={s.n}, mean {format_percent(s.mean)} (95% CI {ci}), std {format_percent(s.std)}, '
            f'{s.share_at_target:.0%} of runs >= '
            f'{format_percent(target, 0)}, time median {s.time_median:.2f} s ({s.time_min:.2f} to {s.time_max:.2f})')


def format_comparison(c):
    # Welch's test with no spread on either side has df 0/0: degenerate, as the one-sample test is (verdict).
    degenerate = c['n_a'] > 1 and c['n_b'] > 1 and math.isnan(c['df'])
    welch = ('Welch test degenerate: all runs of A equal, and all of B' if degenerate
             else f'Welch two-sided {format_p(c["p"])}')
    ratio = ('undefined (the median time of A is 0 s)' if math.isnan(c['time_ratio'])
             else f'{c["time_ratio"]:.3f}')
    return (f'B - A: {100 * c["diff"]:+.2f} points of accuracy ({welch}, n={c["n_a"]} and {c["n_b"]}); '
            f'time B / A: {ratio}')
