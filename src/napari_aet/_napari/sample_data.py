"""napari sample data: File > Open Sample > napari-aet."""

from .layers import tilt_series_layer
from ..simulate import sample_fept


def sample_fept_layers():
    """The simulated FePt tilt series (51 tilts over ±70°, random shifts, Poisson noise).

    Its ground truth is not added as a layer: 3D atoms beside a stack of 2D projections
    would mix the tilt index with z. ``napari-aet demo --gui`` shows the truth beside the
    reconstruction instead.
    """
    return [tilt_series_layer(sample_fept().tilt_series, name="FePt tilt series")]
