"""Run one stage on one time point of a study (Qt-free): the CLI, the Python API, batch runs
and every napari widget go through here.

A study is a :class:`~napari_aet.project.Project`; its :class:`~napari_aet.project.TimePoint`
holds each stage's result. The stages, in order, and what they read and write:

=============  =====================================  =============================================
stage          reads                                  writes
=============  =====================================  =============================================
align          ``raw``                                ``aligned`` (and ``report["alignment"]``)
reconstruct    ``aligned`` (``raw`` if never aligned) ``reconstruction``
trace          ``reconstruction``                     ``atoms`` (peaks, no species)
classify       ``reconstruction``, ``atoms``          ``atoms`` with species (locked labels kept)
refine         the tilt series, ``atoms``             ``atoms`` refined; ``traced`` = the input
analyse        ``atoms`` (the real ones)              ``analysis`` (atoms with order, nuclei, strain)
=============  =====================================  =============================================

Running a stage — ``run_stage(point, "trace", …)`` or its function, ``trace(point, …)``, the same —
checks its inputs, records its parameters (the defaults it used included) and provenance and
marks every later stage that had run "stale"; a stage refuses to read a stale result, so nothing
downstream silently mixes old and new. Tracing again would replace hand-edited atoms: it refuses
unless ``replace_edits=True``. A result made elsewhere enters a study with :func:`adopt`.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .model import InputError, Reconstruction, TiltSeries, check_elements, real_atoms
from .progress import ProgressCallback, report, sub_progress
from .project import TimePoint, provenance

if TYPE_CHECKING:  # the stages are imported when a stage runs
    from .align import AlignmentReport

#: The stages in order.
STAGES = ("align", "reconstruct", "trace", "classify", "refine", "analyse")
#: The stages whose results each stage reads, each with whether it must have run (align need not:
#: unaligned data are read raw; analyse reads the current atoms, classified and refined or not).
READS = {"align": {}, "reconstruct": {"align": False}, "trace": {"reconstruct": True},
         "classify": {"reconstruct": True, "trace": True}, "refine": {"align": False, "classify": True},
         "analyse": {"trace": True, "classify": False, "refine": False}}
#: Where each stage writes its result on a TimePoint.
WRITES = {"align": "aligned", "reconstruct": "reconstruction", "trace": "atoms", "classify": "atoms",
          "refine": "atoms", "analyse": "analysis"}


def status(point: TimePoint) -> dict[str, str]:
    """Each stage's status on ``point``: "done", "stale" (an earlier stage ran again since) or "not run"."""
    return {stage: point.stages.get(stage, {}).get("status", "not run") for stage in STAGES}


def tilt_series_of(point: TimePoint) -> TiltSeries:
    """The tilt series the later stages read: the aligned one, or the raw one if never aligned."""
    series = point.aligned if point.aligned is not None else point.raw
    if series is None:
        raise InputError(f"time point {point.name!r} has no tilt series: open one first")
    return series


#: Fewest projections the chain accepts (AET series hold 30-70): the refinement checks its moves on
#: 4 blocks of held-out views, 2 projections each at least (docs/refinement.md).
MIN_PROJECTIONS = 8


def check_series(series: TiltSeries, elements=None, min_distance=None):
    """InputError, before any work, for a tilt series the chain cannot use: a placeholder pixel size
    (``metadata["pixel_size_unknown"]``: a file without one, or a :class:`TiltSeries` made without
    it), fewer than :data:`MIN_PROJECTIONS` projections, tilts (θ of Euler angles) that look like radians
    (:func:`napari_aet.geometry.radians_suspected`), or a pixel size in the wrong unit for the
    ``elements`` (any elements while None; :func:`napari_aet.elements.check_pixel_size`)."""
    from .elements import check_pixel_size
    from .geometry import radians_message, radians_suspected

    if series.metadata.get("pixel_size_unknown"):
        raise InputError("the pixel size is unknown (the file has none, or the TiltSeries was made without "
                         "pixel_size; 1 Å is only a placeholder): give it in Å — the Data step's field, "
                         "--pixel-size or TiltSeries(..., pixel_size=…) — every distance in Å depends on it")
    if series.n_angles < MIN_PROJECTIONS:
        raise InputError(f"{series.n_angles} projections: a tomogram needs many views (AET series hold 30-70); "
                         f"the chain needs at least {MIN_PROJECTIONS}")
    if radians_suspected(series.tilts):
        raise InputError(radians_message(series.tilts, "the tilt series"))
    check_pixel_size(series.pixel_size, elements, min_distance)


