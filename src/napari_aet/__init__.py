"""napari-aet: atomic electron tomography, from tilt series to 3D atomic models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-aet")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "unknown"

from .model import AtomModel, InputError, Reconstruction, TiltSeries

__all__ = ["AtomModel", "InputError", "Reconstruction", "TiltSeries", "__version__"]
