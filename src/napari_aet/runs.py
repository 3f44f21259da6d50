"""One tilt-series file -> one result directory: what ``napari-aet run`` and every batch row do,
and the summary of a run for a person (printed, and kept as ``summary.txt``).

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
from .reconstruct import lowest_r_free

#: The files a run writes; any of them in a directory means it holds results.
RESULT_FILES = ("atoms.csv", "report.json", "project.aet", "reconstruction.mrc", "aligned.tif")

#: ``run`` options by name (the command-line flag with ``_`` for ``-``) and type; a batch plan
#: may give any of them as a column. Defaults are those of :func:`run_to_directory`.
RUN_OPTIONS = {"angles": str, "pixel_size": float, "tilt_axis": str, "layout": str, "no_align": bool, "method": str,
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
    order, :func:`napari_aet.io.tilt_series.kept_projections`), which
    ``metadata["excluded_projections"]`` records."""
    from .io.tilt_series import kept_projections

    kept, excluded = kept_projections(series.n_angles, text)
    out = series.subset(kept)
    out.metadata["excluded_projections"] = excluded
    return out


def existing_results(out_dir) -> list[str]:
    """Names of the result files already in ``out_dir`` (empty if it holds none or is missing)."""
    return [name for name in RESULT_FILES if (Path(out_dir) / name).exists()]


def edited_copy_path(path) -> Path:
    """A free name ``<stem>.edited-<UTC time>.aet`` beside project ``path`` for a copy of its hand edits."""
    path = Path(path)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for number in range(1000):
        kept = path.with_name(f"{path.stem}.edited-{stamp}{f'-{number}' if number else ''}{path.suffix}")
        if not kept.exists():
            return kept
    raise InputError(f"cannot keep the hand-edited {path}: too many earlier copies beside it")


def keep_if_edited(path) -> Path | None:
    """Rename the project ``path`` to :func:`edited_copy_path` if it holds hand edits, so a re-run
    cannot overwrite them; returns the new path (None if there was nothing to keep)."""
    from .project import holds_edits

    path = Path(path)
    if not path.exists() or not holds_edits(path):
        return None
    kept = edited_copy_path(path)
    os.rename(path, kept)
    return kept


def check_output(out_dir, *, force=False) -> Path:
    """``out_dir`` as a Path after checking that a run may write there (nothing is created).

    A directory that already holds results is refused unless ``force``.
    """
    from .pipeline import check_writable

    out_dir = check_writable(out_dir, create=False)
    found = existing_results(out_dir)
    if found and not force:
        unfinished = ("; it has no report.json, which a run writes last (a run that did not finish, or another "
                      "program's files)" if "report.json" not in found else "")
        raise InputError(f"{out_dir} already holds results ({', '.join(found)}){unfinished}: pass --force to "
                         "replace them, delete the folder, or choose another --out")
    return out_dir


def run_to_directory(series_path, out_dir, elements, *, angles=None, pixel_size=None, tilt_axis=None,
                     layout=None, exclude=None, keep_spikes=False, no_align=False, method="genfire", iterations=None,
                     background="auto", normalise=False, fsc=False, no_refine=False, refine_iterations=None,
                     refine_rounds=None, keep_every_move=False, no_precision=False, min_distance=None, seed=0,
                     geometry="auto", force=False,
                     progress: ProgressCallback = None, log: Callable[[str], None] | None = None) -> dict:
    """Read a tilt-series file, run the whole chain and write its results into ``out_dir``.

    Exactly what ``napari-aet run`` does; the keyword options are its flags (see ``napari-aet run
    --help``): ``exclude`` projections left out ("10,20", indices from 0), ``angles`` an angle file
    (else the sidecar/metadata rules), ``pixel_size`` Å (else from the file), ``tilt_axis`` ``"y"``,
    ``"x"`` or degrees from the image y axis, ``layout`` of a 3D array (``"stack"`` or ``"genfire"``,
    else detected; :func:`napari_aet.io.read_tilt_series`), ``keep_spikes`` single-pixel outliers not replaced,
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

    Writes what :func:`napari_aet.pipeline.write_results` writes, the report's ``input`` with the
    file's absolute path and where its angles and pixel size came from, then ``summary.txt``
    (:func:`summary_text`, what ``napari-aet run`` prints). Returns the report written to
    ``report.json``. Raises InputError for bad input before
    anything is written; ``out_dir`` is created only when the run succeeded.
    """
    from .io import read_tilt_series
    from .io.files import atomic_write
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
    series = read_tilt_series(series_path, angles=angles, pixel_size=pixel_size, tilt_axis=axis, layout=layout,
                              exclude=exclude)
    provenance = _provenance(series_path, series.metadata, angles, pixel_size)
    tilts = series.angles if series.is_single_axis else series.angles[:, 1]  # Euler (φ, θ, ψ): θ
    left_out = series.metadata.get("excluded_projections", [])
    log(f"Read {series_path}: {series.n_angles + len(left_out)} projections of {series.projections.shape[1:]} px, "
        f"{series.pixel_size:g} Å/px, tilts {np.min(tilts):.1f}° to {np.max(tilts):.1f}°")
    if left_out:
        log(f"Left out projections {', '.join(map(str, left_out))}; {series.n_angles} remain")
    result = run_pipeline(series, elements, align=not no_align, method=method,
                          align_options={} if axis is None else {"tilt_axis": axis},  # checked against the data
                          **options, fsc=fsc, seed=seed, geometry=geometry, progress=progress)
    kept = keep_if_edited(out_dir / "project.aet") if force else None
    if kept is not None:
        log(f"Kept the previous project, which holds hand edits, as {kept}")
    report = write_results(result, out_dir, extra_report={"input": {**result.report["input"], **provenance}})
    with atomic_write(out_dir / "summary.txt") as temporary:
        temporary.write_text(summary_text(report) + "\n")
    return report


