"""``napari-aet batch`` on dask: wall time with one worker process against two, and a batch row
against a plain ``napari-aet run`` of the same series with the same seed.

Simulates ``--series`` FePt tilt series (``--size`` 64 px square, 0.4 Å, ``--tilts`` tilts over
±70°, shifts ±3 px, Poisson noise, particles of ``--radius`` 8 Å: ~135 atoms, one seed each),
writes a plan of particles p0, p1, … at times 0 and 30 min (two series each), then runs the whole
batch (align, GENFIRE 50 iterations, trace, classify, one refinement round, or with ``--defaults``
run's own defaults; then each particle's study.aet, analyze and track) once per ``--workers``
value, alternating, ``--repeats`` times, each into a fresh directory. Prints the wall time of each
batch, the CPU time of all its processes (workers included) and so the cores it kept busy on
average, their ratios, the load average before and after (the machine is shared), whether the first
row's atoms.csv equals that of a plain ``napari-aet run`` (made just before), and how many rows are
identical between the two worker counts. In a working tree that others edit while it runs, code
changes between the runs show up as differences.

    nice python benchmarks/bench_batch.py [--series 8] [--tilts 31] [--size 64] [--radius 8]
        [--defaults] [--workers 1 2] [--repeats 1]
"""

import argparse
import csv
import filecmp
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_aet.io import write_tilt_series
from napari_aet.simulate import fcc_particle, simulate_tilt_series

QUICK = {"iterations": 50, "refine_rounds": 1}  # the run options of the plan without --defaults


def napari_aet(*args) -> tuple[float, float]:
    """Run the command; its wall time and the CPU time (user + sys) of it and its children, s."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run([sys.executable, "-m", "napari_aet.cli", *map(str, args)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def write_plan(folder: Path, n_series: int, n_tilts=31, options=QUICK, size=64, radius=8.0) -> Path:
    options = {"pixel_size": 0.4, **options}
    rows = ["series,elements,particle,time," + ",".join(options) + ",seed"]
    for seed in range(n_series):
        atoms = fcc_particle(radius=radius, elements=("Fe", "Pt"), seed=seed)
        sim = simulate_tilt_series(atoms, np.linspace(-70, 70, n_tilts), shape=(size, size), pixel_size=0.4,
                                   dose=400.0, max_shift=3.0, seed=seed)
        write_tilt_series(folder / f"series{seed}.tif", sim.tilt_series)
        rows.append(f"series{seed}.tif,\"Fe,Pt\",p{seed // 2},{30 * (seed % 2)},"
                    + ",".join(map(str, options.values())) + f",{seed}")
    plan = folder / "plan.csv"
    plan.write_text("\n".join(rows) + "\n")
    return plan


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=8)
    parser.add_argument("--tilts", type=int, default=31, help="tilts per series (published series: 50-60)")
    parser.add_argument("--size", type=int, default=64, help="image size, px")
    parser.add_argument("--radius", type=float, default=8.0, help="particle radius, Å")
    parser.add_argument("--defaults", action="store_true",
                        help="napari-aet run's default options instead of 50 iterations and one refinement round")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        options = {} if args.defaults else QUICK
        plan = write_plan(folder, args.series, args.tilts, options, args.size, args.radius)
        reference = folder / "run"  # first, so that the batch right after runs the same code
        flags = [f"--{name.replace('_', '-')}={value}" for name, value in options.items()]
        napari_aet("run", folder / "series0.tif", "--elements", "Fe,Pt", "--pixel-size", 0.4, *flags, "--seed", 0,
                   "--out", reference)
        walls = {w: [] for w in args.workers}
        for repeat in range(args.repeats):
            for workers in args.workers:
                out = folder / f"study-w{workers}-r{repeat}"
                load = os.getloadavg()[0]
                wall, cpu = napari_aet("batch", plan, "--out", out, "--workers", workers)
                with open(out / "summary.csv", newline="") as handle:
                    summary = list(csv.DictReader(handle))
                statuses = [f"{row['step']} {row['status']}" for row in summary]
                walls[workers].append(wall)
                print(f"--workers {workers}: {wall:.1f} s wall, {cpu:.1f} s CPU ({cpu / wall:.2f} cores busy), "
                      f"load average {load:.1f} -> {os.getloadavg()[0]:.1f}, "
                      f"{', '.join(f'{statuses.count(s)} {s}' for s in sorted(set(statuses)))}", flush=True)
                if repeat == 0 and workers == args.workers[0]:
                    same = filecmp.cmp(reference / "atoms.csv", out / "p0" / "0" / "atoms.csv", shallow=False)
                    print(f"batch row p0/0 atoms.csv identical to napari-aet run (seed 0): {same}", flush=True)
        medians = {w: float(np.median(v)) for w, v in walls.items()}
        if len(medians) == 2:
            slow, fast = (medians[w] for w in args.workers)
            print(f"median wall: {medians}; ratio {slow / fast:.2f}x")
        rows = [f"p{seed // 2}/{30 * (seed % 2)}/atoms.csv" for seed in range(args.series)]
        first, last = (folder / f"study-w{w}-r0" for w in (args.workers[0], args.workers[-1]))
        identical = sum(filecmp.cmp(first / row, last / row, shallow=False) for row in rows)
        print(f"rows identical between --workers {args.workers[0]} and {args.workers[-1]}: {identical}/{len(rows)}")

if __name__ == "__main__":
    main()
