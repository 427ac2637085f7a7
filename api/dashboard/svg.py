"""Small SVG charts built as strings on the server: the dashboard needs no JavaScript library, CDN or vendored file.

Each function returns one ``<svg>`` element sized in CSS pixels; labels are escaped here, so callers pass plain text.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

INK = "#1f2937"
MUTED = "#6b7280"
GRID = "#e5e7eb"
ACCENT = "#2563eb"
ACCENT_2 = "#f59e0b"
BAD = "#dc2626"


def _fmt(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def progress_bar(fraction: float, width: int = 180, height: int = 12, color: str = ACCENT) -> str:
    """A job's progress; ``fraction`` is clipped to [0, 1]."""
    f = min(1.0, max(0.0, fraction))
    return (
        f'<svg class="bar" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{f * 100:.0f}%">'
        f'<rect width="{width}" height="{height}" rx="{height / 2}" fill="{GRID}"/>'
        f'<rect width="{_fmt(width * f)}" height="{height}" rx="{height / 2}" fill="{color}"/></svg>'
    )


def heat_color(share: float) -> str:
    """White-ish for 0 through to a strong blue for 1 (linear in RGB: enough for a share)."""
    lo, hi = (241, 245, 249), (29, 78, 216)
    s = min(1.0, max(0.0, share))
    r, g, b = (round(a + (c - a) * s) for a, c in zip(lo, hi, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap(rows: Sequence[str], cols: Sequence[str], counts: Sequence[Sequence[int]], cell: int = 64) -> str:
    """Rows x columns of counts, each cell coloured by its share of the row (how the paper's Figure 6 reads)."""
    label_w = max([len(r) for r in rows] + [8]) * 7 + 16
    head_h = 34
    width = label_w + cell * max(1, len(cols)) + 4
    height = head_h + 30 * max(1, len(rows)) + 4
    parts = [
        f'<svg class="heatmap" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="share of each collection\'s searches answered by each expert">'
    ]
    for j, c in enumerate(cols):
        x = label_w + j * cell + cell / 2
        parts.append(f'<text x="{_fmt(x)}" y="{head_h - 10}" text-anchor="middle" class="axis">{escape(c)}</text>')
    for i, r in enumerate(rows):
        y = head_h + i * 30
        total = sum(counts[i])
        parts.append(f'<text x="{label_w - 8}" y="{y + 19}" text-anchor="end">{escape(r)}</text>')
        for j, c in enumerate(cols):
            n = counts[i][j]
            share = n / total if total else 0.0
            x = label_w + j * cell
            fill = heat_color(share) if total else "#f8fafc"
            text_color = "#ffffff" if share > 0.55 else INK
            shown = f"{share * 100:.0f}%" if total else "·"
            tip = f"{r} → {c}: {n} of {total} searches" + (f" ({share * 100:.1f}%)" if total else "")
            parts.append(
                f'<g class="cell" data-row="{escape(r)}" data-col="{escape(c)}" data-count="{n}" '
                f'data-share="{share:.4f}"><title>{escape(tip)}</title>'
                f'<rect x="{x + 1}" y="{y + 1}" width="{cell - 2}" height="28" rx="4" fill="{fill}"/>'
                f'<text x="{_fmt(x + cell / 2)}" y="{y + 19}" text-anchor="middle" fill="{text_color}" '
                f'class="num">{shown}</text></g>'
            )
    parts.append("</svg>")
    return "".join(parts)


def hbars(items: Sequence[tuple[str, float, str]], width: int = 320, color: str = ACCENT) -> str:
    """Horizontal bars: (label, value, text shown at the bar's end); scaled to the largest value."""
    label_w = max([len(lbl) for lbl, _, _ in items] + [6]) * 7 + 12
    text_w = max([len(t) for _, _, t in items] + [4]) * 6 + 12
    bar_w = max(40, width - label_w - text_w)
    top = max([v for _, v, _ in items] + [0.0])
    height = 22 * max(1, len(items)) + 4
    parts = [f'<svg class="hbars" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">']
    for i, (label, value, text) in enumerate(items):
        y = 2 + i * 22
        w = bar_w * value / top if top > 0 else 0.0
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end">{escape(label)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{bar_w}" height="14" rx="3" fill="{GRID}"/>'
            f'<rect x="{label_w}" y="{y + 3}" width="{_fmt(w)}" height="14" rx="3" fill="{color}"/>'
            f'<text x="{label_w + bar_w + 6}" y="{y + 14}" class="num">{escape(text)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _frame(width: int, height: int, top: float, unit: str, n: int, left: int, bottom: int) -> list[str]:
    """Axes shared by the per-minute charts: the largest value at the top, 'minutes ago' along the bottom."""
    return [
        f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" stroke="{GRID}"/>',
        f'<line x1="{left}" y1="6" x2="{width}" y2="6" stroke="{GRID}" stroke-dasharray="3 3"/>',
        f'<text x="{left - 4}" y="10" text-anchor="end" class="axis">{escape(_fmt(top))}{escape(unit)}</text>',
        f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end" class="axis">0</text>',
        f'<text x="{left}" y="{height - 2}" class="axis">−{n} min</text>',
        f'<text x="{width}" y="{height - 2}" text-anchor="end" class="axis">now</text>',
    ]


def columns(values: Sequence[float], width: int = 360, height: int = 90, unit: str = "", color: str = ACCENT) -> str:
    """One column per minute, oldest on the left."""
    left, bottom = 56, 16
    top = max([*values, 0.0]) or 1.0
    n = max(1, len(values))
    step = (width - left) / n
    plot_h = height - bottom - 6
    parts = [f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">']
    parts += _frame(width, height, top, unit, n, left, bottom)
    for i, v in enumerate(values):
        h = plot_h * v / top
        if h > 0:
            parts.append(
                f'<rect x="{_fmt(left + i * step + 0.5)}" y="{_fmt(height - bottom - h)}" '
                f'width="{_fmt(max(1.0, step - 1))}" height="{_fmt(h)}" fill="{color}"/>'
            )
    parts.append("</svg>")
    return "".join(parts)


def lines(
    series: Sequence[tuple[str, Sequence[float | None], str]], width: int = 360, height: int = 90, unit: str = ""
) -> str:
    """One polyline per (name, values per minute, colour); a None leaves a gap (a minute without data)."""
    left, bottom = 56, 16
    top = max([v for _, vs, _ in series for v in vs if v is not None] + [0.0]) or 1.0
    n = max(1, max((len(vs) for _, vs, _ in series), default=1))
    step = (width - left) / n
    plot_h = height - bottom - 6
    parts = [f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">']
    parts += _frame(width, height, top, unit, n, left, bottom)
    for name, values, color in series:
        run: list[str] = []
        for i, v in enumerate([*values, None]):
            if v is not None:
                run.append(f"{_fmt(left + (i + 0.5) * step)},{_fmt(height - bottom - plot_h * v / top)}")
                continue
            if len(run) == 1:
                x, y = run[0].split(",")
                parts.append(f'<circle cx="{x}" cy="{y}" r="2.5" fill="{color}"/>')
            elif run:
                parts.append(
                    f'<polyline points="{" ".join(run)}" fill="none" stroke="{color}" stroke-width="2">'
                    f"<title>{escape(name)}</title></polyline>"
                )
            run = []
    parts.append("</svg>")
    return "".join(parts)
