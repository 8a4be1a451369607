"""Drawings of convolution arithmetic: Dumoulin & Visin-style diagrams, animations, an explorer.

The pictures of notebook 02, kept apart from the formulas (:mod:`cvdl.arith`) so that the formulas
import without matplotlib. Every size drawn comes from :mod:`cvdl.arith`.

- :class:`ConvDiagram` — one square convolution (or transposed convolution) as two grids;
- :func:`draw_conv` — a static diagram with the kernel at one output position;
- :func:`animate_conv` — the kernel sliding over the input (``matplotlib.animation``);
- :func:`explore`, :func:`explorer` — the arithmetic written out plus its diagram, and an
  ``ipywidgets`` explorer with sliders around it.

>>> fig = draw_conv(7, 3, s=2, position=4)
>>> HTML(animate_conv(5, 3, s=2, p=1).to_jshtml())
"""
from __future__ import annotations

from . import _checks
from .arith import conv_output_size, describe, effective_kernel_size, transposed_as_conv

__all__ = ["ConvDiagram", "draw_conv", "animate_conv", "explore", "explorer"]


# --------------------------------------------------------------------------- diagrams

# Dumoulin & Visin's colours: blue input, cyan output, dashed white padding, dark kernel shadow
_IN, _IN_HI = "#5b9bd5", "#1f4e79"
_PAD, _PAD_HI = "#ffffff", "#9fb7cc"
_OUT, _OUT_HI = "#a9e4e0", "#138d84"