def _check_fresh(point: TimePoint, stage: str):
    """InputError if a result that ``stage`` reads is stale or missing."""
    states = status(point)
    for upstream, required in READS[stage].items():
        if states[upstream] == "stale":
            raise InputError(f"{stage}: the {upstream} result of {point.name!r} is stale (an earlier stage ran "
                             f"again since): run {upstream} again first")
        if states[upstream] == "not run" and required:
            raise InputError(f"{stage}: run {upstream} on {point.name!r} first")


def _recordable(options: dict) -> dict:
    """The options as JSON-able parameters: arrays summarised, callables left out."""
    out = {}
    for name, value in options.items():
        if callable(value):
            continue
        if isinstance(value, np.ndarray):
            value = f"array {value.shape} {value.dtype}" if value.size > 16 else value.tolist()
        out[name] = value
    return out


def record(point: TimePoint, stage: str, parameters: dict, seconds: float):
    """Mark ``stage`` done with its parameters and provenance; later stages that ran become stale."""
    if stage != STAGES[-1]:
        mark_stale_from(point, STAGES[STAGES.index(stage) + 1])
    point.stages[stage] = {"status": "done", "parameters": _recordable(parameters),
                           "provenance": {**provenance(), "seconds": round(seconds, 3)}}


def mark_stale_from(point: TimePoint, stage: str):
    """Mark ``stage`` and every later stage that ran stale (e.g. the raw data were replaced)."""
    for name in STAGES[STAGES.index(stage):]:
        if name in point.stages:
            point.stages[name]["status"] = "stale"


def adopt(point: TimePoint, stage: str, result, source: str):
    """Put a result made outside the workflow (e.g. a volume opened from a file) into ``point``
    as ``stage``'s, recorded with its ``source``; later stages become stale."""
    setattr(point, WRITES[stage], result)
    if stage == "trace":
        point.traced = None
    record(point, stage, {"source": source}, 0.0)


def edit_atoms(point: TimePoint, after, removed=()) -> list[dict]:
    """Make ``after`` the point's atoms as a hand edit, as the napari editor does: what changed is
    logged in ``point.edits`` (:func:`napari_aet.edit.changes`: atoms matched by order, the
    current atoms ``removed`` deleted, atoms beyond them added) and kept for undo
    (``point.undo_history``); tracing again then refuses to replace them, and an analysis made
    before is stale. Make ``after`` with
    :func:`napari_aet.edit.move`, :func:`~napari_aet.edit.delete`, :func:`~napari_aet.edit.add`
    or :func:`~napari_aet.edit.relabel`. Returns the log entries (none: nothing changed)."""
    from .edit import append_to_log, changes
    from .undo import history_of, keep_history

    if point.atoms is None:
        raise InputError(f"time point {point.name!r} has no atoms to edit: trace them first")
    if len(after) < len(point.atoms) - len(removed):
        raise InputError(f"{len(point.atoms) - len(after)} fewer atoms than before but {len(removed)} given as "
                         "removed: pass the deleted atoms' indices, edit_atoms(point, edit.delete(atoms, index), "
                         "removed=index)")
    entries = changes(point.atoms, after, removed)
    if entries:
        history = history_of(point)
        history.record(point.atoms, after, entries)
        append_to_log(point.edits, entries)
        point.atoms = after
        mark_edited_atoms_stale(point)
        keep_history(point, history)
    return entries


def mark_edited_atoms_stale(point: TimePoint):
    """After a hand edit of the atoms: an analysis made from them before is stale."""
    if "analyse" in point.stages:
        mark_stale_from(point, "analyse")


def has_hand_edits(point: TimePoint) -> bool:
    """Whether the current atoms hold hand edits (edited or locked atoms, or logged edits since
    the last trace)."""
    if point.atoms is None:
        return False
    features = point.atoms.features
    flagged = any(bool(np.any(features.get(name, False))) for name in ("edited", "locked"))
    return flagged or any(entry.get("action") != "replace" for entry in point.edits[_last_replace(point) + 1:])


