"""Render docs/figures/napari_demo.png: napari showing a reconstruction and its refined atoms.

Run under a display (or ``xvfb-run -a``): python docs/make_screenshot.py
It runs the same chain as ``napari-aet demo`` on the built-in sample.
"""

from pathlib import Path

import napari

from napari_aet._napari import screenshot
from napari_aet._napari.layers import atoms_layer, volume_layer
from napari_aet.pipeline import real_atoms, run_pipeline
from napari_aet.simulate import sample_fept


def main():
    sim = sample_fept()
    result = run_pipeline(sim.tilt_series, ("Fe", "Pt"))
    recon = result.reconstruction
    viewer = napari.Viewer(show=False, title="napari-aet")
    data, kwargs, _ = volume_layer(recon)
    viewer.add_image(data, **{**kwargs, "opacity": 0.6})
    data, kwargs, _ = atoms_layer(real_atoms(result.atoms), recon.volume.shape, recon.voxel_size)
    viewer.add_points(data, **kwargs)
    viewer.dims.ndisplay = 3
    viewer.window.resize(900, 800)
    viewer.reset_view()
    viewer.scene.camera.angles = (0, 35, 60)
    out = Path(__file__).parent / "figures" / "napari_demo.png"
    screenshot(viewer, out)
    viewer.close()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
