"""The ``napari-aet`` command: ``run``, ``simulate`` and ``demo``.

Bad input ends with one line ``napari-aet: error: …`` and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from .analysis.analyze import LATTICES
from .background import BACKGROUNDS
from .model import InputError, check_elements
from .reconstruct import METHODS
from .reconstruct.extended import GEOMETRIES
from .runs import RUN_OPTIONS, parse_tilt_axis, pipeline_options, summary_text  # noqa: F401 (parse_tilt_axis: API)


class ConsoleProgress:
    """Progress on stderr: a redrawn bar on a terminal, a line per 10 % otherwise."""

    def __init__(self, stream=None):
        self.stream = sys.stderr if stream is None else stream  # looked up now: tests and hosts replace it
        self.tty = self.stream.isatty()
        self.last_step = -1
        self.last_message = ""

    def __call__(self, fraction, message=""):
        step = int(fraction * 10)
        if self.tty:
            bar, width = "#" * int(fraction * 30), max(20, shutil.get_terminal_size().columns - 40)
            self.stream.write(f"\r[{bar:<30}] {fraction:4.0%} {message[:width]:<{width}}")
            if fraction >= 1:
                self.stream.write("\n")
        elif step != self.last_step or (message != self.last_message and message.endswith(("…", "done"))):
            self.stream.write(f"[{fraction:4.0%}] {message}\n")
        self.last_step, self.last_message = step, message
        self.stream.flush()


def _add_common(parser):
    parser.add_argument("--seed", type=int, default=0, help="seed for every random step (default 0)")
    parser.add_argument("--method", default="genfire", choices=METHODS, help="reconstruction (default genfire)")
    parser.add_argument("--iterations", type=int, default=None,
                        help="reconstruction iterations (default: reconstruct.RECOMMENDED)")
    parser.add_argument("--keep-spikes", action="store_true",
                        help="keep single-pixel outliers (X-ray hits, hot pixels; default: replaced by the median of "
                             "their neighbours, counted in the report; docs/alignment.md)")
    parser.add_argument("--background", default="auto", choices=("auto", *BACKGROUNDS),
                        help="removed before reconstructing, estimated outside the particle (a detector offset, a "
                             "support film): auto (default) = smooth for a particle, none for a film")
    parser.add_argument("--normalise", action="store_true",
                        help="scale every projection to the series' mean total intensity before reconstructing, "
                             "undoing beam-current drift (an isolated particle only: wrong for a film, and where "
                             "channelling brightens views near a zone axis; docs/reconstruction.md)")
    parser.add_argument("--no-refine", action="store_true",
                        help="keep the traced positions (skip refinement against the projections)")
    parser.add_argument("--refine-iterations", type=int, default=None,
                        help="refinement iterations per pass at most (default: refine.refine_atoms' default)")
    parser.add_argument("--refine-rounds", type=int, default=None,
                        help="rounds at most of adding atoms the residual shows missing, each followed by a "
                             "refinement pass; they stop once a round adds fewer than 0.5%% of the atoms (default 4; "
                             "each round costs about one pass; 0 = positions only)")
    parser.add_argument("--keep-every-move", action="store_true",
                        help="keep every refinement move (default: each element keeps the part of its atoms' moves "
                             "that projections held out of the fit support; docs/refinement.md)")
    parser.add_argument("--no-precision", action="store_true",
                        help="skip the half-set estimate of the refined positions' error (two refinements against "
                             "the even and the odd projections; docs/refinement.md)")
    parser.add_argument("--min-distance", default=None, metavar="Å|PAIR=Å,...",
                        help="shortest distance tracing and refinement allow between atoms: one number of Å for "
                             "every pair (e.g. 2.2) or pairs overriding the physical table (e.g. Fe-Pt=2.3,Pt=2.4; "
                             "default: 0.85 of the sum of the elements' radii, docs/refinement.md)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari-aet", description=(
        "Atomic electron tomography: tilt series -> aligned -> reconstruction -> traced, classified atoms "
        "-> atoms refined against the projections."))
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the whole chain on a tilt series file")
    run.add_argument("tilt_series", help="TIFF, MRC/ST/ALI, NPY, EMD, DM3/DM4 or GENFIRE .mat/.npy")
    run.add_argument("--pixel-size", type=float, default=None, help="pixel size in Å (else from the file)")
    run.add_argument("--elements", required=True, help="species, e.g. Fe,Pt, in any order (taken lightest first; one element: every real atom gets it)")
    run.add_argument("--out", required=True, help="output directory")
    run.add_argument("--angles", default=None, help="tilt angle file (one per line, or phi theta psi columns)")
    run.add_argument("--layout", default=None, choices=["stack", "genfire", "angles-last"],
                     help="axes of a 3D array: stack (angles, y, x), genfire (x, y, angles) or angles-last (y, x, "
                          "angles); default: detected (genfire when only the last axis has one entry per angle), "
                          "and the summary says which")
    run.add_argument("--tilt-axis", default=None,
                     help="y, x or degrees from the image y axis; checked against the data (default: estimated)")
    run.add_argument("--exclude", default=None, metavar="I,J,...",
                     help="leave out these projections (indices from 0 in the file's order, as napari's slider "
                          "counts; e.g. those the summary names as fitting worst)")
    run.add_argument("--no-align", action="store_true", help="the series is already aligned")
    run.add_argument("--fsc", action="store_true",
                     help="also report the half-set Fourier shell correlation (two more reconstructions)")
    run.add_argument("--geometry", default="auto", choices=GEOMETRIES,
                     help="particle (isolated, inside the box), film (extends beyond the box: films, substrates, "
                          "neighbours entering the field; extended-object RESIRE) or auto (film when the "
                          "high-tilt images carry signal at their edges; default)")
    run.add_argument("--force", action="store_true",
                     help="replace results already in --out (a project.aet with hand edits is kept, renamed)")
    _add_common(run)

    sim = sub.add_parser("simulate", help="write a synthetic FePt tilt series, its angles and ground truth")
    sim.add_argument("--out", required=True, help="output directory")
    sim.add_argument("--size", type=int, default=128, help="image size in pixels (default 128)")
    sim.add_argument("--radius", type=float, default=16.0, help="particle radius in Å (default 16)")
    sim.add_argument("--pixel-size", type=float, default=0.4, help="pixel size in Å (default 0.4)")
    sim.add_argument("--dose", type=float, default=400.0,
                     help="counts per Pt atom per projection (default 400; 0 = noiseless)")
    sim.add_argument("--n-angles", type=int, default=51, help="number of tilts (default 51)")
    sim.add_argument("--max-angle", type=float, default=70.0, help="largest tilt in degrees (default 70)")
    sim.add_argument("--min-angle", type=float, default=None,
                     help="smallest tilt in degrees (default -max-angle; e.g. 0 with --max-angle 177)")
    sim.add_argument("--max-shift", type=float, default=3.0, help="random shifts ±pixels (default 3)")
    sim.add_argument("--elements", default="Fe,Pt", help="light,heavy (default Fe,Pt)")
    sim.add_argument("--seed", type=int, default=0, help="seed (default 0)")

    batch = sub.add_parser("batch", help="run a plan of tilt series (particles x times) on dask, resumably")
    batch.add_argument("plan", help="CSV or TOML, one row per series: series, elements, particle, time, "
                                    "run options as columns (see docs/batch.md)")
    batch.add_argument("--out", required=True, help="study directory: <particle>/<time>/, summary.csv")
    engine = batch.add_mutually_exclusive_group()
    engine.add_argument("--workers", type=int, default=None,
                        help="local single-threaded worker processes (default: one per core)")
    engine.add_argument("--scheduler", default=None, help="address of a running dask scheduler, tcp://host:8786")
    batch.add_argument("--force", action="store_true",
                       help="redo series that already have a result (hand-edited projects are kept, renamed)")

    demo = sub.add_parser("demo", help="simulate the sample, run the whole chain, compare with the truth")
    demo.add_argument("--gui", action="store_true", help="open napari with every layer at the end")
    demo.add_argument("--out", default=None, help="also write the results here")
    _add_common(demo)

    analyze = sub.add_parser("analyze", help="lattice, chemical order, nuclei, structure and strain of an atom model")
    analyze.add_argument("atoms", help="atoms CSV (x,y,z,element in Å), a run directory holding atoms.csv, or a "
                                       "study (.aet, hand edits included)")
    analyze.add_argument("--out", required=True, help="output directory")
    analyze.add_argument("--time", default=None, help="the study's time point to analyse (when it holds several)")
    analyze.add_argument("--lattice", default="auto", choices=LATTICES,
                         help="auto (default): fcc or bcc, whichever fits, else none; none: amorphous — pair "
                              "distribution, coordination and Q4/Q6 only (no lattice fit, chemical order, "
                              "nuclei or strain)")
    analyze.add_argument("--lattice-constant", type=float, default=None,
                         help="lattice constant in Å (default: from the first peak of the pair distribution)")
    analyze.add_argument("--min-nucleus", type=int, default=13, help="fewest atoms of a nucleus (default 13)")

    track = sub.add_parser("track", help="register time points of one particle, track its sites and nuclei")
    track.add_argument("sources", nargs="+", help="analyze outputs (or run directories) in time order, or one "
                                                  "study (.aet: its time points, hand edits included)")
    track.add_argument("--out", required=True, help="output directory")
    track.add_argument("--times", default=None,
                       help="labels of the time points for the time columns, e.g. 0,30,60 (default 0,1,2,...)")
    return parser


def command_run(args) -> int:
    from .runs import run_to_directory

    report = run_to_directory(args.tilt_series, args.out, args.elements, force=args.force,
                              **{name: getattr(args, name) for name in RUN_OPTIONS},
                              progress=ConsoleProgress(), log=print)
    print(summary_text(report))
    print(f"Results in {Path(args.out).resolve()}")
    return 0


def _stage_options(args) -> dict:
    """run_pipeline's keyword arguments for the options shared by ``run`` and ``demo``."""
    return pipeline_options(keep_spikes=args.keep_spikes, iterations=args.iterations, background=args.background,
                            normalise=args.normalise,
                            no_refine=args.no_refine, refine_iterations=args.refine_iterations,
                            refine_rounds=args.refine_rounds,
                            keep_every_move=args.keep_every_move, no_precision=args.no_precision,
                            min_distance=args.min_distance)


