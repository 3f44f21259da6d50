"""Atoms versus noise peaks over the dose range, with one element and with two.

Each dose runs three cases on one simulated particle (``simulate.fcc_particle``, radius
``--radius`` Å, fcc 3.85 Å; ``--tilts`` tilts over ±70°, 0.4 Å pixels, Poisson noise at the
dose = counts per heaviest atom per projection):

* ``FePt aligned by us``: the FePt particle with random shifts of ±3 px, the default chain
  (``pipeline.run_pipeline(series, "Fe,Pt")``: alignment, GENFIRE, tracing, classification,
  refinement) — the reference;
* ``FePt pre-aligned``: the same particle without shifts, ``align=False`` (``--no-align``);
* ``Pt pre-aligned``: the same sites, every atom Pt, ``align=False``, elements "Pt".

Each row compares the final atoms (non-atoms left out) with the truth:
``analysis.atom_metrics.compare_atoms`` (mutual nearest neighbours within 1 Å after removing
a global translation), counts the atoms the refinement added and removed, and gives the run's
wall time and each stage's.

    python benchmarks/bench_dose.py [--doses 40 100 400] [--radius 10] [--size 80] [--tilts 41]
"""

import argparse
import time

import numpy as np

from napari_aet.analysis.atom_metrics import compare_atoms
from napari_aet.model import AtomModel
from napari_aet.pipeline import real_atoms, run_pipeline
from napari_aet.simulate import fcc_particle, simulate_tilt_series


def run_case(name, truth, elements, dose, args, align):
    series = simulate_tilt_series(truth, angles=np.linspace(-70, 70, args.tilts), shape=(args.size, args.size),
                                  dose=dose, max_shift=3.0 if align else 0.0, seed=args.seed).tilt_series
    start = time.perf_counter()
    result = run_pipeline(series, elements, align=align, seed=args.seed)
    wall = time.perf_counter() - start
    m = compare_atoms(real_atoms(result.atoms), truth)
    traced = compare_atoms(real_atoms(result.traced), truth) if result.traced is not None else m
    f = result.atoms.features
    stages = ", ".join(f"{k} {v:.1f}" for k, v in result.report["timings_s"].items() if k != "total")
    print(f"| {dose:g} | {name} | {m['n_found']} / {m['n_true']} | {m['recall']:.2%} | {m['precision']:.2%} | "
          f"{m['rms_error_pm']:.1f} | {traced['recall']:.2%} / {traced['precision']:.2%} | "
          f"{int(f['refine_added'].sum())} / {int(f['refine_removed'].sum())} | {wall:.0f} s | {stages} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--doses", nargs="+", type=float, default=[40, 100, 400])
    parser.add_argument("--radius", type=float, default=10.0, help="particle radius, Å")
    parser.add_argument("--size", type=int, default=80, help="image edge, pixels")
    parser.add_argument("--tilts", type=int, default=41)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", nargs="+", default=["aligned", "fept", "pt"],
                        help="aligned = FePt aligned by us, fept = FePt pre-aligned, pt = Pt pre-aligned")
    args = parser.parse_args()
    fept = fcc_particle(radius=args.radius, seed=args.seed)
    platinum = AtomModel(fept.positions, np.full(len(fept), "Pt", dtype=object))
    cases = {"aligned": ("FePt aligned by us", fept, "Fe,Pt", True),
             "fept": ("FePt pre-aligned", fept, "Fe,Pt", False),
             "pt": ("Pt pre-aligned", platinum, "Pt", False)}
    print("| dose | case | found / true | recall | precision | RMS pm | traced recall / precision | "
          "refinement added / removed | wall | stages (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for dose in args.doses:
        for case in args.cases:
            name, truth, elements, align = cases[case]
            run_case(name, truth, elements, dose, args, align)


if __name__ == "__main__":
    main()