def _last_replace(point: TimePoint) -> int:
    return max((k for k, entry in enumerate(point.edits) if entry.get("action") == "replace"), default=-1)


# --- the stages ------------------------------------------------------------------------------

#: Each stage's function, run and recorded by :func:`run_stage` (filled by :func:`_stage`).
_STAGE_FUNCTIONS = {}


def _stage(name):
    """Make the decorated function stage ``name``: calling it runs :func:`run_stage` (checks,
    defaults from the study, the record), so the stage functions cannot change a study unrecorded."""
    def decorate(function):
        @functools.wraps(function)
        def run(point: TimePoint, *args, progress: ProgressCallback = None, **options):
            return run_stage(point, name, *args, progress=progress, **options)

        _STAGE_FUNCTIONS[name] = function
        return run
    return decorate


def preprocess_series(series: TiltSeries, *, spikes="keep", denoising="none", background="none", normalise=False,
                      progress: ProgressCallback = None) -> TiltSeries:
    """Optional pre-processing, in the order the noise model needs: single-pixel spikes replaced
    (``spikes="replace"``), Poisson-aware denoising of the raw counts, background subtraction,
    intensity normalisation (:mod:`napari_aet.preprocess`, :mod:`napari_aet.background`)."""
    from .background import subtract_background
    from .preprocess import denoise, normalise_intensity, replace_spikes

    if spikes not in ("keep", "replace"):
        raise InputError(f"spikes must be 'keep' or 'replace', got {spikes!r}")
    if spikes == "replace":
        series = replace_spikes(series)
    series = denoise(series, method=denoising, progress=progress)
    if background != "none":
        series = subtract_background(series, method=background)
    return normalise_intensity(series) if normalise else series


#: Alignment methods: align_auto, or one shift-measuring function.
ALIGN_METHODS = ("automatic", "centre of mass + common line", "cross-correlation")


@dataclass
class Alignment:
    """What :func:`align` made: the pre-processed series with shifts and tilt axis set
    (``measured``), the alignment report, and the series with the alignment applied."""

    measured: TiltSeries
    report: AlignmentReport
    aligned: TiltSeries


@_stage("align")
def align(point: TimePoint, method="automatic", *, background=None, subtract_background_from_result=False,
          spikes="replace", denoising="none", normalise=False, progress: ProgressCallback = None,
          **measure_options) -> Alignment:
    """Pre-process ``point.raw``, measure its alignment and apply it (into ``point.aligned``).

    method : one of :data:`ALIGN_METHODS`; "automatic" is :func:`napari_aet.align.align_auto`
        (``measure_options`` go to it: ``tilt_axis``, ``projection_matching``, ``iterations``,
        ``precision``), the others measure shifts with one function and keep the tilt axis.
    background : removed ("none", "constant", "smooth") from a copy the shifts are measured on
        (default: align_auto's); ``subtract_background_from_result`` removes it from the result too.
    """
    from .align import AlignmentReport, align_auto, center_of_mass_shifts, common_line_shifts, cross_correlation_shifts
    from .background import subtract_background
    from .projections import apply_alignment

    if method not in ALIGN_METHODS:
        raise InputError(f"unknown alignment method {method!r}: expected one of {', '.join(ALIGN_METHODS)}")
    if point.raw is None:
        raise InputError(f"time point {point.name!r} has no tilt series to align")
    if background is None:
        background = inspect.signature(align_auto).parameters["background"].default
    series = preprocess_series(point.raw, spikes=spikes, denoising=denoising, normalise=normalise,
                               background=background if subtract_background_from_result else "none",
                               progress=sub_progress(progress, 0.0, 0.2))
    to_measure = "none" if subtract_background_from_result else background
    if method == "automatic":
        measured, alignment_report = align_auto(series, background=to_measure, progress=sub_progress(progress, 0.2, 0.9),
                                                **measure_options)
    else:
        clean = series if to_measure == "none" else subtract_background(series, method=to_measure)
        precision = measure_options.get("precision", 0.05)
        shifts = (cross_correlation_shifts(clean) if method == "cross-correlation"
                  else center_of_mass_shifts(clean) + common_line_shifts(clean, precision=precision))
        measured = series.replace(shifts=shifts)
        alignment_report = AlignmentReport(series.angles.tolist(), {method: shifts})
    report(progress, 0.9, "applying the shifts")
    point.aligned = apply_alignment(measured)
    point.report["alignment"] = alignment_report.record()
    report(progress, 1.0, "aligned")
    return Alignment(measured, alignment_report, point.aligned)


