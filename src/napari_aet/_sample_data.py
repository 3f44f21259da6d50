"""napari sample data: File > Open Sample > napari-aet."""

from .layers import atoms_layer, tilt_series_layer
from .simulate import sample_fept


def sample_fept_layers():
    """The simulated FePt tilt series, plus its ground-truth atoms (hidden) for comparison."""
    data = sample_fept()
    series = data.tilt_series
    shape = (max(series.projections.shape[1:]),) + series.projections.shape[1:]
    truth = atoms_layer(data.atoms, shape, series.pixel_size, name="ground truth atoms")
    truth[1]["visible"] = False
    return [tilt_series_layer(series, name="FePt tilt series"), truth]