class ConvDiagram:
    """A Dumoulin & Visin-style diagram of one square convolution (or transposed convolution).

    Left: the (padded, for transposed: zero-stretched and padded) input grid; blue cells are
    input pixels, white dashed cells are zeros. Right: the output grid. ``show(t)`` shades the
    kernel's taps for output position ``t`` (row-major) and the output cell they produce.

    Every size comes from this module's arithmetic: the output grid is
    ``conv_output_size(i, k, s, p, d)`` (or ``transposed_output_size``) cells wide.

    Attributes:
        grid: side of the left grid (i + 2p; for transposed the ``StretchedConv`` total).
        output: side of the output grid.
        step: stride of the convolution drawn on the left grid (1 for transposed).
        real: ``grid × grid`` booleans, True where the left grid holds an input pixel.
        fig, ax_in, ax_out: the matplotlib figure and its two axes.
    """

    def __init__(self, i: int, k: int, s: int = 1, p: int = 0, d: int = 1, *, transposed: bool = False,
                 output_padding: int = 0, cell: float = 0.3, dpi: int = 72, title: str | None = None):
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle

        self.i, self.k, self.s, self.p, self.d = i, k, s, p, d
        self.transposed, self.output_padding = transposed, output_padding
        if transposed:
            eq = transposed_as_conv(i, k, s, p, d, output_padding)
            if eq.pad_before < 0:
                raise ValueError(f"cannot draw a transposed convolution whose padding p = {p} exceeds k̂ − 1 = "
                                 f"{effective_kernel_size(k, d) - 1} (the equivalent convolution would crop)")
            self.grid, self.output, self.step = eq.pad_before + eq.stretched + eq.pad_after, eq.output, 1
            first, pitch = eq.pad_before, s
        else:
            if output_padding:
                raise ValueError(f"output_padding only applies to transposed convolutions, got {output_padding}")
            self.output = conv_output_size(i, k, s, p, d)
            self.grid, self.step = i + 2 * p, s
            first, pitch = p, 1
        # real[r][c]: does grid cell (r, c) hold an input pixel (rather than a padding/stretch zero)?
        pos = {first + n * pitch: n for n in range(i)}  # grid coordinate -> input coordinate
        self._to_input = pos
        self.real = [[r in pos and c in pos for c in range(self.grid)] for r in range(self.grid)]

        g, o = self.grid, self.output
        # figure size in inches from the grid sizes: `cell` inches per cell, room for titles
        width, height = (g + o + 2) * cell + 0.3, max(g, o) * cell + 0.75
        self.fig, (self.ax_in, self.ax_out) = plt.subplots(
            1, 2, figsize=(width, height), dpi=dpi, gridspec_kw={"width_ratios": [g, o], "wspace": 0.1})
        self.fig.subplots_adjust(left=0.15 / width, right=1 - 0.15 / width, bottom=0.1 / height,
                                 top=1 - 0.6 / height)
        self._in_cells, self._out_cells = {}, {}
        for ax, n in ((self.ax_in, g), (self.ax_out, o)):
            ax.set_xlim(-0.1, n + 0.1)
            ax.set_ylim(n + 0.1, -0.1)  # row 0 at the top, like an image
            ax.set_aspect("equal")
            ax.axis("off")
        for r in range(g):
            for c in range(g):
                real = self.real[r][c]
                rect = Rectangle((c, r), 1, 1, facecolor=_IN if real else _PAD, edgecolor="#333333",
                                 linewidth=0.6, linestyle="-" if real else (0, (2, 2)))
                self.ax_in.add_patch(rect)
                self._in_cells[(r, c)] = rect
        for r in range(o):
            for c in range(o):
                rect = Rectangle((c, r), 1, 1, facecolor=_OUT, edgecolor="#333333", linewidth=0.6)
                self.ax_out.add_patch(rect)
                self._out_cells[(r, c)] = rect
        kh = effective_kernel_size(k, d)
        self._window = Rectangle((0, 0), kh, kh, fill=False, edgecolor="#c0392b", linewidth=1.4, zorder=3)
        self.ax_in.add_patch(self._window)  # outline of the k̂ × k̂ window the kernel spans
        kind = "transposed conv" if transposed else "conv"
        extra = f", a={output_padding}" if transposed else ""
        self.fig.suptitle(title or f"{kind}: i={i}, k={k}, s={s}, p={p}, d={d}{extra}  →  {o}×{o}", fontsize=9)
        self.ax_in.set_title(f"input {g}×{g}" + (" (stretched+padded)" if transposed else
                                                 (" (padded)" if p else "")), fontsize=8)
        self.ax_out.set_title(f"output {o}×{o}", fontsize=8)
        self.index = None

    @property
    def n_positions(self) -> int:
        """Number of output positions (output²)."""
        return self.output * self.output

    def taps(self, t: int) -> list[tuple[int, int]]:
        """Grid cells (row, col) under the kernel's taps for output position ``t`` (row-major)."""
        if not 0 <= t < self.n_positions:
            raise ValueError(f"position must be in [0, {self.n_positions}), got {t}")
        r0, c0 = divmod(t, self.output)
        rows = [r0 * self.step + a * self.d for a in range(self.k)]
        cols = [c0 * self.step + b * self.d for b in range(self.k)]
        return [(r, c) for r in rows for c in cols]

    def input_pixels(self, t: int) -> list[tuple[int, int]]:
        """Input pixels (row, col), in the *un*padded input's coordinates, that output ``t`` reads."""
        return sorted((self._to_input[r], self._to_input[c]) for r, c in self.taps(t) if self.real[r][c])

    def show(self, t: int) -> "ConvDiagram":
        """Shade the taps of output position ``t`` and that output cell; returns self."""
        hit = set(self.taps(t))
        for (r, c), rect in self._in_cells.items():
            real = self.real[r][c]
            if (r, c) in hit:
                rect.set_facecolor(_IN_HI if real else _PAD_HI)
            else:
                rect.set_facecolor(_IN if real else _PAD)
        target = divmod(t, self.output)
        self._window.set_xy((target[1] * self.step, target[0] * self.step))
        for rc, rect in self._out_cells.items():
            rect.set_facecolor(_OUT_HI if rc == target else _OUT)
        self.index = t
        return self

    def frame_positions(self, max_frames: int) -> list[int]:
        """At most ``max_frames`` output positions, evenly spread, first and last included."""
        n = self.n_positions
        _checks.positive_int(max_frames=max_frames)
        if max_frames >= n:
            return list(range(n))
        if max_frames == 1:
            return [0]
        return sorted({round(j * (n - 1) / (max_frames - 1)) for j in range(max_frames)})


