"""Progress displays that listen to engine events: a tqdm bar and, in a notebook, a QPM gauge.

The terminal shows one tqdm bar of days with the live requests-per-minute in its postfix. In a
Jupyter kernel the bar is tqdm's widget and an ipywidgets gauge (a bar filled up to the QPM target
plus a label) sits under it. The engine never imports this module; it only emits events.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any, TextIO

from tqdm.auto import tqdm as auto_tqdm
from tqdm.std import tqdm as std_tqdm

from .events import Event


def in_notebook() -> bool:
    """True inside a Jupyter kernel (the same test tqdm.autonotebook uses)."""
    return "ipykernel" in sys.modules and "IPython" in sys.modules and _kernel_shell()


def _kernel_shell() -> bool:
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class QpmGauge:
    """An ipywidgets gauge: requests in the current window against the target."""

    def __init__(self, target: int) -> None:
        import ipywidgets as widgets

        self.target = target
        self.bar = widgets.FloatProgress(value=0, min=0, max=target, description="QPM",
                                         bar_style="info")
        self.label = widgets.HTML(value=f"0 / {target} per minute")
        self.box = widgets.HBox([self.bar, self.label])

    def show(self) -> None:
        from IPython.display import display

        display(self.box)

    def update(self, qpm: float, in_window: int, peak: int) -> None:
        self.bar.value = min(qpm, self.target)
        self.bar.bar_style = "warning" if in_window > self.target else "info"
        self.label.value = (f"{qpm:.0f} requests/min now; {in_window} in the current window "
                            f"(limit {self.target}, peak {peak})")


class Progress:
    """A listener that turns engine events into a progress bar and a QPM read-out."""

    def __init__(self, *, notebook: bool | None = None, file: TextIO | None = None,
                 mininterval: float = 0.2) -> None:
        self.notebook = in_notebook() if notebook is None else notebook
        self._file = file
        self._mininterval = mininterval
        self._bar: Any = None
        self._gauge: QpmGauge | None = None
        self._postfix: dict[str, Any] = {}
        self._counts: Counter[str] = Counter()
        self._shown_early = False

    def __repr__(self) -> str:
        return f"Progress(notebook={self.notebook})"

    @classmethod
    def auto(cls) -> Progress | None:
        """A display when someone can see it (a notebook or a terminal), else ``None``."""
        if in_notebook() or sys.stderr.isatty():
            return cls()
        return None

    def __call__(self, event: Event) -> None:
        data = event.data
        if event.kind == "run_start":
            self._start(data)
        elif self._bar is None:
            return
        elif event.kind in ("slice_done", "slice_failed"):
            if event.kind == "slice_failed":
                self._counts["failed"] += 1
            else:
                self._counts["rows"] += data["rows"]
            self._show_counts()
            self._bar.update(1)
        elif event.kind == "qpm":
            self._postfix["qpm"] = f"{data['qpm']:.0f}"
            self._postfix["window"] = f"{data['in_window']}/{data['target']}"
            self._bar.set_postfix(self._postfix)
            if self._gauge is not None:
                self._gauge.update(data["qpm"], data["in_window"], data["peak"])
        elif event.kind == "retry":
            self._counts["retries"] += 1
            self._show_counts()
        elif event.kind == "halt":
            self._bar.set_description("halted")
        elif event.kind == "run_end":
            self.close()

    def show(self, qpm: int) -> None:
        """Display the bar (and a notebook's gauge) now, before the run starts.

        A background job calls this in the cell that starts it: the display then lives in that
        cell whichever cell is running when the engine begins, and ``run_start`` sets the total.
        """
        self._start({"todo": None, "qpm": qpm})
        self._shown_early = True

    def _start(self, data: Any) -> None:
        if self._shown_early and self._bar is not None:
            self._shown_early = False
            self._bar.reset(total=data["todo"])
            self._counts = Counter(rows=0)
            return
        self.close()
        kwargs: dict[str, Any] = {"total": data["todo"], "unit": "day",
                                  "desc": "gsckit", "mininterval": self._mininterval}
        if self._file is not None:
            kwargs["file"] = self._file
        if self.notebook:
            self._bar = auto_tqdm(**kwargs)
            try:
                self._gauge = QpmGauge(int(data["qpm"]))
                self._gauge.show()
            except ImportError:
                self._gauge = None
        else:
            self._bar = std_tqdm(**kwargs)
        self._postfix = {"qpm": "0", "window": f"0/{data['qpm']}"}
        self._counts = Counter(rows=0)

    def _show_counts(self) -> None:
        # formatted here: tqdm prints a number in whichever of plain or %.3g is shorter, so a
        # growing count jumps between 1458386 and 1.5e+6
        self._postfix.update((name, f"{count:,}") for name, count in self._counts.items()
                             if count or name == "rows")
        self._bar.set_postfix(self._postfix, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