def command_batch(args) -> int:
    from .batch import run_batch

    rows = run_batch(args.plan, args.out, workers=args.workers, scheduler=args.scheduler, force=args.force,
                     progress=ConsoleProgress(), log=print)
    counts = {status: sum(row["status"] == status for row in rows if row["step"] == "run")
              for status in ("done", "skipped", "failed")}
    failed_steps = sum(row["status"] == "failed" for row in rows if row["step"] != "run")
    print(f"Series: {counts['done']} done, {counts['skipped']} already done (skipped), {counts['failed']} failed"
          + (f"; {failed_steps} particle study steps failed" if failed_steps else "")
          + f". Summary: {Path(args.out).resolve() / 'summary.csv'}")
    return 1 if counts["failed"] or failed_steps else 0


def command_simulate(args) -> int:
    from .io import write_atoms, write_tilt_series
    from .pipeline import check_writable
    from .simulate import fcc_particle, simulate_tilt_series

    out = check_writable(args.out)
    min_angle = -args.max_angle if args.min_angle is None else args.min_angle
    if args.n_angles < 2 or not 0 < args.max_angle - min_angle < 360:
        raise InputError(f"--n-angles must be at least 2 and the tilts from --min-angle to --max-angle "
                         f"span more than 0 and less than 360 degrees, got {min_angle:g} to {args.max_angle:g}")
    atoms = fcc_particle(radius=args.radius, elements=check_elements(args.elements), seed=args.seed)
    angles = np.linspace(min_angle, args.max_angle, args.n_angles)
    sim = simulate_tilt_series(atoms, angles, shape=(args.size, args.size), pixel_size=args.pixel_size,
                               dose=args.dose or None, max_shift=args.max_shift, seed=args.seed)
    write_tilt_series(out / "tilt_series.tif", sim.tilt_series)
    write_atoms(out / "truth_atoms.csv", sim.atoms)
    (out / "truth.json").write_text(json.dumps({
        "true_shifts_dy_dx_px": sim.true_shifts.tolist(), "pixel_size_A": args.pixel_size,
        "dose": args.dose, "seed": args.seed, "n_atoms": len(atoms)}, indent=2))
    print(f"Wrote {len(atoms)}-atom particle, {args.n_angles} projections of {args.size}x{args.size} px "
          f"to {out.resolve()} (tilt_series.tif + .tlt, truth_atoms.csv, truth.json)")
    return 0