def half_set_fsc(series: TiltSeries, method="genfire", *, progress: ProgressCallback = None,
                 **params) -> tuple[np.ndarray, np.ndarray]:
    """FSC ``(frequency 1/Å, fsc)`` between reconstructions of the even and odd projections (in
    tilt order, :meth:`TiltSeries.half_sets`) of an aligned series
    (:func:`napari_aet.analysis.volume_metrics.fourier_shell_correlation`).

    method, params : as for :func:`napari_aet.reconstruct.reconstruct`.
    """
    from .analysis.volume_metrics import fourier_shell_correlation
    from .reconstruct import reconstruct as reconstruct_volume

    if series.n_angles < 4:
        raise InputError(f"half-set FSC needs at least 4 projections, got {series.n_angles}")
    halves = [reconstruct_volume(series.subset(half), method,
                                 progress=sub_progress(progress, start / 2, (start + 1) / 2), **params)
              for start, half in enumerate(series.half_sets())]
    return fourier_shell_correlation(halves[0].volume, halves[1].volume, series.pixel_size)


@_stage("reconstruct")
def reconstruct(point: TimePoint, method="genfire", *, geometry="auto", background="auto", normalise=False,
                automatic_support=False, fsc=False, stop=None, on_iteration=None, progress: ProgressCallback = None,
                **params) -> Reconstruction:
    """Reconstruct the point's tilt series (into ``point.reconstruction``).

    method, params : :func:`napari_aet.reconstruct.iterate`'s, over the method's recommended
        parameters.
    geometry : "particle", "film" or "auto" (:func:`napari_aet.reconstruct.extended.resolve_geometry`:
        a film when the high-tilt projections carry signal at their edges). A film is an extended
        object: RESIRE over a region wider than the box (:func:`~napari_aet.reconstruct.extended.film_parameters`,
        with those of ``params`` RESIRE takes). ``reconstruction.metadata`` records ``geometry``
        and the measured ``edge_signal``.
    background : "constant" or "smooth" first removes the background estimated outside the
        particle (:func:`napari_aet.background.background_removed`: a detector offset, a support
        film; a particle's reconstruction would otherwise hold it as a uniform slab, and tracing
        finds atoms in it); "none" (a film has no empty region to measure it in); "auto" (the
        default): smooth for a particle, none for a film. Recorded in
        ``reconstruction.metadata["background"]`` (``method`` the one removed).
    normalise : first scale every projection to the series' mean total intensity
        (:func:`napari_aet.preprocess.normalise_intensity`: an isolated particle scatters the same
        total at every tilt, so beam-current drift is undone; wrong for a film, whose path length
        grows with the tilt, and where channelling brightens the views near a zone axis); the
        factors go to ``reconstruction.metadata["normalisation"]``.
    automatic_support : confine to the particle mask of a weighted back-projection.
    fsc : also the half-set Fourier shell correlation (two more reconstructions), stored in
        ``reconstruction.metadata["fsc"]``.
    stop : ``stop()`` true ends the iterations early, keeping the current iterate (the metadata say
        how many ran). on_iteration : called with each :class:`IterationState` (live views).
    """
    from .analysis.volume_metrics import resolution_from_fsc
    from .background import background_removed
    from .backprojection import weighted_backprojection
    from .preprocess import normalise_intensity
    from .reconstruct import RECOMMENDED, parameters
    from .reconstruct import reconstruct as reconstruct_volume
    from .reconstruct.extended import background_for, film_parameters, resolve_geometry
    from .trace import particle_support

    series = tilt_series_of(point)
    geometry, edge_signal = resolve_geometry(series, geometry)
    if geometry == "film":  # GENFIRE needs whole projections; an extended object needs real space
        taken = parameters("resire")
        params = {**film_parameters(series, params.get("thickness")), **{k: v for k, v in params.items() if k in taken}}
        method = "resire"
    background = background_for(geometry, background)
    removed = {"method": "none"}
    if background != "none":
        series, why_not = background_removed(series, background)
        levels = series.metadata.get("background", {}).get("levels")
        removed = ({"method": background, "mean_level": float(np.mean(levels))} if not why_not and levels is not None
                   else {"method": "none", "why_not": why_not})
    if normalise:
        series = normalise_intensity(series)
    params = parameters(method, **{**RECOMMENDED.get(method, {}), **params})  # checked, defaults filled
    if automatic_support:
        report(progress, 0.0, "support: particle mask of a weighted back-projection")
        params["support"] = particle_support(weighted_backprojection(series, params.get("thickness")),
                                             voxel_size=series.pixel_size)
    recon = reconstruct_volume(series, method, progress=sub_progress(progress, 0.0, 1 / 3 if fsc else 1.0),
                               stop=stop, on_iteration=on_iteration, **params)
    if fsc and recon.metadata["completed"]:
        frequency, correlation = half_set_fsc(series, method, progress=sub_progress(progress, 1 / 3, 1.0), **params)
        recon.metadata["fsc"] = {"frequency_per_A": frequency.tolist(), "fsc": correlation.tolist(),
                                 "resolution_A_at_0.143": float(resolution_from_fsc(frequency, correlation))}
    if normalise:
        recon.metadata["normalisation"] = series.metadata["normalisation"]
    recon.metadata.update(background=removed, geometry=geometry, edge_signal=edge_signal)
    point.reconstruction = recon
    return recon


