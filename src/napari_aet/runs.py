"""One tilt-series file -> one result directory: what ``napari-aet run`` and every batch row do.

The command line never destroys work: a directory that already holds results is refused
unless ``force``; even then a previous ``project.aet`` that holds hand edits is kept under a
new name; a run that fails leaves no directory it created, and results appear all at once
(:func:`napari_aet.pipeline.write_results`).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from .model import InputError, check_elements
from .progress import ProgressCallback

#: The files a run writes; any of them in a directory means it holds results.
RESULT_FILES = ("atoms.csv", "report.json", "project.aet", "reconstruction.mrc", "aligned.tif")

#: ``run`` options by name (the command-line flag with ``_`` for ``-``) and type; a batch plan
#: may give any of them as a column. Defaults are those of :func:`run_to_directory`.
RUN_OPTIONS = {"angles": str, "pixel_size": float, "tilt_axis": str, "no_align": bool, "method": str,
               "iterations": int, "fsc": bool, "no_refine": bool, "refine_iterations": int,
               "refine_rounds": int, "keep_every_move": bool, "no_precision": bool, "min_distance": str,
               "normalise": bool, "keep_spikes": bool, "exclude": str, "background": str,
               "seed": int, "geometry": str}


def parse_tilt_axis(text) -> float:
    """``y`` -> 0°, ``x`` -> 90°, else a number of degrees from the image y axis."""
    named = {"y": 0.0, "x": 90.0}
    if str(text).lower() in named:
        return named[str(text).lower()]
    try:
        return float(text)
    except ValueError:
        raise InputError(f"--tilt-axis must be y, x or a number of degrees, got {text!r}") from None


def pipeline_options(*, keep_spikes=False, iterations=None, background="auto", normalise=False, no_refine=False,
                     refine_iterations=None, refine_rounds=None, keep_every_move=False, no_precision=False,
                     min_distance=None) -> dict:
    """:func:`napari_aet.pipeline.run_pipeline` keyword arguments for the options that ``run`` and
    ``demo`` share (whether single-pixel spikes are kept, reconstruction iterations, the background
    removed before reconstructing ("auto": smooth for a particle, none for a film), whether the
    projections are scaled to one total intensity first, refinement on/off, its iterations and
    rounds, whether it keeps every move without checking it on held-out projections, whether it skips
    the half-set estimate of the positions' error, and the minimum distance between atoms that
    tracing and refinement keep: text for :func:`napari_aet.elements.parse_min_distance`)."""
    from .elements import parse_min_distance

    refine_options = {"validate_moves": False} if keep_every_move else {}
    trace_options = {}
    if no_precision:
        refine_options["precision"] = False
    if min_distance is not None:
        trace_options["min_distance"] = refine_options["min_distance"] = parse_min_distance(min_distance)
    for flag, name, value in (("refine-iterations", "iterations", refine_iterations),
                              ("refine-rounds", "complete_rounds", refine_rounds)):
        if value is not None:
            if value < 0:
                raise InputError(f"--{flag} must be 0 or more, got {value}")
            refine_options[name] = value
    reconstruct_options = {} if iterations is None else {"n_iterations": iterations}
    if background != "auto":
        reconstruct_options["background"] = background
    if normalise:
        reconstruct_options["normalise"] = True
    return {"keep_spikes": keep_spikes, "reconstruct_options": reconstruct_options,
            "trace_options": trace_options, "refine": not no_refine, "refine_options": refine_options}


def exclude_projections(series, text):
    """``series`` without the projections listed in ``text`` ("10,20": indices from 0 in the file's
    order), which ``metadata["excluded_projections"]`` records."""
    try:
        excluded = sorted({int(item) for item in str(text).replace(" ", "").split(",") if item})
    except ValueError:
        raise InputError(f"projections to leave out must be indices such as 10,20, got {text!r}") from None
    outside = [i for i in excluded if not 0 <= i < series.n_angles]
    if outside:
        raise InputError(f"projections to leave out: no projection {outside} among the {series.n_angles} "
                         f"(indices 0 to {series.n_angles - 1})")
    kept = np.setdiff1d(np.arange(series.n_angles), excluded)
    if len(kept) < 2:
        raise InputError(f"leaving out {len(excluded)} projections would leave {len(kept)}: at least 2 are needed")
    out = series.subset(kept)
    out.metadata["excluded_projections"] = excluded
    return out


def existing_results(out_dir) -> list[str]:
    """Names of the result files already in ``out_dir`` (empty if it holds none or is missing)."""
    return [name for name in RESULT_FILES if (Path(out_dir) / name).exists()]


def has_edits(project_path) -> bool:
    """Whether the project file holds hand edits (a time point with a non-empty ``edits`` log)."""
    from .project import load_project

    return any(point.edits for point in load_project(project_path).time_points)


def keep_if_edited(path) -> Path | None:
    """Rename the project ``path`` to ``<stem>.edited-<UTC time>.aet`` if it holds hand edits, so a
    re-run cannot overwrite them; returns the new path (None if there was nothing to keep)."""
    path = Path(path)
    if not path.exists() or not has_edits(path):
        return None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for number in range(1000):
        kept = path.with_name(f"{path.stem}.edited-{stamp}{f'-{number}' if number else ''}{path.suffix}")
        if not kept.exists():
            os.rename(path, kept)
            return kept
    raise InputError(f"cannot keep the hand-edited {path}: too many earlier copies beside it")


def check_output(out_dir, *, force=False) -> Path:
    """``out_dir`` as a Path after checking that a run may write there (nothing is created).

    A directory that already holds results is refused unless ``force``.
    """
    from .pipeline import check_writable

    out_dir = check_writable(out_dir, create=False)
    found = existing_results(out_dir)
    if found and not force:
        raise InputError(f"{out_dir} already holds results ({', '.join(found)}): pass --force to replace "
                         "them or choose another --out")
    return out_dir


def run_to_directory(series_path, out_dir, elements, *, angles=None, pixel_size=None, tilt_axis=None,
                     exclude=None, keep_spikes=False, no_align=False, method="genfire", iterations=None,
                     background="auto", normalise=False, fsc=False, no_refine=False, refine_iterations=None,
                     refine_rounds=None, keep_every_move=False, no_precision=False, min_distance=None, seed=0,
                     geometry="auto", force=False,
                     progress: ProgressCallback = None, log: Callable[[str], None] | None = None) -> dict:
    """Read a tilt-series file, run the whole chain and write its results into ``out_dir``.

    Exactly what ``napari-aet run`` does; the keyword options are its flags (see ``napari-aet run
    --help``): ``exclude`` projections left out ("10,20", indices from 0), ``angles`` an angle file
    (else the sidecar/metadata rules), ``pixel_size`` Å (else from the file), ``tilt_axis`` ``"y"``,
    ``"x"`` or degrees from the image y axis, ``keep_spikes`` single-pixel outliers not replaced,
    ``iterations`` reconstruction iterations, ``background`` removed before reconstructing,
    ``normalise`` the projections scaled to one total intensity before reconstructing,
    ``refine_rounds``/``refine_iterations`` the refinement's limits, ``keep_every_move`` its moves
    unchecked, ``no_precision`` no half-set estimate of the positions' error, ``min_distance`` the
    shortest distance (Å) tracing and refinement allow between atoms (``"2.2"`` or
    ``"Fe-Pt=2.3,Pt=2.4"``; default: the physical table of :mod:`napari_aet.elements`), ``seed``
    every random step, ``geometry`` ``"auto"``, ``"particle"`` or ``"film"``
    (:func:`napari_aet.pipeline.run_pipeline`).

    force : replace results already in ``out_dir``; a previous ``project.aet`` holding hand
        edits is renamed, never overwritten (see :func:`keep_if_edited`).
    progress : ``progress(fraction, message)`` over the whole chain.
    log : called with one-line messages for the user (what was read, what was kept).

    Returns the report written to ``report.json``. Raises InputError for bad input before
    anything is written; ``out_dir`` is created only when the run succeeded.
    """
    from .io import read_tilt_series
    from .pipeline import run_pipeline, write_results

    log = log or (lambda message: None)
    elements = check_elements(elements)
    out_dir = check_output(out_dir, force=force)
    axis = None if tilt_axis is None else parse_tilt_axis(tilt_axis)
    options = pipeline_options(keep_spikes=keep_spikes, iterations=iterations, background=background,
                               normalise=normalise,
                               no_refine=no_refine, refine_iterations=refine_iterations, refine_rounds=refine_rounds,
                               keep_every_move=keep_every_move, no_precision=no_precision,
                               min_distance=min_distance)
    series = read_tilt_series(series_path, angles=angles, pixel_size=pixel_size, tilt_axis=axis)
    log(f"Read {series_path}: {series.n_angles} projections of {series.projections.shape[1:]} px, "
        f"{series.pixel_size:g} Å/px, tilts {np.min(series.angles):.1f}° to {np.max(series.angles):.1f}°")
    if exclude:
        series = exclude_projections(series, exclude)
        log(f"Left out projections {', '.join(map(str, series.metadata['excluded_projections']))}; "
            f"{series.n_angles} remain")
    result = run_pipeline(series, elements, align=not no_align, method=method,
                          align_options={} if axis is None else {"tilt_axis": axis},  # checked against the data
                          **options, fsc=fsc, seed=seed, geometry=geometry, progress=progress)
    kept = keep_if_edited(out_dir / "project.aet") if force else None
    if kept is not None:
        log(f"Kept the previous project, which holds hand edits, as {kept}")
    return write_results(result, out_dir)
