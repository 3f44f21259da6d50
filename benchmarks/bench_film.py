"""The measured amorphous Ta film (../shared/data/ta_film, areas 17 and 53) against the authors'
published atom model, in the core strip each sub-area contributed to it.

    python benchmarks/bench_film.py [--areas area17 area53] [--geometry auto|particle|film]
                                    [--no-refine] [--min-distance TEXT] [--out DIR]
    python benchmarks/bench_film.py --score DIR   # score DIR/AREA written by `napari-aet run`

Runs ``run_pipeline`` (already aligned: ``align=False``; exact Euler angles from
``angles_euler.txt``) on each area and prints, as a Markdown table row: geometry, atoms,
found / published and published / found in the core strip, RMS distance (pm) of matched pairs,
final R-factor and R-free of the reconstruction, the half-set precision of the refined positions
(pm, per element), stage wall times, the run's wall time, its CPU time (both cores; on a shared
machine the wall time grows with the load, the CPU time hardly) and the load average at the end.

Match rule: mutual nearest neighbours within ``MATCH_A`` Å, no translation removed (the published
model is in each sub-area's frame). Our atoms are matched against every published atom in the
box, then counted inside the core strip only: found / published = matched published core atoms
over published core atoms; published / found = our matched atoms in the strip over our atoms in
the strip. The strip is ``core_strip_vox_about_centre`` of meta.json (x, y voxel bounds, all z).
``--min-distance`` is ``napari-aet run``'s (tracing and refinement; default the physical table).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from napari_aet.analysis.atom_metrics import mutual_nearest_pairs
from napari_aet.io import read_atoms, read_tilt_series
from napari_aet.pipeline import real_atoms, run_pipeline
from napari_aet.runs import pipeline_options

#: The data (``$TA_FILM_DATA``, else ../shared/data/ta_film beside the repository).
DATA = Path(os.environ.get("TA_FILM_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "ta_film"))
#: Largest distance (Å) of a matched pair: a third of the Ta–Ta nearest-neighbour distance (2.9 Å).
MATCH_A = 1.0


def load_area(area, data=DATA):
    """The area's tilt series (Euler angles), its meta.json, all published atoms and the core strip's."""
    folder = Path(data) / area
    meta = json.loads((folder / "meta.json").read_text())
    series = read_tilt_series(folder / "tilt_series.tif", angles=folder / "angles_euler.txt",
                              pixel_size=meta["pixel_size_A"])
    return series, meta, read_atoms(folder / "published_atoms.csv"), read_atoms(folder / "published_atoms_core.csv")


def in_strip(positions, meta) -> np.ndarray:
    """Boolean ``(N,)``: positions (x, y, z Å) inside the area's core strip."""
    strip = meta["core_strip_vox_about_centre"]
    inside = np.ones(len(positions), bool)
    for axis, key in ((0, "x"), (1, "y")):
        lo, hi = (np.array(strip[key]) + np.array([-0.5, 0.5])) * meta["pixel_size_A"]
        inside &= (positions[:, axis] >= lo) & (positions[:, axis] <= hi)
    return inside


def score(found_positions, published_positions, core_positions, meta) -> dict:
    """found / published, published / found and RMS distance (pm) in the core strip."""
    i, j = mutual_nearest_pairs(found_positions, published_positions, MATCH_A)
    core = {tuple(p) for p in np.round(core_positions, 4)}
    matched_core = np.array([tuple(p) in core for p in np.round(published_positions[j], 4)], bool)
    ours_in_strip = in_strip(found_positions, meta)
    matched_ours = np.zeros(len(found_positions), bool)
    matched_ours[i[matched_core]] = True
    distance = np.linalg.norm(found_positions[i] - published_positions[j], axis=1)[matched_core]
    dz = (found_positions[i, 2] - published_positions[j, 2])[matched_core]
    return {"n_published_core": len(core_positions), "n_found_strip": int(ours_in_strip.sum()),
            "found_over_published": float(matched_core.sum() / len(core_positions)),
            "published_over_found": float((matched_ours & ours_in_strip).sum() / max(ours_in_strip.sum(), 1)),
            "rms_pm": float(100 * np.sqrt(np.mean(distance ** 2))) if len(distance) else float("nan"),
            "rms_z_pm": float(100 * np.sqrt(np.mean(dz ** 2))) if len(dz) else float("nan")}