def _provenance(series_path, metadata, angles, pixel_size) -> dict:
    """For ``report.json``'s "input": the series file's absolute ``path``, and where its angles
    (``--angles FILE``, ``sidecar FILE`` or ``file metadata``) and its pixel size (``--pixel-size``
    or ``file metadata``) came from, as the reader recorded them in the series' ``metadata``; the
    file's own pixel size (``file_pixel_size_A``) when it has one, and the reader's doubt about it
    (``pixel_size_warning``: an MRC header's 1 Å)."""
    if angles is not None:
        angles_from = f"--angles {Path(angles).resolve()}"
    elif metadata["angles_from"] == "file metadata":
        angles_from = "file metadata"
    else:  # the sidecar's path
        angles_from = f"sidecar {Path(metadata['angles_from']).resolve()}"
    provenance = {"path": str(Path(series_path).resolve()), "angles_from": angles_from,
                  "pixel_size_from": "--pixel-size" if pixel_size is not None else metadata["pixel_size_from"],
                  "layout": metadata["layout"]}
    if metadata.get("file_pixel_size") is not None:
        provenance["file_pixel_size_A"] = metadata["file_pixel_size"]
    if metadata.get("pixel_size_warning"):
        provenance["pixel_size_warning"] = metadata["pixel_size_warning"] + " (--pixel-size)"
    return provenance


#: Spread (max - min) of the projections' relative total intensities above which the summary says so.
TOTALS_SPREAD = 0.2


