"""End-to-end accuracy of ``napari-aet run`` on simulated FePt tilt series (issue 2's contract).

For each seed: ``napari-aet simulate`` (128x128 px, 0.4 Å, 51 tilts over ±70°, random shifts of
±3 px, Poisson noise at --dose counts per Pt atom), then ``napari-aet run`` on the written TIFF,
then atoms.csv is compared with truth_atoms.csv (mutual nearest neighbours within 1 Å after
removing a global translation). Handedness: the same comparison without translation removal
against the truth and against its mirror image (z -> -z).

    python benchmarks/bench_pipeline.py [--seeds 0 1 2] [--dose 400] [--method genfire]

Larger particles: ``--size`` (px), ``--radius`` (Å), ``--n-angles`` and ``--max-shift`` (px) go to
``napari-aet simulate``; e.g. ``--size 256 --radius 31 --n-angles 61 --max-shift 5`` (~7,000
atoms). The table gives each stage's wall time, the run's peak memory (its maximum resident
set, from ``/usr/bin/time``) and the report's half-set estimate of the refined positions' RMS
error per element (3D, pm; docs/refinement.md).
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_aet.analysis.atom_metrics import compare_atoms
from napari_aet.io import read_atoms
from napari_aet.model import AtomModel


def napari_aet(*args):
    subprocess.run([sys.executable, "-m", "napari_aet.cli", *map(str, args)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def one_run(seed, dose, method, workdir, simulation=()):
    sim, out = workdir / f"sim{seed}", workdir / f"run{seed}"
    napari_aet("simulate", "--out", sim, "--seed", seed, "--dose", dose, *simulation)
    start, memory = time.perf_counter(), workdir / f"memory{seed}.txt"
    subprocess.run(["/usr/bin/time", "-f", "%M", "-o", memory, sys.executable, "-m", "napari_aet.cli", "run",
                    sim / "tilt_series.tif", "--pixel-size", "0.4", "--elements", "Fe,Pt", "--out", out,
                    "--seed", str(seed), "--method", method], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    found, truth = read_atoms(out / "atoms.csv"), read_atoms(sim / "truth_atoms.csv")
    metrics = compare_atoms(found, truth)
    mirrored = truth.positions * [1, 1, -1]
    same = compare_atoms(found, truth, remove_translation=False)
    mirror = compare_atoms(found, AtomModel(mirrored, truth.species))
    report = json.loads((out / "report.json").read_text())
    return {"seed": seed, "n_true": metrics["n_true"], "recall": metrics["recall"],
            "precision": metrics["precision"], "rms_pm": metrics["rms_error_pm"],
            "species": metrics["species_accuracy"], "recall_untranslated": same["recall"],
            "recall_mirror": mirror["recall"], "wall_s": wall, "timings": report["timings_s"],
            "peak_gb": int(memory.read_text().split()[-1]) / 2**20,
            "half_set_pm": {e: v["3d"] for e, v in report.get("refinement", {}).get("precision_pm", {}).items()}}


def _stages(timings) -> str:
    return ", ".join(f"{name} {seconds:.0f}" for name, seconds in timings.items() if name != "total")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--dose", type=float, default=400.0)
    parser.add_argument("--method", default="genfire")
    for name in ("size", "radius", "n-angles", "max-shift"):
        parser.add_argument(f"--{name}", type=float if name == "radius" else int)
    args = parser.parse_args()
    simulation = [item for name in ("size", "radius", "n_angles", "max_shift")
                  if getattr(args, name) is not None
                  for item in (f"--{name.replace('_', '-')}", getattr(args, name))]
    print(f"| seed | atoms | recall | precision | RMS pm | species | recall (no translation) | "
          f"recall vs mirror | run s | stages s | peak GB | half-set pm |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for seed in args.seeds:
            r = one_run(seed, args.dose, args.method, Path(tmp), simulation)
            rows.append(r)
            print(f"| {seed} | {r['n_true']} | {r['recall']:.1%} | {r['precision']:.1%} | {r['rms_pm']:.1f} | "
                  f"{r['species']:.1%} | {r['recall_untranslated']:.1%} | {r['recall_mirror']:.1%} | "
                  f"{r['wall_s']:.0f} | {_stages(r['timings'])} | {r['peak_gb']:.1f} | "
                  + ", ".join(f"{e} {v:.1f}" for e, v in r["half_set_pm"].items()) + " |", flush=True)
    mean = {k: np.mean([r[k] for r in rows]) for k in ("recall", "precision", "rms_pm", "species", "wall_s")}
    print(f"| mean | | {mean['recall']:.1%} | {mean['precision']:.1%} | {mean['rms_pm']:.1f} | "
          f"{mean['species']:.1%} | | | {mean['wall_s']:.0f} | | | |")


if __name__ == "__main__":
    main()
