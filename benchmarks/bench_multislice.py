"""The chain on a multislice simulation: does napari-aet hold up when the data are not its own model?

napari-aet's simulator and its refinement share one image model (Gaussian atoms, intensity linear
in the number of atoms). Real ADF-STEM images, and the multislice simulations that other groups
test with, have channelling along atomic columns, probe tails and a non-linear dependence on Z
and thickness. This benchmark simulates an FePt particle with abTEM's PRISM multislice instead,
then runs ``pipeline.run_pipeline`` on it and compares with the truth (the match rule of
``bench_refine.py``: mutual nearest neighbours within 1 Å after removing a global translation).

Two steps, because abTEM is not a dependency of napari-aet (install it in its own environment):

    python -m venv /tmp/msvenv && /tmp/msvenv/bin/pip install abtem && /tmp/msvenv/bin/pip install --no-deps -e .
    /tmp/msvenv/bin/python benchmarks/bench_multislice.py simulate --out ms/    # resumable
    python benchmarks/bench_multislice.py run --out ms/ --dose 400 --seed 0 [--keep-every-move]
    python benchmarks/bench_multislice.py floor --out ms/

``floor`` measures what the image model itself costs: ``refine_atoms`` started from the true
atoms on the noiseless, unshifted images, so any error it ends with is model mismatch.

``simulate`` (65–112 s per tilt on the 2-core machine, shared with other jobs) writes the truth
(``particle.npz``: ``fcc_particle(radius=12, seed=0)``, 405 atoms) and one noiseless image per tilt (``tilt_NN.npy``, (ny, nx), 88² pixels of 0.4 Å; 31 tilts over
±70° about the image y axis, napari-aet's convention: docs/conventions.md). Microscope: 300 kV,
25 mrad probe semi-angle, annular detector 45–105 mrad, no aberrations, 2 Å slices, Lobato
potentials, one frozen configuration (the truth's 0.05 Å jitter), PRISM interpolation 4.
``run`` scales the images so that the mean projection holds ``dose`` counts per Pt atom under a
Z^1.7 rule (the same normalisation as ``simulate.adf_amplitudes``; the multislice contrast
itself decides the Fe/Pt ratio), displaces each image by a random sub-pixel shift of up to
``--max-shift`` pixels, draws Poisson noise, and runs the whole chain with its defaults.
"""

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

BOX, PIXEL, GRID = 35.2, 0.4, 576   # field of view Å; scan step Å; potential grid points


def zone_axis_orientation(positions, lattice):
    """``positions`` ``(N, 3)`` Å of an fcc particle turned so that its cube axes lie along x, y
    and z: [010] along the tilt axis (y) and [001] along the beam at 0°, so that the [001] and
    <101> zone axes come at 0° and ±45° tilt. The cube axes come from nearest-neighbour vectors
    (a/2 <110>): two perpendicular ones add up to a cube axis."""
    centre = np.argmin(np.linalg.norm(positions - positions.mean(axis=0), axis=1))
    vectors = positions - positions[centre]
    vectors = vectors[np.abs(np.linalg.norm(vectors, axis=1) - lattice / np.sqrt(2)) < 0.3]
    u = vectors[0] / np.linalg.norm(vectors[0])
    v = vectors[np.argmin(np.abs(vectors @ u))]
    v /= np.linalg.norm(v)
    x, y = (u + v) / np.linalg.norm(u + v), (u - v) / np.linalg.norm(u - v)
    axes = np.stack([x, y, np.cross(x, y)])  # rows: the cube axes in the specimen frame
    return positions @ axes.T


def simulate(out: Path, n_tilts, max_angle, zone_axis):
    import abtem
    import ase

    from napari_aet.geometry import rotation_matrices
    from napari_aet.simulate import FEPT_LATTICE, fcc_particle

    out.mkdir(parents=True, exist_ok=True)
    truth = fcc_particle(radius=12.0, seed=0)
    positions = zone_axis_orientation(truth.positions, FEPT_LATTICE) if zone_axis else truth.positions
    angles = np.linspace(-max_angle, max_angle, n_tilts)
    np.savez(out / "particle.npz", positions=positions, species=truth.species.astype(str), angles=angles)
    abtem.config.set({"device": "cpu", "fft": "fftw", "dask.lazy": False})
    warnings.filterwarnings("ignore", message="The interpolation factor does not exactly divide")
    for i, matrix in enumerate(rotation_matrices(angles)):
        path = out / f"tilt_{i:02d}.npy"
        if path.exists():
            continue
        start = time.perf_counter()
        atoms = ase.Atoms(list(truth.species), positions=positions @ matrix.T + BOX / 2, cell=[BOX] * 3)
        potential = abtem.Potential(atoms, gpts=GRID, slice_thickness=2.0, parametrization="lobato",
                                    projection="infinite")
        probe = abtem.SMatrix(potential=potential, energy=300e3, semiangle_cutoff=25, interpolation=4)
        image = probe.scan(scan=abtem.GridScan(start=(0, 0), end=(BOX, BOX), sampling=PIXEL),
                           detectors=abtem.AnnularDetector(inner=45, outer=105)).compute()
        np.save(path, np.asarray(image.array).T.astype(np.float32))   # abTEM's (x, y) -> (ny, nx)
        print(f"tilt {i} ({angles[i]:+.1f}°): {time.perf_counter() - start:.0f} s", flush=True)


