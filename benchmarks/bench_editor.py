"""Atom editor benchmark: where a hand-placed atom lands, which label the classifier gives it, and
what an edit costs to save.

Placement: an FePt particle from :mod:`napari_aet.simulate` (radius 12 Å, 96×96 px of 0.4 Å,
51 tilts over ±70°, Poisson noise, random shifts) goes through
:func:`napari_aet.pipeline.run_pipeline` (align -> GENFIRE -> trace -> classify, no refinement).
For a seeded sample of the traced atoms matched to a true atom, the atom is taken out of the
model and put back by hand: a click at the true position (in the reconstruction's frame) plus a
random offset of up to ``--offset`` Å in a random direction, snapped with
:func:`napari_aet.edit.snap_to_peak` and labelled with :func:`napari_aet.edit.place_atoms`.
Reported: distance of the snapped position to the true atom and to the traced one (pm), and the
fraction of placed atoms whose label is the true species (beside the classifier's own accuracy on
the same atoms).

Saving: :meth:`napari_aet.session.StudySession.edited` (the hand-edits autosave, written after
every edit) for one time point of 1,103 and 8,691 atoms with a 100-entry edit log and, as the
editor keeps it, the undo history of those 100 one-atom relabels (:mod:`napari_aet.undo`).

GUI: the wall time of a review step (N) and of a label key in napari (panel, histogram,
autosave and canvas repaint included) on a classified 1,103-atom particle.

    xvfb-run -a python benchmarks/bench_editor.py                 # seed 0, 150 atoms, offsets up to 0.5 Å
    xvfb-run -a python benchmarks/bench_editor.py --gui-only
    python benchmarks/bench_editor.py --saving-only
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def placement(seed, n_atoms, offset):
    from napari_aet.analysis.atom_metrics import compare_atoms, mutual_nearest_pairs
    from napari_aet.edit import place_atoms, snap_to_peak
    from napari_aet.model import AtomModel
    from napari_aet.pipeline import run_pipeline
    from napari_aet.simulate import fcc_particle, simulate_tilt_series

    truth = fcc_particle(radius=12.0, seed=seed)
    data = simulate_tilt_series(truth, shape=(96, 96), seed=seed)
    result = run_pipeline(data.tilt_series, "Fe,Pt", refine=False, seed=seed)
    atoms, recon = result.atoms, result.reconstruction
    shift = compare_atoms(atoms, truth)["translation"]  # traced + shift ~ truth
    real = np.flatnonzero(~atoms.features["non_atom"].astype(bool))
    i, j = mutual_nearest_pairs(atoms.positions[real] + shift, truth.positions, 1.0)
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(i), size=min(n_atoms, len(i)), replace=False)
    to_truth, to_traced, right, classifier_right = [], [], 0, 0
    for k in sample:
        atom, true = real[i[k]], j[k]
        direction = rng.normal(size=3)
        click = truth.positions[true] - shift + offset * rng.uniform() ** (1 / 3) * direction / np.linalg.norm(direction)
        snapped = snap_to_peak(recon, click)
        others = np.delete(np.arange(len(atoms)), atom)
        model = atoms.subset(others)
        added = AtomModel(np.vstack([model.positions, snapped]), np.append(model.species, ""),
                          {name: np.append(v, v[:1]) for name, v in model.features.items()})
        placed = place_atoms(added, [len(model)], recon)
        to_truth.append(np.linalg.norm(snapped + shift - truth.positions[true]))
        to_traced.append(np.linalg.norm(snapped - atoms.positions[atom]))
        right += placed.species[-1] == truth.species[true]
        classifier_right += atoms.species[atom] == truth.species[true]
    n = len(sample)
    print(f"seed {seed}: {len(truth)} true atoms, {len(i)} matched, {n} placed by hand with clicks up to {offset} Å off")
    print(f"  snapped to the true atom: median {1e2 * np.median(to_truth):.1f} pm, "
          f"RMS {1e2 * np.sqrt(np.mean(np.square(to_truth))):.1f} pm, max {1e2 * np.max(to_truth):.1f} pm")
    print(f"  snapped to the traced atom: median {1e2 * np.median(to_traced):.1f} pm, max {1e2 * np.max(to_traced):.1f} pm")
    print(f"  label right: {right}/{n} = {100 * right / n:.1f}% (the classifier on the same atoms: "
          f"{100 * classifier_right / n:.1f}%)")


def saving(radius, repeats=20, history=100):
    from napari_aet.edit import changes, relabel
    from napari_aet.project import Project, TimePoint
    from napari_aet.session import StudySession
    from napari_aet.simulate import fcc_particle
    from napari_aet.undo import UndoStack, keep_history

    atoms = fcc_particle(radius=radius, seed=0)
    with tempfile.TemporaryDirectory() as folder:
        session = StudySession(Project([TimePoint("t0", atoms=atoms)]))
        session.save(Path(folder) / "study.aet")
        point, stack = session.point, UndoStack()
        for k in range(history):  # the log and the undo history of 100 one-atom relabels
            before, point.atoms = point.atoms, relabel(point.atoms, [k], "Pt")
            entries = changes(before, point.atoms)
            point.edits += entries
            stack.record(before, point.atoms, entries)
        times = []
        for k in range(history, history + repeats):
            before, point.atoms = point.atoms, relabel(point.atoms, [k], "Pt")
            stack.record(before, point.atoms, changes(before, point.atoms))
            start = time.perf_counter()
            keep_history(point, stack)
            session.edited()
            times.append(time.perf_counter() - start)
        size = session.edits_path.stat().st_size
    print(f"edited() with {len(atoms)} atoms, {len(point.edits)} log entries, {history + repeats} undo steps: "
          f"median {1e3 * np.median(times):.1f} ms, max {1e3 * np.max(times):.1f} ms, file {size / 1e3:.0f} kB")


def gui_latency(presses=20):
    """Wall time of one review step (N) and one label key (1/2) in napari, canvas repaint included,
    on a classified 1,103-atom particle in a study (run under a display, e.g. xvfb-run)."""
    import napari
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QApplication

    from napari_aet._napari._base import show_layer, tag_as_study
    from napari_aet._napari._study import set_session
    from napari_aet._napari.edit import EditWidget
    from napari_aet.classify import classify_atoms
    from napari_aet.geometry import render_atoms
    from napari_aet._napari.layers import atoms_layer, volume_layer
    from napari_aet.model import Reconstruction
    from napari_aet.project import Project, TimePoint
    from napari_aet.session import StudySession
    from napari_aet.simulate import adf_amplitudes, fcc_particle

    truth = fcc_particle(radius=16.0, seed=0)
    shape, voxel = (96, 96, 96), 0.4
    recon = Reconstruction(render_atoms(truth.positions, adf_amplitudes(truth.species, 1.0), 0.5, shape, voxel), voxel)
    atoms = classify_atoms(recon, truth, "Fe,Pt", ambiguity_threshold=1.01)  # every atom to review
    with tempfile.TemporaryDirectory() as folder:
        session = StudySession(Project([TimePoint("t0", reconstruction=recon, atoms=atoms)]))
        session.save(Path(folder) / "study.aet")
        viewer = napari.Viewer()
        viewer.window.resize(1280, 1024)
        set_session(viewer, session)
        show_layer(viewer, volume_layer(recon))
        layer = show_layer(viewer, tag_as_study(atoms_layer(atoms, shape, voxel), session, "atoms"))
        widget = EditWidget(viewer)
        viewer.window.add_dock_widget(widget)
        QApplication.processEvents()
        canvas = viewer.window._qt_viewer.canvas.native

        def press(key):
            start = time.perf_counter()
            QTest.keyClick(canvas, key)
            QApplication.processEvents()
            return time.perf_counter() - start

        review = [press(Qt.Key.Key_N) for _ in range(presses)]
        label = []
        for k in range(presses):
            press(Qt.Key.Key_N)
            label.append(press(Qt.Key.Key_1 if k % 2 else Qt.Key.Key_2))
        assert len(widget.log) >= presses
        viewer.close()
    print(f"napari, {len(atoms)} atoms in a study: review step (N) median {1e3 * np.median(review):.0f} ms, "
          f"max {1e3 * np.max(review):.0f} ms; label key median {1e3 * np.median(label):.0f} ms, "
          f"max {1e3 * np.max(label):.0f} ms (autosave and repaint included)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--atoms", type=int, default=150, help="atoms placed by hand")
    parser.add_argument("--offset", type=float, default=0.5, help="largest click offset, Å")
    parser.add_argument("--gui-only", action="store_true", help="only the key-press latency in napari")
    parser.add_argument("--saving-only", action="store_true", help="only the autosave after an edit")
    args = parser.parse_args()
    if not (args.gui_only or args.saving_only):
        placement(args.seed, args.atoms, args.offset)
    if not args.gui_only:
        for radius in (16.0, 33.5):  # 1,103 and 8,691 atoms
            saving(radius)
    if not args.saving_only:
        gui_latency()


if __name__ == "__main__":
    main()
