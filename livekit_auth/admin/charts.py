"""Daily line charts drawn as inline SVG: what the admin pages' charts are, before the template.

A day that dwarfs the rest (a load test, an incident) would flatten every other day to the
axis on a linear scale, so such data is drawn on a logarithmic one, and the axis says so.
"""

import math
from dataclasses import dataclass
from datetime import date

WIDTH, HEIGHT = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 36  # room for the labels around the plot
# A peak this many times the median of the other days with any use switches to a log scale.
DWARFING = 20


@dataclass
class Line:
    """One series: its CSS class, what it counts, and its points in SVG coordinates."""

    css_class: str
    label: str
    points: str


@dataclass
class LineChart:
    """Everything the template draws."""

    width: int
    height: int
    left: int
    right: int
    bottom: int
    logarithmic: bool
    gridlines: list[tuple[float, str]]
    day_labels: list[tuple[float, str]]
    lines: list[Line]
    first: date
    last: date


def nice_step(peak: float) -> int:
    """A round step (1, 2 or 5 times a power of ten) that cuts 0..peak into about four bands."""
    rough = max(peak / 4, 1)
    power = 10 ** math.floor(math.log10(rough))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= rough)


def daily_chart(days: list[date], series: list[tuple[str, str, list[int]]]) -> LineChart:
    """A chart of some daily series (CSS class, label, one value per day) over the same days."""
    values = [value for _, _, counts in series for value in counts]
    peak = max([1, *values])
    others = sorted(value for value in values if 0 < value < peak)
    logarithmic = bool(others) and peak > DWARFING * others[len(others) // 2]
    if logarithmic:
        top = 10 ** math.ceil(math.log10(peak + 1))
        ticks = [0] + [10**power for power in range(int(math.log10(top)) + 1)]
        scale = math.log10(top + 1)

        def height_of(value: float) -> float:
            return math.log10(value + 1) / scale
    else:
        step = nice_step(peak)
        top = step * math.ceil(peak / step)
        ticks = list(range(0, top + 1, step))

        def height_of(value: float) -> float:
            return value / top

    plot_height = HEIGHT - TOP - BOTTOM
    bottom_y = HEIGHT - BOTTOM
    step_x = (WIDTH - LEFT - RIGHT) / max(len(days) - 1, 1)

    def y(value: float) -> float:
        return round(bottom_y - height_of(value) * plot_height, 1)

    def x(index: int) -> float:
        return round(LEFT + index * step_x, 1)

    labelled = sorted({0, len(days) // 2, len(days) - 1})
    return LineChart(
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        right=WIDTH - RIGHT,
        bottom=bottom_y,
        logarithmic=logarithmic,
        gridlines=[(y(tick), f"{tick:,}") for tick in ticks],
        day_labels=[(x(index), days[index].strftime("%b %d")) for index in labelled],
        lines=[
            Line(css_class, label, " ".join(f"{x(i)},{y(value)}" for i, value in enumerate(counts)))
            for css_class, label, counts in series
        ],
        first=days[0],
        last=days[-1],
    )
