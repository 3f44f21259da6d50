"""Draw docs/figures/ta_film.png: napari-aet's atoms over the published ones on the measured Ta film.

Run: python docs/figures/make_film_figure.py [--results DIR]

DIR is what ``python benchmarks/bench_film.py --areas area17 --out DIR`` wrote (DIR/area17 holds
atoms.csv and reconstruction.mrc); without it the chain runs here (``run_pipeline``, geometry auto).
One x-z slice of area 17 (y within ±1.5 Å of the centre): the reconstruction averaged over the slab,
the published atoms (white crosses) and ours (cyan circles) in it, and the core strip's x bounds.
"""

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_film import load_area  # noqa: E402

from napari_aet.io import read_atoms, read_volume  # noqa: E402
from napari_aet.pipeline import real_atoms, run_pipeline  # noqa: E402

SLAB = 1.5  # Å half-thickness of the y slab shown


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=None)
    args = parser.parse_args()
    series, meta, published, _ = load_area("area17")
    if args.results:
        folder = Path(args.results) / "area17"
        ours, volume = read_atoms(folder / "atoms.csv"), read_volume(folder / "reconstruction.mrc").volume
    else:
        result = run_pipeline(series, "Ta", align=False, geometry="auto")
        ours, volume = real_atoms(result.atoms), result.reconstruction.volume
    px = meta["pixel_size_A"]
    nz, ny, nx = volume.shape
    rows = slice(ny // 2 - int(SLAB / px), ny // 2 + int(SLAB / px) + 1)
    image = volume[:, rows, :].mean(axis=1)  # (z, x)
    extent = [(-nx // 2 - 0.5) * px, (nx - nx // 2 - 0.5) * px, (-nz // 2 - 0.5) * px, (nz - nz // 2 - 0.5) * px]
    fig, ax = plt.subplots(figsize=(8, 8 * nz / nx))
    ax.imshow(image, cmap="gray", origin="lower", extent=extent)
    for atoms, style in ((published, dict(marker="x", color="white", s=40, label="published (Yuan et al. 2022)")),
                         (ours, dict(marker="o", facecolors="none", edgecolors="cyan", s=70, label="napari-aet"))):
        inside = np.abs(atoms.positions[:, 1]) <= SLAB
        ax.scatter(atoms.positions[inside, 0], atoms.positions[inside, 2], **style)
    for bound in meta["core_strip_vox_about_centre"]["x"]:
        ax.axvline(bound * px, color="orange", lw=1, ls="--")
    ax.set_xlabel("x (Å)")
    ax.set_ylabel("z (Å, beam at 0°)")
    ax.set_title(f"Ta film, area 17: x-z slice |y| ≤ {SLAB} Å; dashed: core strip", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(Path(__file__).with_name("ta_film.png"), dpi=110)


if __name__ == "__main__":
    main()
