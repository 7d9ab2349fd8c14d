"""The viewer's plots, drawn on the server as inline SVG (no script, no plotting library).

- :func:`layer_plot`: one column a layer, its quartile box and median (F1 of its graphs, or its
  neurons' firing densities), the mean as a dot; hover a column for its numbers.
- :func:`histogram`: a neuron's activations over the corpus from the scan's quantiles: the share
  of tokens between each pair of quantiles (and above the last, up to the max), as bars of true
  density (share / width, on a log scale), and the firing threshold with the firing density.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape

from n2g_mcp.viewer.data import LayerRow, Spread
from store.metrics import FIRING_THRESHOLD
from store.scanfile import NeuronStats

WIDTH, HEIGHT = 720, 200
LEFT, BOTTOM, TOP = 48, 28, 12


def _frame(title: str, body: list[str], y_ticks: list[tuple[float, str]], x_label: str) -> str:
    ticks = "".join(f'<line x1="{LEFT - 4}" x2="{WIDTH}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                    f'<text x="{LEFT - 6}" y="{y:.1f}" text-anchor="end" dominant-baseline="central">{escape(s)}</text>'
                    for y, s in y_ticks)
    return (f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
            f'aria-label="{escape(title)}"><title>{escape(title)}</title>{ticks}{"".join(body)}'
            f'<text x="{(LEFT + WIDTH) / 2}" y="{HEIGHT - 4}" text-anchor="middle">{escape(x_label)}</text></svg>')


def layer_plot(rows: Sequence[LayerRow], pick: Callable[[LayerRow], Spread | None], title: str,
               fmt: str = "{:.2f}", top: float | None = None) -> str:
    """Each layer's spread of a figure (``pick``), as boxes from the lower to the upper quartile,
    on a scale from 0 to ``top`` (from the data where not given)."""
    spreads = [(r.layer, pick(r)) for r in rows]
    if top is None:
        top = max((max(s.high, s.mean) for _, s in spreads if s), default=0.0) * 1.1
    top = top if top > 0 else 1.0
    span = HEIGHT - BOTTOM - TOP

    def y(v: float) -> float:
        return TOP + span * (1 - min(max(v / top, 0.0), 1.0))

    step = (WIDTH - LEFT) / max(len(spreads), 1)
    body = []
    for i, (layer, s) in enumerate(spreads):
        x = LEFT + i * step
        label = f'<text x="{x + step / 2:.1f}" y="{HEIGHT - BOTTOM + 12}" text-anchor="middle">{layer}</text>' \
            if len(spreads) <= 32 or layer % 2 == 0 else ""
        if s is None:
            body.append(label)
            continue
        tip = (f"layer {layer}: median {fmt.format(s.median)}, quartiles {fmt.format(s.low)}-{fmt.format(s.high)}, "
               f"mean {fmt.format(s.mean)}, {s.count} neurons")
        w = step * 0.6
        body.append(f'<g class="layer"><title>{escape(tip)}</title>'
                    f'<rect x="{x + step * 0.2:.1f}" y="{y(s.high):.1f}" width="{w:.1f}" '
                    f'height="{max(y(s.low) - y(s.high), 1):.1f}" class="box"/>'
                    f'<line x1="{x + step * 0.2:.1f}" x2="{x + step * 0.8:.1f}" y1="{y(s.median):.1f}" '
                    f'y2="{y(s.median):.1f}" class="median"/>'
                    f'<circle cx="{x + step / 2:.1f}" cy="{y(s.mean):.1f}" r="2.5" class="mean"/></g>{label}')
    ticks = [(y(top * k / 4), fmt.format(top * k / 4)) for k in range(5)]
    return _frame(title, body, ticks, "layer")


def _bins(stats: NeuronStats) -> list[tuple[float, float, float, str]]:
    """(low, high, share of tokens, name) of each bin between quantiles, raw activations."""
    named = sorted(((float(k[1:]) / 100, v) for k, v in stats.quantiles.items()), key=lambda t: t[0])
    bins = []
    for (p0, v0), (p1, v1) in zip(named, named[1:], strict=False):
        bins.append((v0, v1, p1 - p0, f"p{p0 * 100:g}-p{p1 * 100:g}"))
    if named:
        p_last, v_last = named[-1]
        bins.append((v_last, max(stats.max_activation, v_last), 1 - p_last, f"above p{p_last * 100:g}"))
    return bins


def histogram(stats: NeuronStats) -> str:
    """The neuron's activation distribution over the scanned corpus, from its quantiles."""
    top = stats.max_activation if stats.max_activation > 0 else 1.0
    bins = _bins(stats)
    low = min([0.0] + [b[0] for b in bins])
    span_x, span_y = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP

    def x(v: float) -> float:
        return LEFT + span_x * (v - low) / (top - low)

    densities = [share / max((hi - lo) / top, 0.01) for lo, hi, share, _ in bins]
    floor = min((d for d in densities if d > 0), default=1e-4) / 3
    ceiling = max(densities, default=1.0)
    decades = max(math.log10(ceiling / floor), 1e-9)

    def y(d: float) -> float:
        return TOP + span_y * (1 - math.log10(max(d, floor) / floor) / decades)

    body = []
    for (lo, hi, share, name), d in zip(bins, densities, strict=True):
        left, right = x(lo), max(x(hi), x(lo) + 3)
        tip = f"{name}: {share:.2%} of tokens between {lo:.3g} and {hi:.3g} (raw)"
        body.append(f'<g class="bin"><title>{escape(tip)}</title><rect x="{left:.1f}" y="{y(d):.1f}" '
                    f'width="{right - left:.1f}" height="{HEIGHT - BOTTOM - y(d):.1f}" class="bar"/></g>')
    fire = x(FIRING_THRESHOLD * top)
    body.append(f'<line x1="{fire:.1f}" x2="{fire:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" class="threshold"/>'
                f'<text x="{fire + 4:.1f}" y="{TOP + 10}">fires (&gt;= {FIRING_THRESHOLD:g} of max): '
                f'{stats.density:.2%} of tokens</text>')
    for k in range(5):
        v = low + (top - low) * k / 4
        body.append(f'<text x="{x(v):.1f}" y="{HEIGHT - BOTTOM + 12}" text-anchor="middle">{v:.2f}</text>')
    return _frame("activation histogram", body, [(y(ceiling), "dense"), (y(floor), "rare")],
                  "raw activation (bars: share of corpus tokens per unit, log scale)")