class StageCPU:
    """A progress callback that records the CPU seconds of each stage of ``run_pipeline``."""

    def __init__(self):
        self.seconds, self._start = {}, time.process_time()

    def __call__(self, fraction, message):
        if message.endswith("…"):
            self._start = time.process_time()
        elif " done in " in message:
            self.seconds[message.split(" ")[0]] = round(time.process_time() - self._start, 1)


def run_area(area, geometry="auto", refine=True, seed=0, out=None, min_distance=None) -> dict:
    series, meta, published, core = load_area(area)
    stage_cpu = StageCPU()
    options = pipeline_options(min_distance=min_distance)
    start, cpu = time.perf_counter(), time.process_time()
    result = run_pipeline(series, "Ta", align=False, geometry=geometry, refine=refine, seed=seed,
                          trace_options=options["trace_options"], refine_options=options["refine_options"],
                          progress=stage_cpu)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    atoms = real_atoms(result.atoms)
    row = {"area": area, "geometry": result.report["parameters"]["geometry"], "n_atoms": len(atoms),
           **score(atoms.positions, published.positions, core.positions, meta),
           "r_factor": result.report["reconstruction"].get("final_r_factor"),
           "r_free": result.report["reconstruction"].get("final_r_free"),
           "precision_pm": result.report.get("refinement", {}).get("precision_pm"),
           "timings_s": result.report["timings_s"], "cpu_s_per_stage": stage_cpu.seconds,
           "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
           "load_average": os.getloadavg()[0]}
    if result.traced is not None:
        traced = real_atoms(result.traced)
        row["before_refinement"] = score(traced.positions, published.positions, core.positions, meta)
    if out is not None:
        from napari_aet.pipeline import write_results
        write_results(result, Path(out) / area)
    return row


def score_results(area, folder) -> dict:
    """The same row for results ``napari-aet run`` (any version) wrote into ``folder``."""
    from napari_aet.project import load_project

    _, meta, published, core = load_area(area)
    report = json.loads((Path(folder) / "report.json").read_text())
    atoms = read_atoms(Path(folder) / "atoms.csv")
    row = {"area": area, "geometry": report["parameters"].get("geometry", "particle (no choice)"),
           "n_atoms": len(atoms), **score(atoms.positions, published.positions, core.positions, meta),
           "r_factor": report["reconstruction"].get("final_r_factor"),
           "r_free": report["reconstruction"].get("final_r_free"), "timings_s": report["timings_s"],
           "wall_s": report["timings_s"]["total"], "cpu_s": float("nan"), "load_average": float("nan")}
    traced = load_project(Path(folder) / "project.aet").time_points[0].traced
    if traced is not None:
        row["before_refinement"] = score(real_atoms(traced).positions, published.positions, core.positions, meta)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--areas", nargs="+", default=["area17", "area53"])
    parser.add_argument("--geometry", default="auto")
    parser.add_argument("--no-refine", action="store_true")
    parser.add_argument("--min-distance", default=None, help="as napari-aet run's (default: the physical table)")
    parser.add_argument("--out", default=None, help="also write each run's results to DIR/AREA")
    parser.add_argument("--score", default=None, help="score the results in DIR/AREA instead of running")
    args = parser.parse_args()
    for area in args.areas:
        if args.score:
            row = score_results(area, Path(args.score) / area)
        else:
            row = run_area(area, args.geometry, not args.no_refine, out=args.out, min_distance=args.min_distance)
        print(json.dumps(row))
        t = row["timings_s"]
        print(f"| {area} | {row['geometry']} | {row['n_atoms']} | {row['found_over_published']:.1%} | "
              f"{row['published_over_found']:.1%} | {row['rms_pm']:.1f} ({row['rms_z_pm']:.1f}) | "
              f"{row['r_factor']:.3f} | {row['r_free']:.3f} | "
              + ", ".join(f"{k} {v:.0f}" for k, v in t.items() if k != "total")
              + f" | {row['wall_s']:.0f} | {row['cpu_s']:.0f} | {row['load_average']:.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