def _trace_defaults(point: TimePoint, options: dict) -> tuple[dict, dict]:
    """Trace's options with ``min_distance`` when not given (or None): the shortest physical
    distance between two atoms of the study's elements (``point.parameters["elements"]``,
    :func:`napari_aet.elements.min_distance_table`); trace_atoms' own default while no elements
    are known. A mapping of pairs to Å overrides those pairs of that table. Also what to record
    beside them: a value given, as ``min_distance_given``, for the refinement
    (:func:`_refine_defaults`)."""
    from .elements import min_distance_table, pair_name

    value = options.pop("min_distance", None)
    if isinstance(value, Mapping):  # pairs named "Fe-Pt" in the record (JSON keys are text)
        value = {pair_name(key): distance for key, distance in value.items()}
    recorded = {} if value is None else {"min_distance_given": value}
    if isinstance(value, Mapping):
        if not point.parameters.get("elements"):
            raise InputError("trace: a minimum distance per element pair needs the study's elements")
        value = float(min_distance_table(point.parameters["elements"], value).min())
    elif value is None and point.parameters.get("elements"):
        value = float(min_distance_table(point.parameters["elements"]).min())
    if value is not None:
        options["min_distance"] = value
    return options, recorded


def min_distance_given(point: TimePoint):
    """The minimum distance a person gave this time point's refinement or tracing (Å: one number,
    or pairs), None when both used the physical table."""
    for stage, key in (("refine", "min_distance"), ("trace", "min_distance_given")):
        value = point.stages.get(stage, {}).get("parameters", {}).get(key)
        if value is not None:
            return value
    return None


def _refine_defaults(point: TimePoint, options: dict) -> tuple[dict, dict]:
    """Refine's options with ``min_distance`` when not given (or None): the one given to the
    tracing of this point, if any (one number or pairs), else refine_atoms' physical table; and
    ``background`` when not given: the one the reconstruction removed, if any; ``elements``: the
    classification's."""
    for name, stage, key in (("min_distance", "trace", "min_distance_given"),
                             ("background", "reconstruct", "background"), ("elements", "classify", "elements")):
        if options.get(name) is None:
            options.pop(name, None)
            given = point.stages.get(stage, {}).get("parameters", {}).get(key)
            if given is not None:
                options[name] = given
    return options, {}


