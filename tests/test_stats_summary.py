"""stats.summary against values computed by hand: the t distribution's tails and quantiles for 2, 3 and 4
degrees of freedom have closed forms, so the expected numbers below do not come from scipy."""
import math

import pytest

from stats.summary import compare, describe, runs_needed, t_test_greater, verdict


def rows(accuracies, seconds=None):
    seconds = seconds or [1.0] * len(accuracies)
    return [{'tta_val_acc': a, 'time_seconds': s} for a, s in zip(accuracies, seconds)]


def t2_sf(t):
    """P(T >= t), 2 degrees of freedom: the cdf is 1/2 + t / (2 sqrt(2 + t^2))."""
    return 0.5 - t / (2 * math.sqrt(2 + t * t))


def t2_quantile(q):
    """Inverse of the 2-dof cdf: t = a sqrt(2 / (1 - a^2)) with a = 2q - 1."""
    a = 2 * q - 1
    return a * math.sqrt(2 / (1 - a * a))


def test_describe_three_runs_by_hand():
    s = describe(rows([0.93, 0.95, 0.96], seconds=[3.0, 1.0, 2.0]))
    mean = (0.93 + 0.95 + 0.96) / 3
    std = math.sqrt(((0.93 - mean) ** 2 + (0.95 - mean) ** 2 + (0.96 - mean) ** 2) / 2)
    half = t2_quantile(0.975) * std / math.sqrt(3)
    assert t2_quantile(0.975) == pytest.approx(4.302653, abs=1e-6)  # the familiar table value
    assert s.n == 3 and s.mean == pytest.approx(mean) and s.std == pytest.approx(std)
    assert (s.ci_low, s.ci_high) == pytest.approx((mean - half, mean + half))
    assert s.p == pytest.approx(t2_sf((mean - 0.94) / (std / math.sqrt(3))))
    assert s.share_at_target == pytest.approx(2 / 3)
    assert (s.time_median, s.time_min, s.time_max) == (2.0, 1.0, 3.0)


def test_runs_needed_is_the_first_n_with_p_below_five_percent():
    # mean 0.95, std 0.01, so t = sqrt(n). n = 4: t = 2 with 3 dof, p = 1/2 - (x/(1+x^2) + atan(x))/pi at
    # x = 2/sqrt(3), = 0.0697. n = 5: t = sqrt(5) with 4 dof, p = 1/2 - (3/8) y (1 - y^2/12) at
    # y = t / sqrt(1 + t^2/4), = 0.0445.
    x = 2 / math.sqrt(3)
    y = math.sqrt(5) / math.sqrt(1 + 5 / 4)
    assert t_test_greater(0.95, 0.01, 4) == pytest.approx(0.5 - (x / (1 + x * x) + math.atan(x)) / math.pi)
    assert t_test_greater(0.95, 0.01, 5) == pytest.approx(0.5 - 3 / 8 * y * (1 - y * y / 12))
    assert runs_needed(0.95, 0.01) == 5
    s = describe(rows([0.94, 0.95, 0.96]))
    assert s.runs_needed == 5 and s.p == pytest.approx(t2_sf(math.sqrt(3)))
    assert verdict(s).startswith('mean >= 94% not shown') and 'about 5 runs' in verdict(s)


def test_verdict_shown_never_and_too_few_runs():
    shown = describe(rows([0.95, 0.951, 0.949, 0.952]))
    assert shown.p < 0.05 and verdict(shown).startswith('mean 95.05% >= 94% shown') and 'n=4' in verdict(shown)
    assert verdict(shown).endswith('but n < 10: a claim takes n >= 10 runs, fixed before them')  # stopping early
    assert verdict(describe(rows([0.95, 0.951, 0.949, 0.952] * 3))).endswith('n=12)')
    below = describe(rows([0.93, 0.935]))
    assert below.runs_needed is None and 'cannot show it' in verdict(below)
    single = describe(rows([0.95]))
    assert single.n == 1 and math.isnan(single.std) and math.isnan(single.p) and 'at least 2 runs' in verdict(single)


def test_identical_runs_have_zero_std():
    s = describe(rows([0.95, 0.95]))
    assert s.std == 0 and s.p == 0 and s.runs_needed == 2
    assert describe(rows([0.94, 0.94])).p == 1  # exactly at the target: nothing shown


@pytest.mark.parametrize('n', [2, 20, 23, 27, 31, 200])
def test_many_identical_runs_at_the_target_show_nothing(n):
    # np.sum of n copies of 0.94, divided by n, can miss 0.94 by an ulp: a 1e-16 std must not become a verdict
    s = describe(rows([0.94] * n))
    assert s.std == 0 and s.p == 1 and s.runs_needed is None and s.share_at_target == 1
    assert compare(rows([0.94] * 2), rows([0.94] * n))['p'] == 1


def test_a_float32_accuracy_of_exactly_94_percent_counts_as_at_the_target():
    float32_94 = 0.9399999976158142  # torch.tensor(0.94).item(), as a float32 mean of 9,400 hits in 10,000
    assert describe(rows([float32_94, 0.9399, 0.95])).share_at_target == pytest.approx(2 / 3)


def test_compare_equal_variances_by_hand():
    # n = 2 each with equal variances: Welch's df is exactly 2; t = 0.02 / sqrt(2e-4/2 + 2e-4/2) = sqrt(2).
    c = compare(rows([0.93, 0.95], seconds=[4.0, 2.0]), rows([0.95, 0.97], seconds=[1.0, 2.0]))
    assert c['diff'] == pytest.approx(0.02) and c['df'] == pytest.approx(2)
    assert c['p'] == pytest.approx(2 * t2_sf(math.sqrt(2)))
    assert c['p'] == pytest.approx(1 - 1 / math.sqrt(2))
    assert c['time_ratio'] == pytest.approx(1.5 / 3.0)


def test_compare_unequal_variances_matches_an_independent_implementation():
    scipy_stats = pytest.importorskip('scipy.stats')
    a, b = [0.93, 0.95, 0.94, 0.941], [0.94, 0.96, 0.98]
    c = compare(rows(a), rows(b))
    se_a = sum((x - sum(a) / 4) ** 2 for x in a) / 3 / 4  # squared standard error of each mean
    se_b = sum((x - sum(b) / 3) ** 2 for x in b) / 2 / 3
    assert c['df'] == pytest.approx((se_a + se_b) ** 2 / (se_a ** 2 / 3 + se_b ** 2 / 2))
    assert c['diff'] == pytest.approx(sum(b) / 3 - sum(a) / 4)
    assert c['p'] == pytest.approx(scipy_stats.ttest_ind(b, a, equal_var=False).pvalue)
