"""A neuron graph painted as PNG with Pillow, with no Graphviz and no system library.

In: a :class:`store.graph.NeuronGraph`. Out: PNG bytes (``to_png``) of the same placed drawing
as the SVG (``store.layout.scene_of``), measured with the font it is painted in, at ``scale``
pixels a layout pixel (2 by default, sharp enough for a slide).

Why Pillow: its wheels carry FreeType, zlib and libpng, and (from 10.1) a scalable font of their
own, so a fresh ``pip install`` paints text on a machine with no fonts and no Graphviz. Where the
machine has DejaVu Sans (most Linux desktops, the Debian image), it is used: it has the glyphs
the drawing needs (``␣``, ``↻``, ``→``, ``∅``). Pillow's own font lacks those four, so with it
they are painted as shapes (``␣``) or spelled in ASCII (the others) instead of as empty boxes.
Pillow is imported only here, when a PNG is asked for.
"""

from __future__ import annotations

import io
import math
from functools import cache
from pathlib import Path
from typing import Any

from store.graph import NeuronGraph
from store.layout import Box, Curve, Label, Scene, scene_of
from store.logitfile import OutputTokens
from store.render import NODES_DRAWN

SCALE = 2.0
"""Image pixels a layout pixel."""
SYSTEM_FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/Library/Fonts/DejaVuSans.ttf",
)
"""Fonts with every glyph the drawing uses, tried in order before Pillow's own."""
_ASCII = {"↻": "(r)", "→": "->", "∅": "(empty)"}
"""What Pillow's own font paints in place of the glyphs it lacks (``␣`` is painted as a shape)."""


def _pil() -> Any:
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError as exc:  # pillow is a dependency of n2g-mcp; a trimmed install may lack it
        raise RuntimeError("PNG needs Pillow: pip install pillow (or ask for SVG instead)") from exc
    return Image, ImageDraw, ImageFont


@cache
def _font_file() -> str | None:
    """The first system font of :data:`SYSTEM_FONTS` that exists, else None (Pillow's own)."""
    return next((path for path in SYSTEM_FONTS if Path(path).is_file()), None)


@cache
def _font(size: float, bold: bool = False) -> Any:
    _, _, ImageFont = _pil()
    path = _font_file()
    if path is not None:
        bold_path = path.replace("DejaVuSans.ttf", "DejaVuSans-Bold.ttf")
        return ImageFont.truetype(bold_path if bold and Path(bold_path).is_file() else path, round(size))
    return ImageFont.load_default(size=round(size))


def _pieces(text: str) -> list[str]:
    """The text split where a visible space ``␣`` stands, which the fallback font paints as a shape.

    >>> _pieces("␣from␣")
    ['␣', 'from', '␣']
    """
    out: list[str] = []
    for ch in text:
        if ch == "␣" or not out or out[-1] == "␣":
            out.append(ch)
        else:
            out[-1] += ch
    return out


def _spelled(text: str) -> str:
    return text if _font_file() else "".join(_ASCII.get(ch, ch) for ch in text)


def _width(text: str, size: float, bold: bool = False) -> float:
    """The text's width in layout pixels, in the font it will be painted in."""
    font = _font(size * SCALE, bold)
    if _font_file():
        return font.getlength(text) / SCALE
    return sum(font.getlength("n") if p == "␣" else font.getlength(p) for p in _pieces(_spelled(text))) / SCALE


def _measure(text: str, size: float) -> float:
    return _width(text, size)