def command_analyze(args) -> int:
    from .analysis.outputs import analyze_to_directory

    summary = analyze_to_directory(args.atoms, args.out, time=args.time, lattice=args.lattice,
                                   lattice_constant=args.lattice_constant, min_nucleus=args.min_nucleus,
                                   progress=ConsoleProgress())
    print(f"{summary['n_atoms']} atoms: {summary['text']}. Results in {Path(args.out).resolve()}")
    return 0


def command_track(args) -> int:
    from .analysis.outputs import track_to_directory

    times = None if args.times is None else [label.strip() for label in args.times.split(",")]
    summary = track_to_directory(args.sources, args.out, times=times, progress=ConsoleProgress())
    residuals = ", ".join(f"{r:.2f}" for r in summary["residuals_A"][1:])
    events = ", ".join(f"{n} {e}" for e, n in summary["events"].items())
    print(f"{summary['n_times']} times registered onto the first (residuals {residuals} Å); "
          f"{summary['n_tracks']} site tracks; nucleus events: {events}. Results in {Path(args.out).resolve()}")
    return 0


def command_demo(args) -> int:
    from .analysis.atom_metrics import compare_atoms
    from .pipeline import real_atoms, run_pipeline, write_results
    from .simulate import sample_fept

    start = time.perf_counter()
    sim = sample_fept(seed=args.seed)
    series = sim.tilt_series
    print(f"Simulated FePt particle: {len(sim.atoms)} atoms, {series.n_angles} projections of "
          f"{series.projections.shape[1]}x{series.projections.shape[2]} px at {series.pixel_size} Å, "
          f"tilts ±{np.max(series.angles):.0f}°, random shifts, Poisson noise")
    result = run_pipeline(series, ("Fe", "Pt"), method=args.method, **_stage_options(args), seed=args.seed,
                          progress=ConsoleProgress())
    truth = compare_atoms(real_atoms(result.atoms), sim.atoms)
    result.report["truth_comparison"] = truth
    if result.traced is not None:
        before = compare_atoms(real_atoms(result.traced), sim.atoms)
        result.report["truth_comparison_before_refinement"] = before
    if args.out:
        write_results(result, args.out)
    print(summary_text(result.report))
    print(f"Against the simulator's truth: {truth['recall']:.1%} of atoms found, "
          f"{truth['precision']:.1%} of traced atoms real, RMS position error {truth['rms_error_pm']:.1f} pm, "
          f"species correct for {truth['species_accuracy']:.1%} (match: mutual nearest neighbours "
          f"within 1 Å after removing a global translation)")
    if result.traced is not None:
        print(f"Before refinement: {before['recall']:.1%} found, {before['precision']:.1%} real, "
              f"RMS position error {before['rms_error_pm']:.1f} pm")
    print(f"Demo finished in {time.perf_counter() - start:.1f} s")
    if args.gui:
        show_in_napari(result, sim.atoms)
    return 0