def summary_text(report) -> str:
    """A run's summary for a person, from its report (``report.json``): what ``napari-aet run``
    prints and writes to ``summary.txt`` — input, alignment, atoms, reconstruction, refinement, timings."""
    lines = []
    say = lines.append
    atoms = report["atoms"]
    recon = report["reconstruction"]
    source = report["input"]
    if "path" in source:  # read from a file by run_to_directory
        left_out = source.get("excluded_projections")
        in_file = source.get("file_pixel_size_A")
        say(f"Input: {source['path']} read as {source['layout']}; angles from {source['angles_from']}, pixel size "
            f"{source['pixel_size_A']:g} Å from {source['pixel_size_from']}"
            + (f" (the file says {in_file:g} Å)" if in_file is not None and in_file != source["pixel_size_A"] else "")
            + (f"; projections {', '.join(map(str, left_out))} left out (--exclude)" if left_out else ""))
        if source.get("pixel_size_warning"):
            say(f"Warning: {source['pixel_size_warning']}")
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in report["timings_s"].items())
    per_element = ", ".join(f"{n} {e}" for e, n in atoms["per_element"].items())
    spikes = source.get("spikes_replaced", 0)
    if spikes:
        say(f"Replaced {spikes} single-pixel spike(s) (X-ray hits, hot pixels) by the median of their neighbours "
            "(--keep-spikes keeps them)")
    alignment = alignment_line(report)
    if alignment:
        say(f"Alignment: {alignment}")
    outside = atoms.get("n_outside_box", 0)
    say(f"Atoms: {atoms['n_atoms']} ({per_element}); {atoms['n_ambiguous']} ambiguous; "
        f"{atoms['n_rejected_peaks']} peaks rejected as noise"
        + (f"; {outside} atom(s) outside the reconstructed box (refined or added beyond its edges)"
           if outside else ""))
    for warning in atoms.get("warnings", []):
        say(f"Warning: {warning}")
    metrics = [f"final {name.replace('_', '-')} {recon[f'final_{key}']:.3f}"
               for key, name in (("r_factor", "R_factor"), ("r_free", "R_free"))
               if recon.get(f"final_{key}") is not None]
    lowest = lowest_r_free(recon.get("errors_per_iteration", {}).get("r_free"))
    if lowest:
        metrics.append(lowest)
    if "half_set_fsc" in recon:
        metrics.append(f"half-set FSC resolution {recon['half_set_fsc']['resolution_A_at_0.143']:.2f} Å")
    removed = recon.get("background", {})
    if removed.get("mean_level") is not None:
        metrics.append(f"{removed['method']} background removed (mean {removed['mean_level']:.3g} counts/px)")
    elif removed.get("why_not"):
        metrics.append(f"background kept ({removed['why_not']})")
    geometry = report["parameters"].get("geometry")
    if geometry:
        metrics.insert(0, f"{geometry} geometry (edge signal at high tilt {report['parameters']['edge_signal']:.2f})")
    say(f"Reconstruction: {recon['method']}, {recon['shape']} voxels" + "".join(f", {m}" for m in metrics))
    low, high = (np.nan if value is None else value for value in recon["relative_totals"])
    if "normalisation_factors" in recon:
        say(f"Projections scaled to one total intensity (their totals were {low:.2f}–{high:.2f} × the mean)")
    elif high - low > TOTALS_SPREAD and geometry != "film":  # a film's total grows with the tilt anyway
        say(f"Note: the projections' total intensities range {low:.2f}–{high:.2f} × their mean: a drifting beam "
            "current (try --normalise), a zone axis in some views, or a neighbour entering the field")
    if "refinement" in report:
        from .refine import describe_moves_kept

        refined = report["refinement"]
        species = ", ".join(f"{e} height {h:.4g}, width {refined['widths_A'][e]:.2f} Å"
                            for e, h in refined["heights"].items())
        moved, kept = refined["shift_A"], describe_moves_kept(refined.get("moves_kept", {}))
        say(f"Refinement against the projections: {species}; final R-factor {refined['final_r_factor']:.3f}; "
            f"{refined['n_added']} atoms added, {refined['n_removed']} removed"
            + (f", the others moved by {moved['median']:.2f} Å (median)" if moved else "")
            + (f"; {kept}" if kept else ""))
        if refined.get("pairs_at_minimum_distance"):
            pairs = refined["pairs_at_minimum_distance"]
            say(f"{pairs} atom pair{'s' if pairs > 1 else ''} held at their minimum distance (the data "
                "pulled them nearer; a spike in g(r) there): --min-distance sets it")
        if refined.get("worst_projections"):
            listed = ", ".join(f"{p['index']} ({p['tilt_deg']:+.1f}°, {p['misfit']:.1f}×)"
                               for p in refined["worst_projections"])
            left_out = report["input"].get("excluded_projections", [])
            indices = ",".join(map(str, sorted({*left_out, *(p["index"] for p in refined["worst_projections"])})))
            say(f"Projections fitting the model worst (index in the file, tilt, RMS residual over the median): "
                f"{listed}: a bad image (drift, blur, contamination) — --exclude {indices} leaves them out"
                f"{' with those left out already' if left_out else ''} — or where the model is poorest (a zone "
                "axis, a film's highest tilts)")
        if refined.get("precision_pm"):
            from .precision import describe_precision

            say(f"Position precision (half sets, noise only): {describe_precision(refined['precision_pm'])}")
    say(f"Timings: {timings}")
    return "\n".join(lines)


def alignment_line(report) -> str | None:
    """What the alignment did (after "Alignment: "): not run, skipped and why, or the check's verdict
    with the tilt axis (degrees from the image y axis) and the rms of the shifts (px) it measured."""
    alignment = report.get("alignment", {})
    if not report["parameters"].get("align", True):
        return "not run (--no-align)"
    if alignment.get("skipped"):
        return alignment["skipped"]
    if not alignment.get("tilt_axis"):
        return None
    axis, shifts = alignment["tilt_axis"], np.asarray(list(alignment["shifts"].values())[-1])
    from .align import describe_tilt_axis

    axis_text = (f"tilt axis {axis['used'] + 0.0:.1f}° (given)" if axis.get("given") is not None else
                 describe_tilt_axis(axis["used"], choose="--tilt-axis chooses", searched=axis.get("angles")))
    measured = f"{axis_text}, rms shift {np.sqrt(np.mean(np.sum(shifts ** 2, axis=1))):.1f} px"
    check = alignment.get("check")
    if check is None:
        return measured
    return f"{check['reason']}; {measured}" if check["accepted"] else f"{check['reason']}; not kept: {measured}"