def draw_conv(i: int, k: int, s: int = 1, p: int = 0, d: int = 1, *, transposed: bool = False,
              output_padding: int = 0, position: int = 0, dpi: int = 72, cell: float = 0.3):
    """A static diagram (see ``ConvDiagram``) with the kernel at output ``position``; returns the Figure."""
    diagram = ConvDiagram(i, k, s, p, d, transposed=transposed, output_padding=output_padding, dpi=dpi, cell=cell)
    return diagram.show(position).fig


def animate_conv(i: int, k: int, s: int = 1, p: int = 0, d: int = 1, *, transposed: bool = False,
                 output_padding: int = 0, max_frames: int = 9, dpi: int = 50, interval: int = 700,
                 cell: float = 0.3):
    """The kernel sliding over the input, as a ``matplotlib.animation.FuncAnimation``.

    Shows at most ``max_frames`` output positions (evenly spread) so the embedded HTML stays
    small. In a notebook: ``HTML(animate_conv(7, 3, s=2).to_jshtml())``. The figure is closed
    (only the animation draws it), and the ``ConvDiagram`` is ``anim.diagram``.
    """
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation

    diagram = ConvDiagram(i, k, s, p, d, transposed=transposed, output_padding=output_padding, dpi=dpi, cell=cell)
    positions = diagram.frame_positions(max_frames)

    def update(t):
        diagram.show(t)
        return [*diagram._in_cells.values(), *diagram._out_cells.values(), diagram._window]

    anim = FuncAnimation(diagram.fig, update, frames=positions, init_func=lambda: update(positions[0]),
                         interval=interval, blit=False, repeat=True)
    anim.diagram = diagram
    plt.close(diagram.fig)
    return anim


# --------------------------------------------------------------------------- explorer

def explore(i: int = 7, k: int = 3, s: int = 1, p: int = 0, d: int = 1, transposed: bool = False,
            output_padding: int = 0, show: bool = True) -> ConvDiagram | None:
    """Print the arithmetic for one configuration and draw its diagram (the explorer's body).

    Works without a notebook front end: an invalid configuration prints the error's
    message instead of raising, so a slider can pass through it. Returns the ``ConvDiagram``
    (its figure is ``.fig``), or None when the configuration is invalid. ``show=False`` closes
    the figure instead of showing it.
    """
    import matplotlib.pyplot as plt

    try:
        text = describe(i, k, s, p, d, transposed=transposed, output_padding=output_padding)
        diagram = ConvDiagram(i, k, s, p, d, transposed=transposed, output_padding=output_padding).show(0)
    except (TypeError, ValueError) as err:
        print(f"invalid configuration: {err}")
        return None
    print(text)
    if show:
        plt.show()
    else:
        plt.close(diagram.fig)
    return diagram


def explorer(i: int = 7, k: int = 3, s: int = 1, p: int = 0, d: int = 1, transposed: bool = False):
    """An ``ipywidgets.interactive`` around ``explore``: sliders for i, k, s, p, d, a toggle for
    transposed and a slider for its output padding. Display it in a notebook; without a front
    end, call ``explore()`` directly to get the same text and figure.
    """
    import ipywidgets as w

    def slider(value, lo, hi, label):
        return w.IntSlider(value=value, min=lo, max=hi, description=label, continuous_update=False)

    return w.interactive(
        explore,
        i=slider(i, 1, 12, "input i"), k=slider(k, 1, 7, "kernel k"), s=slider(s, 1, 4, "stride s"),
        p=slider(p, 0, 4, "padding p"), d=slider(d, 1, 3, "dilation d"),
        transposed=w.ToggleButton(value=transposed, description="transposed"),
        output_padding=slider(0, 0, 3, "out pad a"), show=w.fixed(True))