def add_result_layers(viewer, result, truth=None):
    """Add every layer of a pipeline result (and optionally the true atoms, hidden) to a viewer."""
    from ._napari.layers import atoms_layer, tilt_series_layer, volume_layer

    recon = result.reconstruction
    layers = [tilt_series_layer(result.raw, "tilt series"), tilt_series_layer(result.aligned, "aligned"),
              volume_layer(recon), atoms_layer(result.atoms, recon.volume.shape, recon.voxel_size)]
    if result.traced is not None:
        layers.append(atoms_layer(result.traced, recon.volume.shape, recon.voxel_size, name="traced atoms"))
    if truth is not None:
        layers.append(atoms_layer(truth, recon.volume.shape, recon.voxel_size, name="ground truth atoms"))
    for data, kwargs, kind in layers:
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    for name in ("tilt series", "aligned", "traced atoms", "ground truth atoms"):
        if name in viewer.layers:
            viewer.layers[name].visible = False
    viewer.dims.ndisplay = 3


def show_in_napari(result, truth=None):
    """Open napari with every layer of a pipeline result (blocks until the window closes)."""
    import napari

    add_result_layers(napari.Viewer(title="napari-aet demo"), result, truth)
    napari.run()


COMMANDS = {"run": command_run, "batch": command_batch, "simulate": command_simulate, "demo": command_demo,
            "analyze": command_analyze, "track": command_track}


def _plain_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as the command line shows it: "napari-aet: warning: …", without Python's source line."""
    return f"napari-aet: warning: {message}\n"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    python_format, warnings.formatwarning = warnings.formatwarning, _plain_warning
    try:
        return COMMANDS[args.command](args)
    except InputError as error:
        _say(f"napari-aet: error: {error}")
        return 2
    except KeyboardInterrupt:
        kept = ("finished series are kept: run the same command again to finish the rest"
                if args.command == "batch" else "no results written")
        _say(f"napari-aet: interrupted; {kept}")
        return 130
    finally:
        warnings.formatwarning = python_format


def _say(line):
    """``line`` on stderr, on a line of its own: on a terminal it replaces a progress bar drawn there."""
    print(("\r\033[K" if sys.stderr.isatty() else "") + line, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