@_stage("trace")
def trace(point: TimePoint, *, replace_edits=False, progress: ProgressCallback = None, **options):
    """Trace atoms in the point's reconstruction (into ``point.atoms``; ``traced`` cleared).

    options : :func:`~napari_aet.trace.trace_atoms`'s; ``min_distance`` not given: the shortest
    physical distance between the study's elements (``point.parameters["elements"]``, set by
    classify or given with the time point), trace_atoms' own while none are known. Refuses to
    replace atoms holding hand edits unless ``replace_edits``; then the replacement is logged in
    ``point.edits``.
    """
    from .edit import replacement
    from .trace import trace_atoms

    if point.reconstruction is None:
        raise InputError(f"trace: time point {point.name!r} has no reconstruction: reconstruct first")
    if has_hand_edits(point) and not replace_edits:
        raise InputError(f"trace: the atoms of {point.name!r} hold hand edits; tracing again would replace "
                         "them: save the study under another name first, or confirm replacing them")
    atoms = trace_atoms(point.reconstruction, progress=progress, **options)
    if point.atoms is not None and has_hand_edits(point):
        point.edits.append(replacement(point.atoms, atoms))
    point.atoms, point.traced = atoms, None
    return atoms


@_stage("classify")
def classify(point: TimePoint, elements, *, progress: ProgressCallback = None, **options):
    """Classify the species of ``point.atoms`` (locked labels kept), in place; what the result says
    against the element list goes to ``point.report["classify_warnings"]``
    (:func:`napari_aet.classify.species_warnings`)."""
    from .classify import classify_atoms, species_warnings

    elements = check_elements(elements)
    point.atoms = classify_atoms(point.reconstruction, point.atoms, elements, progress=progress, **options)
    point.report["classify_warnings"] = species_warnings(point.atoms, elements)
    return point.atoms


@_stage("refine")
def refine(point: TimePoint, *, elements=None, background="none", precision=True, progress: ProgressCallback = None,
           **options):
    """Refine ``point.atoms`` against the tilt series; ``traced`` keeps the input. Returns the
    :class:`~napari_aet.refine.Refinement` (its species heights, widths, error curves).
    A ``min_distance`` not given is the one the tracing was given, a ``background`` not given the
    one the reconstruction removed, ``elements`` not given the classification's (:func:`_refine_defaults`).

    background : removed from the series first, as :func:`reconstruct` does ("none", "constant",
        "smooth"): a large background left in makes the refinement add atoms to explain it.

    precision : also estimate the refined positions' error from the even and the odd projections
        (:func:`napari_aet.precision.half_set_precision`; two more refinements without completion,
        skipped with fewer than its ``MIN_ANGLES`` projections): ``refinement.precision``,
        ``point.report["precision"]`` and the atoms' feature ``half_set_error`` (Å).
    """
    from .background import background_removed
    from .precision import MIN_ANGLES, half_set_precision
    from .refine import refine_atoms

    series = background_removed(tilt_series_of(point), background)[0]
    estimate = precision and series.n_angles >= MIN_ANGLES
    refinement = refine_atoms(series, point.atoms, elements=elements,
                              progress=sub_progress(progress, 0.0, 0.85 if estimate else 1.0), **options)
    if estimate:
        shared = ("iterations", "width_every", "background_width", "min_distance")
        same = {k: options[k] for k in shared if k in options}
        found = half_set_precision(series, refinement.atoms, elements=elements,
                                   progress=sub_progress(progress, 0.85, 1.0), **same)
        refinement.precision = found.per_element
        refinement.atoms = refinement.atoms.with_features(half_set_error=found.atom_error)
    point.report["precision"] = refinement.precision
    point.traced, point.atoms = point.atoms, refinement.atoms
    return refinement


def refined_series(point: TimePoint) -> TiltSeries:
    """The tilt series the point's refinement fitted: its aligned series with the background the
    refinement removed (its stage's ``background``), for model projections and residuals."""
    from .background import background_removed

    background = point.stages.get("refine", {}).get("parameters", {}).get("background", "none")
    return background_removed(tilt_series_of(point), background)[0]


@_stage("analyse")
def analyse(point: TimePoint, *, progress: ProgressCallback = None, **options):
    """Lattice, chemical order, nuclei, structure and strain of ``point.atoms`` (the real atoms;
    :func:`napari_aet.analysis.analyze.analyze_atoms`); the analysed atoms go to ``point.analysis``
    and a summary to ``point.report["analysis"]``. Returns the :class:`~napari_aet.analysis.analyze.Analysis`."""
    from .analysis.analyze import analyze_atoms

    if point.atoms is None:
        raise InputError(f"analyse: time point {point.name!r} has no atoms: trace them first")
    analysis = analyze_atoms(real_atoms(point.atoms), progress=progress, **options)
    point.analysis = analysis.atoms
    point.report["analysis"] = analysis.summary()
    return analysis


