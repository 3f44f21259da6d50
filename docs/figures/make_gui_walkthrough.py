"""Render the screenshots of docs/gui.md's walk-through: one study, from a plain TIFF to a corrected model.

Run under a display (or ``xvfb-run -a -s "-screen 0 1280x1024x24"``):

    python docs/figures/make_gui_walkthrough.py

It writes the built-in FePt sample as a bare TIFF (no pixel size, no angles: what many
instruments give), opens it in napari with the AET workbench docked, and presses the steps'
buttons in order with their defaults, saving ``docs/figures/gui_*.png`` along the way.
"""

import tempfile
import time
from pathlib import Path

import napari
import numpy as np
import tifffile
from qtpy.QtWidgets import QApplication

from napari_aet.simulate import sample_fept

OUT = Path(__file__).parent
WINDOW = (1280, 860)


def settle(seconds=0.3):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()


def run(widget):
    """Press a step's Run button and wait for the job to end (the GUI keeps processing events)."""
    widget.run_button.click()
    while widget.running:
        settle(0.1)
    if widget.last_outcome != "done":
        raise RuntimeError(f"{type(widget).__name__}: {widget.message.text()}")
    settle()


def shot(viewer, name):
    settle()
    path = OUT / f"gui_{name}.png"
    viewer.window._qt_window.grab().save(str(path))
    print(f"wrote {path}")


def main():
    sample = sample_fept()
    folder = Path(tempfile.mkdtemp())
    tiff = folder / "FePt_particle.tif"
    tifffile.imwrite(tiff, sample.tilt_series.projections)

    viewer = napari.Viewer(title="napari-aet")
    viewer.window._qt_window.resize(*WINDOW)
    _, bench = viewer.window.add_plugin_dock_widget("napari-aet", "AET workbench")
    viewer.open(tiff, plugin="napari-aet")
    steps = bench.steps
    settle()
    shot(viewer, "1_data_unknown")

    data = steps["Data"]
    data.pixel_size.setValue(sample.tilt_series.pixel_size)
    data.angle_range.setText(f"{sample.tilt_series.angles.min():g}, {sample.tilt_series.angles.max():g}")
    data.range_button.click()
    data.elements.setText("Fe,Pt")
    data.apply_button.click()
    shot(viewer, "2_data_entered")

    bench.show_step(1)
    align = steps["1 Align"]
    run(align)
    shot(viewer, "3_align")
    align.apply_button.click()

    bench.show_step(2)
    run(steps["2 Reconstruct"])
    shot(viewer, "4_reconstruct")

    bench.show_step(3)
    run(steps["3 Trace"])
    bench.show_step(4)
    run(steps["4 Classify"])
    shot(viewer, "5_classify")

    bench.show_step(5)
    run(steps["5 Refine"])
    viewer.dims.ndisplay = 3
    for layer in viewer.layers:
        layer.visible = layer.name.endswith(("resire", "genfire", "refined")) and "|FFT|" not in layer.name
    viewer.reset_view()
    viewer.camera.angles = (0, 35, 60)
    shot(viewer, "6_refine_3d")

    viewer.dims.ndisplay = 2
    bench.show_step(6)
    edit = steps["6 Edit"]
    edit.next_button.click()
    shot(viewer, "7_edit_review")
    print(f"study autosaved to {bench.session.autosave_path}; atoms: {len(bench.session.point.atoms)}, "
          f"edits: {len(bench.session.point.edits)}; tilt range {np.ptp(sample.tilt_series.angles):g}°")
    viewer.close()


if __name__ == "__main__":
    main()