def _paint_label(draw: Any, lb: Label) -> None:
    size = lb.size * SCALE
    font = _font(size, lb.bold)
    width = _width(lb.text, lb.size, lb.bold) * SCALE
    x = lb.x * SCALE - (width / 2 if lb.anchor == "middle" else 0.0)
    y = lb.y * SCALE
    if _font_file():
        draw.text((x, y), lb.text, font=font, fill=lb.colour, anchor="lm")
        return
    for piece in _pieces(_spelled(lb.text)):
        if piece == "␣":  # the open box of U+2423, drawn: a floor with two short walls
            w = font.getlength("n")
            base, wall = y + size * 0.32, size * 0.22
            draw.line([(x + 1, base - wall), (x + 1, base), (x + w - 1, base), (x + w - 1, base - wall)],
                      fill=lb.colour, width=max(1, round(size / 12)))
            x += w
        else:
            draw.text((x, y), piece, font=font, fill=lb.colour, anchor="lm")
            x += font.getlength(piece)


def _paint_box(draw: Any, b: Box) -> None:
    xy = [b.x * SCALE, b.y * SCALE, (b.x + b.w) * SCALE, (b.y + b.h) * SCALE]
    width = max(1, round(b.stroke_width * SCALE))
    if b.shape == "ellipse":
        draw.ellipse(xy, fill=b.fill, outline=b.stroke, width=width)
        if b.dashed:  # dashes: gaps painted over the outline in the fill colour
            cx, cy, rx, ry = (xy[0] + xy[2]) / 2, (xy[1] + xy[3]) / 2, (xy[2] - xy[0]) / 2, (xy[3] - xy[1]) / 2
            for k in range(0, 36, 2):
                a0, a1 = math.radians(k * 10), math.radians(k * 10 + 6)
                draw.line([(cx + rx * math.cos(a0), cy + ry * math.sin(a0)),
                           (cx + rx * math.cos(a1), cy + ry * math.sin(a1))], fill=b.fill, width=width + 2)
    elif b.shape == "rounded":
        draw.rounded_rectangle(xy, radius=6 * SCALE, fill=b.fill, outline=b.stroke, width=width)
    else:
        draw.rectangle(xy, fill=b.fill, outline=b.stroke, width=width)


def _paint_curve(draw: Any, c: Curve) -> None:
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = c.points
    steps = 24
    points = []
    for i in range(steps + 1):
        t = i / steps
        u = 1 - t
        points.append(((u**3 * x0 + 3 * u * u * t * x1 + 3 * u * t * t * x2 + t**3 * x3) * SCALE,
                       (u**3 * y0 + 3 * u * u * t * y1 + 3 * u * t * t * y2 + t**3 * y3) * SCALE))
    draw.line(points, fill=c.colour, width=max(1, round(1.2 * SCALE)), joint="curve")
    # The arrowhead, along the curve's last direction.
    angle = math.atan2(y3 - y2, x3 - x2) if (x3, y3) != (x2, y2) else 0.0
    tip, size = (x3 * SCALE, y3 * SCALE), 7 * SCALE
    left = (tip[0] - size * math.cos(angle - 0.4), tip[1] - size * math.sin(angle - 0.4))
    right = (tip[0] - size * math.cos(angle + 0.4), tip[1] - size * math.sin(angle + 0.4))
    draw.polygon([tip, left, right], fill=c.colour)


def scene_png(scene: Scene) -> bytes:
    """A scene painted as PNG bytes (measure the scene with :func:`_measure` so its text fits)."""
    Image, ImageDraw, _ = _pil()
    image = Image.new("RGB", (max(1, math.ceil(scene.width * SCALE)), max(1, math.ceil(scene.height * SCALE))),
                      "white")
    draw = ImageDraw.Draw(image)
    for c in scene.curves:
        _paint_curve(draw, c)
    for b in scene.boxes:
        _paint_box(draw, b)
    for lb in scene.labels:
        _paint_label(draw, lb)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def to_png(graph: NeuronGraph, *, max_nodes: int = NODES_DRAWN, output: OutputTokens | None = None) -> bytes:
    """A neuron graph painted as PNG, with the DOT picture's content (``store.render.to_dot``).

    Raises:
        ValueError: if ``max_nodes`` is less than 1.
        RuntimeError: where Pillow is not installed.
    """
    return scene_png(scene_of(graph, max_nodes=max_nodes, output=output, measure=_measure))