#: Per stage: its options completed from the study before it runs, and what to record beside them.
_DEFAULTS = {"trace": _trace_defaults, "refine": _refine_defaults}


def run_stage(point: TimePoint, stage: str, *args, progress: ProgressCallback = None, **options):
    """Run ``stage`` (one of :data:`STAGES`) on ``point`` with ``options`` and record it.

    Positional ``args`` go to the stage (classify's ``elements``). Returns the stage's result:
    :class:`Alignment`, :class:`~napari_aet.model.Reconstruction`, the atoms, or a
    :class:`~napari_aet.refine.Refinement`. On an error or a cancel the point is unchanged
    except for what the stage had finished writing (nothing, for every stage here).
    """
    if stage not in _STAGE_FUNCTIONS:
        raise InputError(f"unknown stage {stage!r}: expected one of {', '.join(STAGES)}")
    _check_fresh(point, stage)
    if stage == "reconstruct" or (stage == "align" and point.raw is not None):  # they read a tilt series first
        try:
            check_series(point.raw if stage == "align" else tilt_series_of(point), point.parameters.get("elements"),
                         options.get("min_distance"))
        except InputError as error:
            raise InputError(f"{stage} {point.name!r}: {error}") from None
    recorded = {}
    if stage in _DEFAULTS:  # defaults that depend on the study, recorded as used
        options, recorded = _DEFAULTS[stage](point, dict(options))
    if stage == "classify" and not args and options.get("elements") is None:
        options["elements"] = point.parameters.get("elements")
        if options["elements"] is None:
            raise InputError(f"classify {point.name!r}: which elements? give them (run_stage(point, \"classify\", "
                             "\"Fe,Pt\")) or with the time point (TimePoint(…, parameters={\"elements\": \"Fe,Pt\"}))")
    start = time.perf_counter()
    result = _STAGE_FUNCTIONS[stage](point, *args, progress=progress, **options)
    given = _given(stage, point, args, options)
    parameters = {**_used_defaults(stage, given), **given, **recorded}
    if stage == "reconstruct":  # what the method used, iterations run included
        parameters.update(result.parameters, method=result.method, geometry=result.metadata["geometry"],
                          background=result.metadata["background"]["method"])
    if stage == "classify":
        parameters["elements"] = point.parameters["elements"] = list(check_elements(
            args[0] if args else options["elements"]))
    record(point, stage, parameters, time.perf_counter() - start)
    return result


#: The function whose own defaults a stage's options complete, besides the stage function's.
_CORE_FUNCTIONS = {"align": ("align", "align_auto"), "trace": ("trace", "trace_atoms"),
                   "classify": ("classify", "classify_atoms"), "refine": ("refine", "refine_atoms"),
                   "analyse": ("analysis.analyze", "analyze_atoms")}
#: Arguments that are not parameters of the result.
_NOT_PARAMETERS = ("progress", "stop", "on_iteration")


def _given(stage: str, point: TimePoint, args: tuple, options: dict) -> dict:
    """The arguments given to ``stage``'s function by name (positional ones too; its ``**``
    options merged in)."""
    signature = inspect.signature(_STAGE_FUNCTIONS[stage])
    given = {}
    for name, value in signature.bind_partial(point, *args, **options).arguments.items():
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            given.update(value)
        elif name != "point":
            given[name] = value
    return given


def _used_defaults(stage: str, options: dict) -> dict:
    """The defaults ``stage`` used where ``options`` are silent: its function's keyword defaults and
    those of the core function its options go to (align_auto's only for the "automatic" method)."""
    import importlib

    functions = [_STAGE_FUNCTIONS[stage]]
    if stage in _CORE_FUNCTIONS and (stage != "align" or options.get("method", "automatic") == "automatic"):
        module, name = _CORE_FUNCTIONS[stage]
        functions.insert(0, getattr(importlib.import_module(f"napari_aet.{module}"), name))
    defaults = {}
    for function in functions:  # a stage function's None defers to its core function's default
        defaults.update({name: parameter.default for name, parameter in inspect.signature(function).parameters.items()
                         if parameter.default is not inspect.Parameter.empty and name not in _NOT_PARAMETERS
                         and (parameter.default is not None or name not in defaults)})
    return defaults
