"""Atom tracing and classification benchmark: accuracy on the full chain, and speed/memory at scale.

Accuracy: FePt particles from :mod:`napari_aet.simulate` (~1,000 and ~8,000 atoms), 51 tilts
over ±70°, Poisson noise at two doses, random per-projection shifts; each run goes through
the whole chain of :func:`napari_aet.pipeline.run_pipeline` (align -> reconstruct -> trace ->
classify; refinement off, so the positions are the traced ones) and is scored by
:func:`napari_aet.analysis.atom_metrics.compare_atoms` against the true atoms (match rule:
mutual nearest neighbours within 1 Å after removing one global translation; atoms classified
as non-atoms are left out).

Scale: an FePt particle of ~20,000 atoms rendered into a 300³ volume (0.4 Å voxels, elongated
along z like a missing-wedge reconstruction, Gaussian noise) is traced and classified in a
fresh process, which reports wall time and its peak resident memory.

    python benchmarks/bench_atoms.py --quick          # ~1,000 atoms, high dose only
    python benchmarks/bench_atoms.py                  # both sizes, both doses, and the scale test
    python benchmarks/bench_atoms.py --scale-only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

#: (label, particle radius Å, image size px): ~1,100 and ~8,000 atoms at 0.4 Å pixels.
SIZES = {"1k": (16.0, 128), "8k": (32.6, 192)}


def accuracy_run(size, dose, method, seed=0, peel_iterations=0):
    from scipy import ndimage
    from scipy.spatial import cKDTree

    from napari_aet.analysis.atom_metrics import compare_atoms, mutual_nearest_pairs
    from napari_aet.geometry import voxel_to_specimen
    from napari_aet.model import AtomModel
    from napari_aet.pipeline import run_pipeline
    from napari_aet.simulate import fcc_particle, simulate_tilt_series

    radius, pixels = SIZES[size]
    truth = fcc_particle(radius=radius, seed=seed)
    data = simulate_tilt_series(truth, shape=(pixels, pixels), dose=dose, seed=seed)
    start = time.perf_counter()
    result = run_pipeline(data.tilt_series, "Fe,Pt", method=method, seed=seed, refine=False,
                          trace_options={"peel_iterations": peel_iterations})
    wall = time.perf_counter() - start
    metrics = compare_atoms(result.atoms, truth, max_distance=1.0)
    atoms = result.atoms.features
    # upper bound for any peak-based tracer: true atoms with a local maximum of the volume within 1 Å
    # (after the same global translation as the comparison)
    volume = result.reconstruction.volume
    maxima = np.argwhere((ndimage.maximum_filter(volume, size=3) == volume) & (volume > 0))
    maxima = voxel_to_specimen(maxima, volume.shape, result.reconstruction.voxel_size)
    tree = cKDTree(maxima + metrics["translation"])
    nearest = tree.query(truth.positions)[0]
    fe = truth.species == "Fe"
    # ... and its chance level: the same fraction for random points in the particle (each true
    # position shifted by a random vector, 1.5 Å rms per axis). When noise maxima are dense, a
    # random point has a maximum within 1 Å too, and the bound above says little about tracing.
    rng = np.random.default_rng(seed)
    random_points = truth.positions + rng.normal(size=truth.positions.shape) * 1.5
    chance = float(np.mean(tree.query(random_points)[0] <= 1.0))
    traced = compare_atoms(AtomModel(result.atoms.positions), truth, max_distance=1.0)
    # doubts made visible: of the atoms the classifier got wrong (true atoms called non-atoms, noise
    # peaks called atoms, wrong species), the fraction flagged ambiguous
    i, j = mutual_nearest_pairs(result.atoms.positions + metrics["translation"], truth.positions, 1.0)
    real = np.zeros(len(result.atoms), bool)
    real[i] = True
    wrong = np.zeros(len(result.atoms), bool)
    wrong[i] = result.atoms.species[i] != truth.species[j]
    wrong |= ~real & ~atoms["non_atom"]
    return {"size": size, "n_true": len(truth), "dose": dose, "method": method, "peel_iterations": peel_iterations,
            "wall_s": round(wall, 1), "timings_s": result.report.get("timings_s", {}),
            "n_non_atoms": int(np.count_nonzero(atoms["non_atom"])),
            "n_ambiguous": int(np.count_nonzero(atoms["ambiguous"] & ~atoms["non_atom"])),
            "n_wrong": int(np.count_nonzero(wrong)),
            "wrong_flagged_ambiguous": float(np.mean(atoms["ambiguous"][wrong])) if wrong.any() else float("nan"),
            "maxima_near_true_fe": float(np.mean(nearest[fe] <= 1.0)),
            "maxima_near_true_pt": float(np.mean(nearest[~fe] <= 1.0)), "maxima_near_random": chance,
            "traced_recall": traced["recall"], "traced_precision": traced["precision"],
            **{k: v for k, v in metrics.items() if k != "translation"}}


def _peak_memory_mb():
    """Peak resident memory of this process (VmHWM; unlike ru_maxrss it is not inherited at fork)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def scale_worker(volume_path, truth_path):
    """Trace and classify the saved volume; print timings, peak memory and accuracy as JSON."""
    import pickle

    from napari_aet.analysis.atom_metrics import compare_atoms
    from napari_aet.classify import classify_atoms
    from napari_aet.model import Reconstruction
    from napari_aet.trace import trace_atoms

    reconstruction = Reconstruction(np.load(volume_path), 0.4)
    with open(truth_path, "rb") as f:
        truth = pickle.load(f)
    loaded = _peak_memory_mb()
    start = time.perf_counter()
    traced = trace_atoms(reconstruction)
    trace_s = time.perf_counter() - start
    start = time.perf_counter()
    atoms = classify_atoms(reconstruction, traced, "Fe,Pt")
    classify_s = time.perf_counter() - start
    peak = _peak_memory_mb()
    metrics = compare_atoms(atoms, truth)
    print(json.dumps({"n_true": len(truth), "n_traced": len(traced), "shape": list(reconstruction.volume.shape),
                      "trace_s": round(trace_s, 1), "classify_s": round(classify_s, 1),
                      "total_s": round(trace_s + classify_s, 1), "peak_rss_mb": round(peak),
                      "rss_after_loading_mb": round(loaded),
                      **{k: v for k, v in metrics.items() if k != "translation"}}))


