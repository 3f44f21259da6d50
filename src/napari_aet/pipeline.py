"""The headless chain: tilt series -> aligned -> reconstruction -> traced, classified atoms
-> atoms refined against the projections.

The CLI, the demo and batch scripts call :func:`run_pipeline` and :func:`write_results`;
the widgets call the same stage functions one by one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import secrets
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .model import AtomModel, InputError, Reconstruction, TiltSeries, check_elements, real_atoms, utc_now
from .progress import ProgressCallback, report, sub_progress
from .reconstruct import parameters as method_parameters
from .refine import Refinement

#: Share of the total progress bar given to each stage.
STAGE_WEIGHTS = {"align": 0.15, "reconstruct": 0.45, "fsc": 0.1, "trace": 0.05, "classify": 0.05,
                 "refine": 0.2}


@dataclass
class PipelineResult:
    """Everything one run produced; ``report`` is what goes to ``report.json``.

    atoms : the final atoms (refined when refinement ran); traced : the classified atoms
    before refinement (None without refinement); refinement : its species heights, widths,
    per-projection scale and background (None without refinement); stages : the record of each
    stage that ran (:attr:`napari_aet.project.TimePoint.stages`), saved with the project so that
    a study made of it can run any stage again.
    """

    raw: TiltSeries
    aligned: TiltSeries
    reconstruction: Reconstruction
    atoms: AtomModel
    traced: AtomModel | None = None
    refinement: Refinement | None = None
    report: dict = field(default_factory=dict)
    stages: dict = field(default_factory=dict)


def run_pipeline(series: TiltSeries, elements, *, keep_spikes=False, align=True, method="genfire",
                 reconstruct_options=None, align_options=None, trace_options=None, classify_options=None, refine=True,
                 refine_options=None, fsc=False, seed=0, geometry="auto",
                 progress: ProgressCallback = None) -> PipelineResult:
    """Run every stage on ``series``.

    elements : element symbols, lightest first ("Fe,Pt"); with a single element every
        traced peak gets it, except those classified as noise (``non_atom``).
    keep_spikes : keep single-pixel outliers (X-ray hits, hot pixels); by default they are
        replaced by the median of their neighbours first (:func:`napari_aet.preprocess.replace_spikes`;
        the study's raw series is the cleaned one) and the report counts them
        (``input.spikes_replaced``).
    align : estimate and apply shifts and tilt axis (:func:`napari_aet.align.align_auto`).
    method : reconstruction method, one of :data:`napari_aet.reconstruct.METHODS`.
    refine : refine the classified atoms' positions, and each species' height and width, against
        the aligned projections (:func:`napari_aet.refine.refine_atoms`).
    *_options : keyword parameters passed to each stage; reconstruction options update
        the method's :data:`napari_aet.reconstruct.RECOMMENDED` parameters.
    fsc : also reconstruct the even and odd projections and report their Fourier shell
        correlation and the resolution where it drops below 0.143 (two more reconstructions).
    seed : for every random step (R-free selection, mixture-model initialisation).
    geometry : "particle" (an isolated object inside the box), "film" (an extended object: films,
        substrates, neighbours entering the field; reconstructed by RESIRE over a region wider
        than the box, :mod:`napari_aet.reconstruct.extended`) or "auto" (film when the high-tilt
        projections carry signal at their edges). The report records the geometry used, and the
        range of the projections' total intensities over their mean
        (``reconstruction.relative_totals``). A particle's background (a detector offset, a support
        film) is removed before reconstructing and refining (``reconstruct_options={"background":
        "auto"}``, the default: "smooth" for a particle, "none" for a film; or "none", "constant",
        "smooth"; report ``reconstruction.background``). ``reconstruct_options={"normalise": True}``
        scales the projections to one total intensity before reconstructing (beam-current drift;
        the factors' range in ``reconstruction.normalisation_factors``).
    progress : ``progress(fraction, message)`` over the whole chain.
    """
    from . import workflow
    from .preprocess import replace_spikes
    from .project import TimePoint

    elements = check_elements(elements)
    workflow.check_series(series, elements, (trace_options or {}).get("min_distance"))
    iterations = (reconstruct_options or {}).get("n_iterations")  # checked now, not after the alignment
    if iterations is not None and (int(iterations) != iterations or iterations < 1):
        raise InputError(f"reconstruction iterations must be a whole number of 1 or more, got {iterations}")
    timings, parameters = {}, {"elements": list(elements), "keep_spikes": bool(keep_spikes), "align": bool(align),
                               "method": method, "seed": seed}
    bounds = np.cumsum([0.0, *STAGE_WEIGHTS.values()])
    stage_progress = {name: sub_progress(progress, lo, hi)
                      for name, lo, hi in zip(STAGE_WEIGHTS, bounds[:-1], bounds[1:])}
    if not keep_spikes:
        series = replace_spikes(series)
    point = TimePoint("t0", raw=series, parameters={"elements": list(elements)})

    def timed(name, *args, **kwargs):
        report(stage_progress[name], 0.0, f"{name}…")
        start = time.perf_counter()
        out = workflow.run_stage(point, name, *args, progress=stage_progress[name], **kwargs)
        timings[name] = round(time.perf_counter() - start, 3)
        report(stage_progress[name], 1.0, f"{name} done in {timings[name]:.1f} s")
        return out

    if align:
        options = dict(align_options or {})
        parameters["align_options"] = options
        timed("align", **{"spikes": "keep", **options})  # replaced in the raw series already, unless kept

    options = {**(reconstruct_options or {})}
    if "seed" in method_parameters(method):
        options.setdefault("seed", seed)
    if fsc:  # the half-set reconstructions are part of the stage (its timing includes them)
        stage_progress["reconstruct"] = sub_progress(progress, bounds[1], bounds[3])
    reconstruction = timed("reconstruct", method=method, geometry=geometry, fsc=fsc, **options)
    parameters["method"], parameters["geometry"] = reconstruction.method, reconstruction.metadata["geometry"]
    parameters["edge_signal"] = reconstruction.metadata["edge_signal"]
    parameters["reconstruct_options"] = {k: v for k, v in point.stages["reconstruct"]["parameters"].items()
                                         if k not in ("method", "geometry", "fsc")}

    options = dict(trace_options or {})  # min_distance: from the elements (workflow._trace_defaults)
    parameters["trace_options"] = options
    timed("trace", **options)

    options = {"seed": seed, **(classify_options or {})}
    parameters["classify_options"] = options
    atoms = timed("classify", elements, **options)

    refinement = None
    if refine:
        options = {"seed": seed, **(refine_options or {})}
        refinement = timed("refine", elements=elements, **options)
        atoms = refinement.atoms  # the background removed: the reconstruction's, unless given
        parameters["refine_options"] = {**options, "background": point.stages["refine"]["parameters"]["background"]}

    result = PipelineResult(series, workflow.tilt_series_of(point), reconstruction, atoms, point.traced, refinement,
                            stages=point.stages)
    result.report = build_report(result, parameters, timings, point.report.get("alignment", {}),
                                 point.report.get("classify_warnings", []))
    return result


def _jsonable(value):
    """Convert numpy values, arrays and typed results (dataclasses) inside a report to plain JSON types."""
    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def build_report(result: PipelineResult, parameters, timings, alignment, warnings=()) -> dict:
    """The content of ``report.json``: versions, parameters, timings, counts, error metrics, the
    ``alignment`` as the study keeps it (:meth:`napari_aet.align.AlignmentReport.record`; {} when
    not aligned), and the classification's ``warnings`` about the element list."""
    from .preprocess import relative_totals

    atoms = real_atoms(result.atoms)
    elements, counts = np.unique(atoms.species.astype(str), return_counts=True)
    errors = result.reconstruction.errors
    ambiguous = atoms.features.get("ambiguous")
    summary = {
        "napari_aet_version": __version__,
        "created": utc_now(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "input": {"shape": list(result.raw.projections.shape), "pixel_size_A": result.raw.pixel_size,
                  "angles_deg": [float(np.min(result.raw.angles)), float(np.max(result.raw.angles))],
                  "source": result.raw.metadata.get("source", ""),
                  "spikes_replaced": len(result.raw.metadata.get("spikes", [])),
                  "excluded_projections": result.raw.metadata.get("excluded_projections", [])},
        "parameters": parameters,
        "timings_s": {**timings, "total": round(sum(timings.values()), 3)},
        "alignment": alignment,
        "reconstruction": {"method": result.reconstruction.method,
                           "shape": list(result.reconstruction.volume.shape),
                           "voxel_size_A": result.reconstruction.voxel_size,
                           **{f"final_{k}": (v[-1] if v else None) for k, v in errors.items()},
                           "errors_per_iteration": errors,
                           **({"half_set_fsc": result.reconstruction.metadata["fsc"]}
                              if "fsc" in result.reconstruction.metadata else {}),
                           "relative_totals": _range(relative_totals(result.aligned)),
                           "background": result.reconstruction.metadata.get("background", {"method": "none"}),
                           **_normalisation_report(result.reconstruction.metadata)},
        **({"refinement": _refinement_report(result.refinement, result.aligned)}
           if result.refinement is not None else {}),
        "atoms": {"n_atoms": len(atoms), "n_rejected_peaks": len(result.atoms) - len(atoms),
                  "per_element": dict(zip(elements.tolist(), counts.tolist())),
                  "n_ambiguous": int(np.count_nonzero(ambiguous)) if ambiguous is not None else 0,
                  "n_outside_box": _outside_box(atoms, result.reconstruction),
                  "warnings": list(warnings)},
    }
    return _jsonable(summary)


def _outside_box(atoms: AtomModel, reconstruction: Reconstruction) -> int:
    """How many ``atoms`` lie outside the reconstructed box (refined at its edges, or a film's
    material beyond the field of view)."""
    from .geometry import specimen_to_voxel

    voxels = specimen_to_voxel(atoms.positions, reconstruction.volume.shape, reconstruction.voxel_size)
    return int(np.count_nonzero(np.any((voxels < -0.5) | (voxels > np.array(reconstruction.volume.shape) - 0.5),
                                       axis=1)))


def _range(values) -> list[float]:
    return [float(np.min(values)), float(np.max(values))]


def _normalisation_report(metadata) -> dict:
    """The range of the factors that scaled the projections to one total intensity ({} if none did)."""
    factors = metadata.get("normalisation", {}).get("factors")
    return {"normalisation_factors": _range(factors)} if factors else {}


def _refinement_report(refinement: Refinement, series: TiltSeries) -> dict:
    """Species heights (counts per projection) and widths (Å), error curves, atoms added and
    removed (``n_added`` / ``n_removed``: in the final model; ``reasons``: every addition,
    removal and rejected candidate over all rounds, counted by reason), the pairs held at their
    minimum distance (``pairs_at_minimum_distance``), how far the others
    moved (Å), the fraction of each element's moves that held-out projections supported
    (``moves_kept``) and, per completion round, how correlated the residual's pixels were
    (``residual_correlation``: the variance factor of the candidates' test, 1 = independent) and the
    half-set estimate of the positions' error per element (``precision_pm``, empty when not made),
    each projection's RMS residual over their median (``projection_misfit``) and those that fit far
    worse than the others (``worst_projections``: index in the file as ``--exclude`` counts it, tilt
    in degrees — θ of Euler angles — and misfit, worst first; :func:`napari_aet.refine.worst_projections`)
    of the refined ``series``."""
    from .geometry import euler_angles
    from .refine import worst_projections

    misfit = refinement.errors.get("projection_misfit", [])
    tilts, file_indices = euler_angles(series.angles)[:, 1], series.file_indices()
    worst = [{"index": file_indices[i], "tilt_deg": float(tilts[i]), "misfit": float(misfit[i])}
             for i in worst_projections(misfit)] if len(misfit) else []
    features = refinement.atoms.features
    shift = features["refine_shift"][np.isfinite(features["refine_shift"]) & (refinement.atoms.species != "")]
    return {"heights": refinement.heights, "widths_A": refinement.widths,
            "final_r_factor": refinement.errors["r_factor"][-1],
            "errors_per_iteration": {k: refinement.errors[k] for k in ("r_factor", "rms_step")},
            "n_added": int(np.count_nonzero(features["refine_added"])),
            "n_removed": int(np.count_nonzero(features["refine_removed"])),
            "reasons": refinement.errors.get("reasons", {}),
            "pairs_at_minimum_distance": refinement.errors.get("pairs_at_minimum_distance", 0),
            "moves_kept": refinement.errors.get("moves_kept", {}),
            "residual_correlation": refinement.errors.get("residual_correlation", []),
            "shift_A": {"median": float(np.median(shift)), "max": float(np.max(shift))} if len(shift) else {},
            "precision_pm": refinement.precision,
            "projection_misfit": misfit, "worst_projections": worst,
            "scale_range": [float(refinement.scale.min()), float(refinement.scale.max())]}


def check_writable(out_dir, *, create=True) -> Path:
    """Check that files can be written in ``out_dir``, creating it (and its parents) if ``create``.

    With ``create=False`` nothing is made: a missing ``out_dir`` passes when its nearest existing
    parent is a writable directory (a run creates ``out_dir`` only once it has results).
    """
    out_dir = Path(out_dir)
    try:
        if create:
            out_dir.mkdir(parents=True, exist_ok=True)
        existing = next(path for path in (out_dir, *out_dir.absolute().parents) if path.exists())
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{existing} is not a directory")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise InputError(f"cannot write to output directory {out_dir}: {error.strerror or error}") from None
    return out_dir


def write_results(result: PipelineResult, out_dir, extra_report=None) -> dict:
    """Write ``atoms.csv``, ``reconstruction.mrc``, ``aligned.tif``, ``report.json`` and
    ``project.aet`` into ``out_dir``. Files are written to a hidden staging folder and
    moved in only when all succeeded, ``report.json`` last, so a failed run leaves no
    half-written result. A missing ``out_dir`` appears whole, by renaming the staging folder;
    if writing fails, no directory it created is left behind. Returns the report written."""
    from .io import write_atoms, write_tilt_series, write_volume
    from .project import Project, TimePoint, save_project

    out_dir = check_writable(out_dir, create=False)
    full_report = _jsonable({**result.report, **(extra_report or {})})
    created = [path for path in (out_dir, *out_dir.absolute().parents) if not path.exists()]  # deepest first
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(4)
    staging = out_dir / f".partial-{token}" if out_dir.exists() else out_dir.with_name(
        f".partial-{out_dir.name}-{token}")
    staging.mkdir()  # honours the umask, unlike mkdtemp: a renamed staging folder stays readable
    try:
        write_atoms(staging / "atoms.csv", real_atoms(result.atoms))
        write_volume(staging / "reconstruction.mrc", result.reconstruction)
        write_tilt_series(staging / "aligned.tif", result.aligned)
        point = TimePoint(name="t0", raw=result.raw, aligned=result.aligned,
                          reconstruction=result.reconstruction, atoms=result.atoms, traced=result.traced,
                          parameters=full_report.get("parameters", {}), report=full_report, edits=[],
                          stages=_jsonable(result.stages))
        save_project(staging / "project.aet", Project(time_points=[point], provenance={
            "napari_aet_version": __version__, "created": full_report.get("created", "")}))
        (staging / "report.json").write_text(json.dumps(full_report, indent=2))
        if out_dir.exists():
            for path in sorted(staging.iterdir(), key=lambda p: p.name == "report.json"):
                os.replace(path, out_dir / path.name)
        else:
            os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        for path in created[1:] if not out_dir.exists() else ():  # failed: remove the parents it made
            with contextlib.suppress(OSError):
                path.rmdir()  # only if still empty
    return full_report
