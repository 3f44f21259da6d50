"""Trace atoms in a volume layer -> the Points layer "atoms"."""

from __future__ import annotations

import numpy as np
from magicgui.widgets import CheckBox, FloatSpinBox, SpinBox
from qtpy.QtWidgets import QPushButton

from .layers import atoms_layer, reconstruction_from_layer, volume_layer
from ..model import InputError
from ..trace import particle_support
from ._base import StageWidget, is_atoms, is_support, is_volume

#: Name of the output layer.
ATOMS_LAYER = "atoms"


def has_manual_edits(layer) -> bool:
    """Whether a Points layer holds atoms the user edited or locked, or a non-empty edit log
    (``metadata["aet"]["edits"]``; e.g. deletions only, which leave no flag behind)."""
    features = layer.features
    return bool(layer.metadata.get("aet", {}).get("edits")) or any(
        name in features and bool(np.any(features[name].to_numpy(bool))) for name in ("edited", "locked"))


def free_atoms_name(viewer) -> str:
    """"atoms", unless that layer holds manual edits: then the first unused "atoms N"."""
    name, k = ATOMS_LAYER, 1
    while name in viewer.layers and (not is_atoms(viewer.layers[name]) or has_manual_edits(viewer.layers[name])):
        k += 1
        name = f"{ATOMS_LAYER} {k}"
    return name


class TraceWidget(StageWidget):
    """Find atoms in a reconstructed volume (:func:`napari_aet.trace.trace_atoms`).

    The result is the Points layer "atoms" (Å, over the volume; per-atom ``peak`` and
    ``fit_quality`` in its features). A layer holding manual edits is never overwritten: the new
    atoms then go to "atoms 2", "atoms 3", ...

    Atoms are searched inside a particle support: "automatic" (computed from the volume), or a 3D
    Labels layer (non-zero = particle); "Show support" adds the automatic one as a Labels layer
    "<volume> support" to inspect and paint.
    """

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer, [
            FloatSpinBox(name="min_distance", label="min distance (Å, 0 = from the elements)", value=0.0, min=0.0,
                         max=10.0, step=0.1),
            FloatSpinBox(name="threshold", label="threshold (0 = auto)", value=0.0, min=0.0, max=1e12,
                         step=0.01),
            SpinBox(name="peel_iterations", label="peel-off rounds", value=0, min=0, max=5),
            CheckBox(name="replace_edits", label="replace hand-edited atoms (their layer is kept)", value=False),
        ], run_text="Trace atoms")
        self.volume_input = self.add_input("volume", is_volume, field="reconstruction")
        self.support_input = self.add_input("support", is_support, choices=["automatic"], follow_new=False)
        self.support_button = QPushButton("Show support")
        self.support_button.clicked.connect(self.show_support)
        self.extra.addWidget(self.support_button)

    def show_support(self):
        """Add (or update) "<volume> support": the automatic particle mask as an editable Labels layer."""
        try:
            layer = self.selected(self.volume_input, "volume")
            recon = reconstruction_from_layer(layer)
            mask = particle_support(recon.volume, voxel_size=recon.voxel_size)
        except InputError as err:
            self.show_error(str(err))
            return
        _, kwargs, _ = volume_layer(recon)
        self.show_output((mask.astype(np.uint8), {
            "name": f"{layer.name} support", "scale": kwargs["scale"], "translate": kwargs["translate"],
            "opacity": 0.3, "metadata": {"aet": {"kind": "support"}}}, "labels"))
        self.support_input.setCurrentText(f"{layer.name} support")
        self.message.setText("support shown: paint or erase it (label 1 = particle), then trace")

    stage = "trace"

    def prepare(self):
        layer = self.selected(self.volume_input, "volume")
        recon = reconstruction_from_layer(layer)
        self.use_as_study_input(layer, "reconstruction", "reconstruct", recon)
        params = self.values()
        params["threshold"] = params["threshold"] or None
        params["min_distance"] = params["min_distance"] or None  # the workflow's default
        support = self.support_input.layer()
        if support is not None:
            params["support"] = np.asarray(support.data) > 0
        self._grid = (recon.volume.shape, recon.voxel_size)
        return lambda progress: self.session.run("trace", progress=progress, **params)

    def finish(self, atoms):
        name = free_atoms_name(self.viewer)
        self.show_study_output(atoms_layer(atoms, *self._grid, name=name), "atoms")
        self.session.announce(self.stage)
        self.show_done(f"traced {len(atoms)} atoms into layer {name!r}")