def scale_run(seed=5):
    import pickle

    from scipy import ndimage

    from napari_aet.geometry import render_atoms
    from napari_aet.simulate import adf_amplitudes, fcc_particle

    truth = fcc_particle(radius=44.6, seed=seed)
    volume = render_atoms(truth.positions, adf_amplitudes(truth.species, 1.0), 0.6, (300, 300, 300), 0.4)
    volume = ndimage.gaussian_filter(volume, (1.2, 0.3, 0.3))
    volume += np.random.default_rng(seed).normal(0, 0.01 * volume.max(), volume.shape).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        volume_path, truth_path = os.path.join(tmp, "volume.npy"), os.path.join(tmp, "truth.pkl")
        np.save(volume_path, volume)
        with open(truth_path, "wb") as f:
            pickle.dump(truth, f)
        del volume
        out = subprocess.run([sys.executable, __file__, "--scale-worker", volume_path, truth_path],
                             check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def _quadratic_fit(volume, start, half, spacing, newton=4):
    """Baseline: quadratic polynomial fitted on an interpolated (cubic spline) neighbourhood of
    ``(2*half/spacing+1)**3`` points, with Newton steps to its vertex; ``start`` ``(N, 3)`` voxels."""
    from scipy import ndimage

    coefficients = ndimage.spline_filter(volume, order=3)
    r = np.arange(-half, half + 1e-9, spacing)
    offsets = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    z, y, x = offsets.T
    design = np.stack([np.ones_like(z), z, y, x, z * z, y * y, x * x, z * y, z * x, y * x], 1)
    pinv = np.linalg.pinv(design)
    centre = start.astype(np.float64)
    for _ in range(newton):
        points = (centre[:, None] + offsets[None]).reshape(-1, 3).T
        values = ndimage.map_coordinates(coefficients, points, order=3, prefilter=False, mode="nearest")
        a = values.reshape(len(centre), -1) @ pinv.T
        hessian = np.empty((len(centre), 3, 3))
        hessian[:, [0, 1, 2], [0, 1, 2]] = 2 * a[:, 4:7]
        hessian[:, 0, 1] = hessian[:, 1, 0] = a[:, 7]
        hessian[:, 0, 2] = hessian[:, 2, 0] = a[:, 8]
        hessian[:, 1, 2] = hessian[:, 2, 1] = a[:, 9]
        centre += np.clip(-np.linalg.solve(hessian, a[:, 1:4, None])[..., 0], -0.5, 0.5)
    return centre


def fit_precision(seed=1, method="genfire"):
    """RMS position error (pm) of sub-voxel fits: the 3D Gaussian of trace_atoms at several fit
    radii vs a quadratic-polynomial baseline, on rendered volumes with known atoms and on a
    full-chain reconstruction (~1,100 atoms, dose 2000, after removing the global translation)."""
    from scipy import ndimage

    from napari_aet.analysis.atom_metrics import compare_atoms, mutual_nearest_pairs
    from napari_aet.geometry import render_atoms, specimen_to_voxel, voxel_to_specimen
    from napari_aet.model import AtomModel, Reconstruction
    from napari_aet.pipeline import run_pipeline
    from napari_aet.simulate import adf_amplitudes, fcc_particle, simulate_tilt_series
    from napari_aet.trace import trace_atoms

    small = fcc_particle(radius=14.0, seed=seed)
    voxel, shape = 0.4, (96, 96, 96)
    ideal = render_atoms(small.positions, adf_amplitudes(small.species, 1.0), 0.6, shape, voxel)
    rng = np.random.default_rng(seed)
    cases = {"rendered, ideal": (small, Reconstruction(ideal, voxel))}
    for noise in (0.01, 0.03):
        noisy = ndimage.gaussian_filter(ideal, (1.2, 0.3, 0.3)) + rng.normal(0, noise * ideal.max(), shape)
        cases[f"rendered, z-elongated, noise {noise:.0%} of max"] = (small, Reconstruction(noisy, voxel))
    radius, pixels = SIZES["1k"]
    truth = fcc_particle(radius=radius, seed=0)
    data = simulate_tilt_series(truth, shape=(pixels, pixels), dose=2000.0, seed=0)
    full = run_pipeline(data.tilt_series, "Fe,Pt", method=method, refine=False, seed=0)
    cases[f"full chain ({method}, dose 2000)"] = (truth, full.reconstruction)
    rows = []
    for name, (truth, reconstruction) in cases.items():
        fe = truth.species == "Fe"
        traced = {r: trace_atoms(reconstruction, fit_radius=r).positions for r in (0.4, 0.8, 1.2)}
        shift = np.array(compare_atoms(AtomModel(traced[0.4]), truth)["translation"])

        def rms(positions):
            i, j = mutual_nearest_pairs(positions + shift, truth.positions, 1.0)
            error = np.linalg.norm(positions[i] + shift - truth.positions[j], axis=1) * 100
            return [len(i)] + [round(float(np.sqrt(np.mean(e ** 2))), 1) for e in (error, error[fe[j]], error[~fe[j]])]

        for r, positions in traced.items():
            rows.append((name, f"Gaussian, cube ±{r} Å ({2 * round(r / voxel) + 1}³ voxels)", *rms(positions)))
        start = np.round(specimen_to_voxel(traced[0.4], reconstruction.volume.shape, voxel))
        for half, spacing in ((1, 1.0), (1, 0.5), (2, 1.0), (2, 0.5)):
            fitted = _quadratic_fit(reconstruction.volume, start, half, spacing)
            positions = voxel_to_specimen(fitted, reconstruction.volume.shape, voxel)
            rows.append((name, f"quadratic + Newton, ±{half} voxel, step {spacing}", *rms(positions)))
    return rows


def _row(r):
    pct = lambda v: f"{100 * v:.2f}%"  # noqa: E731
    stages = ", ".join(f"{k} {v:.0f}" for k, v in r["timings_s"].items())
    return (f"| {r['size']} ({r['n_true']}) | {r['dose']:g} | {r['method']} | {pct(r['recall'])} | "
            f"{pct(r['precision'])} | {r['rms_error_pm']:.1f} | {pct(r['species_accuracy'])} | "
            f"{r['n_non_atoms']} | {r['n_ambiguous']} | {r['n_wrong']} ({pct(r['wrong_flagged_ambiguous'])}) | "
            f"{pct(r['maxima_near_true_fe'])} / "
            f"{pct(r['maxima_near_true_pt'])} | {pct(r['maxima_near_random'])} | {pct(r['traced_recall'])} / "
            f"{pct(r['traced_precision'])} | {stages} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="~1,000 atoms at the high dose only")
    parser.add_argument("--doses", type=float, nargs="+", default=[400.0, 2000.0],
                        help="counts per Pt atom per projection (default 400 2000)")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--method", default="genfire",
                        help="reconstruction method (default genfire, with the pipeline's default parameters)")
    parser.add_argument("--peel", type=int, default=0, help="peel-off rounds in tracing (default 0)")
    parser.add_argument("--scale-only", action="store_true", help="only the 20,000-atom speed/memory test")
    parser.add_argument("--no-scale", action="store_true", help="skip the 20,000-atom speed/memory test")
    parser.add_argument("--fit-precision", action="store_true",
                        help="only compare sub-voxel fits (Gaussian vs quadratic) on rendered volumes")
    parser.add_argument("--json", help="also write all results to this JSON file")
    parser.add_argument("--scale-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.scale_worker:
        return scale_worker(*args.scale_worker)
    results = {"accuracy": [], "scale": None}
    if args.fit_precision:
        print("| volume | fit | matched | RMS all (pm) | Fe | Pt |\n|---|---|---|---|---|---|")
        for row in fit_precision(method=args.method):
            print("| " + " | ".join(map(str, row)) + " |", flush=True)
        return
    if not args.scale_only:
        sizes, doses = (["1k"], [max(args.doses)]) if args.quick else (args.sizes, args.doses)
        print("| particle (atoms) | dose | method | recall | precision | RMS error (pm) | species accuracy "
              "| non-atoms | ambiguous | wrong (flagged ambiguous) | true Fe / Pt with a volume maximum ≤ 1 Å "
              "| random point with a maximum ≤ 1 Å | traced recall / precision (before classification) "
              "| stage times (s) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for size in sizes:
            for dose in doses:
                r = accuracy_run(size, dose, args.method, peel_iterations=args.peel)
                results["accuracy"].append(r)
                print(_row(r), flush=True)
    if not (args.quick or args.no_scale):
        results["scale"] = scale_run()
        print("scale test:", json.dumps(results["scale"]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
