"""A matplotlib figure docked in a widget, styled to sit in napari's dark theme."""

from __future__ import annotations

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

_FOREGROUND = "#d0d0d0"
_BACKGROUND = "#262930"


class PlotCanvas(QWidget):
    """A matplotlib canvas; draw with :meth:`subplots`, then :meth:`draw`.

    Parameters
    ----------
    height : figure height in inches (width follows the dock).
    """

    def __init__(self, height=2.6, parent=None):
        super().__init__(parent)
        self.figure = Figure(figsize=(4.0, height), facecolor=_BACKGROUND, layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.canvas.setMinimumHeight(int(height * 60))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)

    def subplots(self, nrows=1, ncols=1):
        """Clear the figure and return ``nrows * ncols`` fresh axes (a flat list, row by row)."""
        self.figure.clear()
        self.figure.set_layout_engine("constrained")
        axes = [self.figure.add_subplot(nrows, ncols, i + 1) for i in range(nrows * ncols)]
        for ax in axes:
            ax.set_facecolor(_BACKGROUND)
            ax.tick_params(colors=_FOREGROUND, labelsize=7)
            for spine in ax.spines.values():
                spine.set_color(_FOREGROUND)
            for label in (ax.xaxis.label, ax.yaxis.label):  # 8 pt: three panels' labels fit a dock's width
                label.set_color(_FOREGROUND)
                label.set_fontsize(8)
            ax.title.set_color(_FOREGROUND)
        return axes

    def draw(self, relayout=True):
        """Render the figure (legends get the dark style too).

        ``relayout=False`` keeps the axes where they are (no constrained-layout pass): several
        times cheaper, for live updates of data whose labels do not change.
        """
        self.figure.set_layout_engine("constrained" if relayout else "none")
        for ax in self.figure.axes:
            legend = ax.get_legend()
            if legend is not None:
                legend.get_frame().set_facecolor(_BACKGROUND)
                for text in (*legend.get_texts(), legend.get_title()):
                    text.set_color(_FOREGROUND)
        if relayout:  # a finished plot now: a draw left pending could outlive a closed widget
            self.canvas.draw()
        else:  # live updates: coalesced
            self.canvas.draw_idle()

    def has_data(self) -> bool:
        """Whether any axes hold plotted lines, bars or images."""
        return any(ax.lines or ax.patches or ax.images or ax.collections for ax in self.figure.axes)
