"""How precise can positions traced in a reconstruction be? Tracing with and without noise.

The 1k FePt particle of ``bench_refine.py`` (radius 16 Å, 1,103 atoms, 128² px of 0.4 Å, 51 tilts
over ±70°), perfectly aligned (no shifts), noiseless (``dose=None``) or with Poisson noise, is
reconstructed with each method's recommended parameters (GENFIRE also with the particle support
found in its own first reconstruction), then traced and classified with the defaults. If the
error stays high without noise, the reconstruction (the missing wedge), not the noise or the
sub-voxel fit, limits the traced positions. Match rule of ``analysis.atom_metrics.compare_atoms``;
RMS errors per element and per axis (x, y = tilt axis, z = beam at 0°).

    python benchmarks/bench_trace_limit.py [--doses none 2000]
"""

import argparse
import time

import numpy as np

from napari_aet.analysis.atom_metrics import compare_atoms, mutual_nearest_pairs
from napari_aet.classify import classify_atoms
from napari_aet.pipeline import real_atoms
from napari_aet.reconstruct import RECOMMENDED, reconstruct
from napari_aet.simulate import fcc_particle, simulate_tilt_series
from napari_aet.trace import particle_support, trace_atoms


def traced_errors(reconstruction, truth):
    """Recall, precision, RMS (pm) overall, of Fe and Pt, and of Fe per axis."""
    atoms = real_atoms(classify_atoms(reconstruction, trace_atoms(reconstruction), "Fe,Pt", seed=0))
    metrics = compare_atoms(atoms, truth)
    i, j = mutual_nearest_pairs(atoms.positions + metrics["translation"], truth.positions, 1.0)
    error = (atoms.positions[i] + metrics["translation"] - truth.positions[j]) * 100
    iron = truth.species[j] == "Fe"
    rms = lambda e: np.sqrt(np.mean(np.sum(e ** 2, axis=1)))
    return (metrics["recall"], metrics["precision"], metrics["rms_error_pm"], rms(error[iron]), rms(error[~iron]),
            np.sqrt(np.mean(error[iron] ** 2, axis=0)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--doses", nargs="+", default=["none", "2000"], help="Pt counts per atom, or none")
    args = parser.parse_args()
    truth = fcc_particle(radius=16.0, seed=0)
    print("| Pt counts | reconstruction | R-factor | recall | precision | RMS pm | Fe | Pt | Fe x / y / z | time s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for dose in args.doses:
        series = simulate_tilt_series(truth, shape=(128, 128), dose=None if dose == "none" else float(dose),
                                      max_shift=0, seed=0).tilt_series.replace(shifts=np.zeros((51, 2)))
        first = None
        for label, method, extra in (("GENFIRE", "genfire", {}), ("GENFIRE + particle support", "genfire", None),
                                     ("RESIRE", "resire", {})):
            if extra is None:
                extra = {"support": particle_support(first.volume, voxel_size=first.voxel_size)}
            start = time.perf_counter()
            reconstruction = reconstruct(series, method=method, **{**RECOMMENDED[method], **extra})
            seconds = time.perf_counter() - start
            first = first or reconstruction
            recall, precision, rms, iron, platinum, axes = traced_errors(reconstruction, truth)
            print(f"| {dose} | {label} | {reconstruction.errors['r_factor'][-1]:.3f} | {recall:.2%} | {precision:.2%} | "
                  f"{rms:.1f} | {iron:.1f} | {platinum:.1f} | {' / '.join(f'{a:.1f}' for a in axes)} | {seconds:.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
