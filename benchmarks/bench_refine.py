"""What refinement against the projections adds: the full chain before and after it, per element.

Each case simulates an FePt particle (``simulate.fcc_particle``; "1k" = radius 16 Å, 1,103 atoms in
128² px; "8k" = radius 32.6 Å, 8,583 atoms in 192² px), 51 tilts over ±70°, 0.4 Å pixels, random
shifts of ±3 px, Poisson noise at the dose (counts per Pt atom per projection), then runs
``pipeline.run_pipeline(series, "Fe,Pt")`` with its defaults (alignment, GENFIRE, tracing,
classification, refinement) and compares ``result.traced`` (before refinement) and
``result.atoms`` (after) with the truth: mutual nearest neighbours within 1 Å after removing a
global translation (``analysis.atom_metrics.compare_atoms``); RMS error also per true element.

    python benchmarks/bench_refine.py [--cases 1k:0:400 1k:0:2000 8k:0:2000] [--keep-every-move]

``--keep-every-move`` turns off the check of the moves on held-out projections
(``refine_atoms(validate_moves=False)``); the table's refinement row gives the kept fractions.
"""

import argparse
import time

import numpy as np

from napari_aet.analysis.atom_metrics import compare_atoms, mutual_nearest_pairs
from napari_aet.pipeline import real_atoms, run_pipeline
from napari_aet.refine import describe_moves_kept
from napari_aet.simulate import fcc_particle, simulate_tilt_series

SIZES = {"1k": (16.0, 128), "8k": (32.6, 192)}


def per_element_rms(found, truth, translation):
    """RMS error (pm) of matched pairs by true element."""
    i, j = mutual_nearest_pairs(found.positions + translation, truth.positions, 1.0)
    error = np.linalg.norm(found.positions[i] + translation - truth.positions[j], axis=1)
    return {e: float(np.sqrt(np.mean(error[truth.species[j] == e] ** 2)) * 100) for e in ("Fe", "Pt")}


def run_case(spec, validate_moves=True):
    size, seed, dose = spec.split(":")
    radius, pixels = SIZES[size]
    truth = fcc_particle(radius=radius, seed=int(seed))
    series = simulate_tilt_series(truth, shape=(pixels, pixels), dose=float(dose), seed=int(seed)).tilt_series
    start = time.perf_counter()
    result = run_pipeline(series, "Fe,Pt", seed=int(seed), refine_options={"validate_moves": validate_moves})
    wall = time.perf_counter() - start
    rows = []
    for stage, atoms in (("traced", result.traced), ("refined", result.atoms)):
        atoms = real_atoms(atoms)
        m = compare_atoms(atoms, truth)
        rms = per_element_rms(atoms, truth, np.array(m["translation"]))
        rows.append(f"| {size} ({len(truth)}) | {dose} | {stage} | {m['recall']:.2%} | {m['precision']:.2%} | "
                    f"{m['rms_error_pm']:.1f} | {rms['Fe']:.1f} | {rms['Pt']:.1f} | {m['species_accuracy']:.2%} |")
    f = result.atoms.features
    timings = result.report["timings_s"]
    reasons = result.report["refinement"]["reasons"]
    kept = describe_moves_kept(result.report["refinement"]["moves_kept"]) or "every move kept (not checked)"
    why = "; ".join(f"{kind} " + ", ".join(f"{n} {reason}" for reason, n in counts.items() if n)
                    for kind, counts in reasons.items() if any(counts.values()))
    rows.append(f"|  |  | refinement: {int(f['refine_added'].sum())} added, {int(f['refine_removed'].sum())} removed "
                f"({why}); {kept}; refine {timings['refine']:.0f} s of {wall:.0f} s |  |  |  |  |  |  |")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["1k:0:400", "1k:0:2000", "8k:0:2000"],
                        help="size:seed:dose, size 1k or 8k")
    parser.add_argument("--keep-every-move", action="store_true",
                        help="refine without checking the moves on held-out projections")
    args = parser.parse_args()
    print("| particle | dose | atoms | recall | precision | RMS pm | Fe RMS pm | Pt RMS pm | species |")
    print("|---|---|---|---|---|---|---|---|---|")
    for spec in args.cases:
        for row in run_case(spec, validate_moves=not args.keep_every_move):
            print(row, flush=True)


if __name__ == "__main__":
    main()
