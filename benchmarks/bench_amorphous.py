"""An amorphous single-element particle (Si-like) over the dose range, 0…177° like public AET data.

Issue 12 measured another group's multislice series of a 208-atom amorphous Si particle (60 tilts
0…177°, three doses), which we do not have; this builds the nearest thing with the project's own
simulator: a sphere cut from ``simulate.amorphous_slab`` (random sequential addition, ``--min-distance``
2.3 Å, 0.05 atoms/Å³ as amorphous Si), ``--tilts`` tilts from 0 to 177°, 128² pixels of 0.35 Å,
Poisson noise at each dose (counts per atom per projection). Two cases per dose: pre-aligned with
``align=False``, and shifted by up to ±2 px and aligned by the chain (the default). Each row compares
the final atoms (non-atoms left out) with the truth (``compare_atoms``: mutual nearest neighbours
within 1 Å after removing a global translation); "traced" is after classification, before refinement.

    python benchmarks/bench_amorphous.py [--element Si] [--doses 400 100 40 10 4 2] [--radius 10.5] [--seed 0]
"""

import argparse
import time

import numpy as np

from napari_aet.analysis.atom_metrics import compare_atoms
from napari_aet.pipeline import real_atoms, run_pipeline
from napari_aet.simulate import amorphous_slab, simulate_tilt_series


def amorphous_particle(radius, element, min_distance, seed):
    """A sphere of ``radius`` Å cut from an amorphous slab of ``element``."""
    slab = amorphous_slab(size=(2 * radius + 1, 2 * radius + 1), thickness=2 * radius + 1, min_distance=min_distance,
                          density=0.05, elements=(element,), seed=seed)
    return slab.subset(np.linalg.norm(slab.positions, axis=1) < radius)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--element", default="Si")
    parser.add_argument("--doses", nargs="+", type=float, default=[400, 100, 40, 10, 4, 2])
    parser.add_argument("--radius", type=float, default=10.5, help="Å")
    parser.add_argument("--min-distance", type=float, default=2.3, help="Å, of the simulated particle")
    parser.add_argument("--tilts", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    truth = amorphous_particle(args.radius, args.element, args.min_distance, args.seed)
    angles = np.linspace(0, 177, args.tilts)
    print(f"{len(truth)} {args.element} atoms, radius {args.radius:g} Å, {args.tilts} tilts 0…177°")
    print("| dose | case | atoms | recall | precision | RMS pm | traced recall / precision / RMS pm | "
          "refinement added / removed | wall s | stages (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for dose in args.doses:
        for align in (False, True):
            series = simulate_tilt_series(truth, angles=angles, shape=(128, 128), pixel_size=0.35, dose=dose,
                                          max_shift=2.0 if align else 0.0, seed=args.seed).tilt_series
            start = time.perf_counter()
            result = run_pipeline(series, args.element, align=align, seed=args.seed)
            wall = time.perf_counter() - start
            final, traced = compare_atoms(real_atoms(result.atoms), truth), compare_atoms(real_atoms(result.traced), truth)
            features = result.atoms.features
            stages = ", ".join(f"{k} {v:.0f}" for k, v in result.report["timings_s"].items() if k != "total")
            case = "shifted ±2 px, aligned by us" if align else "pre-aligned, `align=False`"
            print(f"| {dose:g} | {case} | {final['n_found']} | {final['recall']:.2%} | {final['precision']:.2%} | "
                  f"{final['rms_error_pm']:.1f} | {traced['recall']:.2%} / {traced['precision']:.2%} / "
                  f"{traced['rms_error_pm']:.1f} | {int(features['refine_added'].sum())} / "
                  f"{int(features['refine_removed'].sum())} | {wall:.0f} | {stages} |", flush=True)


if __name__ == "__main__":
    main()
