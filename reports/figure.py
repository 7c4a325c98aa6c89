"""Time against accuracy for every rung, full precision and ternary, with 95% confidence intervals.

One panel per hardware (timings are compared within one device only). matplotlib is optional: without it the
command fails with one line saying how to install it.
"""
from pathlib import Path

from common.errors import UserError
from common.files import atomic_output
from reports.ladder import LADDER, find_rung
from reports.logs import collect, script_order
from stats.summary import TARGET, describe

MISSING = 'matplotlib is not installed: pip install matplotlib'


def points(logs, variant):
    """(label, in the ladder?, median time, mean accuracy, CI half-width) per script of one variant, in order."""
    found = []
    for script, name in sorted(logs, key=lambda key: script_order(key[0])):
        if name == variant:
            s = describe(logs[(script, name)])
            rung = find_rung(script)
            label = rung.tag if rung and rung.tag else script.removesuffix('.py')
            half = 0.0 if s.n < 2 else (s.ci_high - s.ci_low) / 2
            found.append((label, rung in LADDER, s.time_median, 100 * s.mean, 100 * half))
    return found


MARKERS = 'osD^vP*X'


def draw_panel(axes, hardware, logs):
    """Every variant of the device's logs: full first, then ternary, then the others (ternary-kd, --variant ...)."""
    variants = sorted({name for _, name in logs}, key=lambda name: (name != 'full', name != 'ternary', name))
    for variant, marker in zip(variants, MARKERS * len(variants)):
        found = points(logs, variant)
        labels, in_ladder, times, means, halves = zip(*found)
        bars = axes.errorbar(times, means, yerr=halves, fmt=marker, capsize=3, label=variant)
        # A line joins the ladder's rungs in order; standalone scripts (ResNet-18) stand apart.
        ladder = [(x, y) for x, y, inside in zip(times, means, in_ladder) if inside]
        if ladder:
            axes.plot(*zip(*ladder), color=bars[0].get_color(), linewidth=1)
        for label, x, y in zip(labels, times, means):
            axes.annotate(label, (x, y), textcoords='offset points', xytext=(4, 4), fontsize=7)
    axes.axhline(100 * TARGET, color='gray', linestyle='--', linewidth=1)
    axes.set(title=hardware, xlabel='median time (s)', ylabel='TTA accuracy (%), mean and 95% CI')
    axes.legend()


def plot_ladder(results, out, include_cpu=False):
    """Writes the figure to `out`; returns the message to print. No figure is a UserError: a script that asked
    for one must see it fail, not exit 0."""
    found = collect(results, include_cpu)
    if not found:
        which = (f'logs under {results}' if include_cpu
                 else f'GPU logs under {results} (CPU smoke-test logs need --include-cpu)')
        raise UserError(f'nothing to plot: no {which}: run a rung first, or pass --results DIR')
    try:
        import matplotlib
        matplotlib.use('Agg')  # files only, no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError(MISSING) from None
    image_format = check_image_format(out)
    fig, axes = plt.subplots(1, len(found), figsize=(6 * len(found), 4.5), squeeze=False)
    for panel, hardware in zip(axes[0], sorted(found)):
        draw_panel(panel, hardware, found[hardware])
    fig.tight_layout()
    with atomic_output(out, 'the figure') as tmp:  # a full disk or a read-only folder: one line, no half image
        fig.savefig(tmp, format=image_format, dpi=150)
    plt.close(fig)
    return f'wrote {out}'


def check_image_format(out):
    """The format named by `out`'s suffix; one matplotlib cannot write is refused before anything is drawn."""
    from matplotlib.backend_bases import FigureCanvasBase
    supported = FigureCanvasBase.get_supported_filetypes()
    image_format = Path(out).suffix.removeprefix('.').lower()
    if image_format not in supported:
        raise UserError(f'--out {out}: expected an image file name ending in .png, .svg or .pdf (or '
                        f'{", ".join("." + name for name in sorted(supported) if name not in ("png", "svg", "pdf"))})')
    return image_format
