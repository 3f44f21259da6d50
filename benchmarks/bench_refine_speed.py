"""How long ``refine.refine_atoms`` takes, with its defaults, on the benchmark particles.

Each case simulates an FePt particle (``simulate.fcc_particle``; "1k" = radius 16 Å, 1,103 atoms in
128² px; "8k" = radius 32.6 Å, 8,583 atoms in 192² px, as in ``bench_refine.py``), 51 tilts over
±70°, 0.4 Å pixels, no shifts (as the aligned series the pipeline refines against), Poisson noise
at the dose (counts per Pt atom per projection). The starting model is the truth with 2% of the
atoms left out (for the completion rounds to find) and every position displaced by a normal
error of 0.15 Å per axis. Prints the wall and CPU time of ``refine_atoms`` (all stages: width
choice, position iterations, completion, removal; the CPU time is the steadier measure when
other jobs share the cores), the position iterations run, atoms added and removed,
and the RMS position error before and after (pm, all atoms of the truth matched by index; the
added ones are not counted).

    python benchmarks/bench_refine_speed.py [--cases 1k:0:2000 8k:0:2000]
"""

import argparse
import time

import numpy as np

from napari_aet.model import AtomModel
from napari_aet.refine import refine_atoms
from napari_aet.simulate import fcc_particle, simulate_tilt_series

SIZES = {"1k": (16.0, 128), "8k": (32.6, 192)}


def run_case(spec):
    size, seed, dose = spec.split(":")
    radius, pixels = SIZES[size]
    rng = np.random.default_rng(int(seed))
    truth = fcc_particle(radius=radius, seed=int(seed))
    series = simulate_tilt_series(truth, shape=(pixels, pixels), dose=float(dose), max_shift=0.0,
                                  seed=int(seed)).tilt_series
    kept = np.sort(rng.choice(len(truth), int(round(0.98 * len(truth))), replace=False))
    start = AtomModel(truth.positions[kept] + rng.normal(scale=0.15, size=(len(kept), 3)), truth.species[kept])
    began, began_cpu = time.perf_counter(), time.process_time()
    result = refine_atoms(series, start, elements=("Fe", "Pt"))
    wall, cpu = time.perf_counter() - began, time.process_time() - began_cpu
    errors = result.errors

    def rms_pm(positions):
        return 100 * np.sqrt(np.mean(np.sum((positions - truth.positions[kept]) ** 2, axis=1)))

    after = rms_pm(result.atoms.positions[:len(kept)])
    return (f"| {size} ({len(truth)}) | {dose} | {wall:.1f} | {cpu:.1f} | {len(errors['rms_step'])} | "
            f"{sum(errors['added'])} | {sum(errors['removed'])} | {rms_pm(start.positions):.1f} → {after:.1f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["1k:0:2000", "8k:0:2000"], help="size:seed:dose, size 1k or 8k")
    args = parser.parse_args()
    print("| particle | dose | refine wall s | refine CPU s | iterations | added | removed | RMS pm before → after |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in args.cases:
        print(run_case(spec), flush=True)


if __name__ == "__main__":
    main()