def load(out: Path, dose):
    """The truth, the noiseless images ``(n, ny, nx)`` scaled to ``dose`` counts per Pt atom and
    their tilt angles (degrees)."""
    from napari_aet.model import AtomModel
    from napari_aet.simulate import adf_amplitudes

    saved = np.load(out / "particle.npz")
    truth = AtomModel(saved["positions"], saved["species"].astype(object))
    angles = saved["angles"] if "angles" in saved else np.linspace(-70, 70, 31)  # series simulated before
    clean = np.stack([np.load(out / f"tilt_{i:02d}.npy") for i in range(len(angles))])
    return truth, clean * (adf_amplitudes(truth.species, dose).sum() / clean.sum(axis=(1, 2)).mean()), angles


def floor(out: Path):
    from napari_aet.model import TiltSeries
    from napari_aet.refine import refine_atoms

    truth, clean, angles = load(out, 1.0)
    refinement = refine_atoms(TiltSeries(clean, angles, PIXEL), truth, elements=("Fe", "Pt"))
    error = np.linalg.norm(refinement.atoms.positions[:len(truth)] - truth.positions, axis=1) * 100
    rms = {e: np.sqrt(np.mean(error[truth.species == e] ** 2)) for e in ("Fe", "Pt")}
    print(f"refined from the truth, noiseless: RMS {np.sqrt(np.mean(error ** 2)):.1f} pm (Fe {rms['Fe']:.1f}, "
          f"Pt {rms['Pt']:.1f}); R-factor {refinement.errors['r_factor'][-1]:.3f}; widths "
          + ", ".join(f"{e} {w:.2f} Å" for e, w in refinement.widths.items())
          + "; Fe/Pt height ratio " + f"{refinement.heights['Fe'] / refinement.heights['Pt']:.3f}")


def run(out: Path, dose, seed, max_shift, validate_moves=True):
    from scipy import ndimage
    from scipy.spatial import cKDTree

    from napari_aet.analysis.atom_metrics import compare_atoms, mutual_nearest_pairs
    from napari_aet.elements import close_pairs, min_distance_table
    from napari_aet.model import TiltSeries
    from napari_aet.pipeline import real_atoms, run_pipeline
    from napari_aet.refine import describe_moves_kept

    truth, clean, angles = load(out, dose)
    rng = np.random.default_rng(seed)
    shifts = rng.uniform(-max_shift, max_shift, size=(len(angles), 2))
    moved = np.stack([ndimage.shift(image, shift, order=3, mode="nearest") for image, shift in zip(clean, shifts)])
    series = TiltSeries(rng.poisson(np.maximum(moved, 0)).astype(np.float32), angles, PIXEL)
    start = time.perf_counter()
    result = run_pipeline(series, "Fe,Pt", seed=seed, refine_options={"validate_moves": validate_moves})
    wall = time.perf_counter() - start
    table = min_distance_table(("Fe", "Pt"))
    print("| stage | atoms | recall | precision | RMS pm | Fe RMS pm | Pt RMS pm | species | pairs below the "
          "physical minimum | nearest pair Å |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for stage, atoms in (("traced", result.traced), ("refined", result.atoms)):
        atoms = real_atoms(atoms)
        m = compare_atoms(atoms, truth)
        i, j = mutual_nearest_pairs(atoms.positions + m["translation"], truth.positions, 1.0)
        error = np.linalg.norm(atoms.positions[i] + m["translation"] - truth.positions[j], axis=1)
        rms = {e: np.sqrt(np.mean(error[truth.species[j] == e] ** 2)) * 100 for e in ("Fe", "Pt")}
        index = np.searchsorted(["Fe", "Pt"], atoms.species.astype(str))
        too_close = len(close_pairs(atoms.positions, index, table))
        nearest = cKDTree(atoms.positions).query(atoms.positions, k=2)[0][:, 1].min()
        print(f"| {stage} | {len(atoms)} | {m['recall']:.2%} | {m['precision']:.2%} | {m['rms_error_pm']:.1f} | "
              f"{rms['Fe']:.1f} | {rms['Pt']:.1f} | {m['species_accuracy']:.2%} | {too_close} | {nearest:.2f} |")
    timings = ", ".join(f"{k} {v:.0f} s" for k, v in result.report["timings_s"].items())
    kept = describe_moves_kept(result.report["refinement"]["moves_kept"]) or "every move kept (not checked)"
    print(f"\nTruth {len(truth)} atoms; dose {dose:g}, seed {seed}, shifts ±{max_shift:g} px; {timings}; "
          f"wall {wall:.0f} s; {kept}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["simulate", "run", "floor"])
    parser.add_argument("--out", type=Path, default=Path("ms"), help="directory of the simulated series")
    parser.add_argument("--dose", type=float, default=400.0, help="counts per Pt atom per projection")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-shift", type=float, default=3.0, help="random shifts, pixels")
    parser.add_argument("--tilts", type=int, default=31, help="simulate: number of tilts")
    parser.add_argument("--max-angle", type=float, default=70.0, help="simulate: tilts over ± this, degrees")
    parser.add_argument("--keep-every-move", action="store_true",
                        help="run: refine without checking the moves on held-out projections")
    parser.add_argument("--zone-axis", action="store_true",
                        help="simulate: [010] along the tilt axis, [001] and <101> zone axes at 0° and ±45°")
    args = parser.parse_args()
    if args.step == "simulate":
        simulate(args.out, args.tilts, args.max_angle, args.zone_axis)
    elif args.step == "floor":
        floor(args.out)
    else:
        run(args.out, args.dose, args.seed, args.max_shift, validate_moves=not args.keep_every_move)


if __name__ == "__main__":
    main()
