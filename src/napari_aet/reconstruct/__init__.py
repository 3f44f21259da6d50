"""Tomographic reconstruction of an aligned tilt series: GENFIRE, RESIRE and WBP.

``iterate(series, method, **params)`` yields an :class:`IterationState` after every
iteration (for live display); ``reconstruct`` runs it to the end with a progress callback.
To stop early and keep the current result, stop consuming the generator and pass the last
state to :func:`to_reconstruction`.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import numpy as np

from ..model import InputError, Reconstruction, TiltSeries
from ..progress import ProgressCallback, report
from ._common import IterationState
from .genfire import iterate_genfire
from .gridding import fourier_coverage
from .resire import iterate_resire
from .wbp import iterate_wbp

__all__ = [
    "METHODS",
    "IterationState",
    "fourier_coverage",
    "iterate",
    "lowest_r_free",
    "parameters",
    "reconstruct",
    "to_reconstruction",
]

METHODS = ("genfire", "resire", "wbp")
_ITERATORS = {"genfire": iterate_genfire, "resire": iterate_resire, "wbp": iterate_wbp}

#: What the pipeline and the widget start from where it differs from a method's own
#: (GENFIRE-Python-like) defaults. GENFIRE with 2x oversampling traced as many atoms of the
#: built-in sample as 3x in about half the time; 50 iterations found ~90% of its atoms,
#: 150 found 95.6%, 250 found 96.1% (perfectly aligned series; benchmarks/RESULTS.md).
RECOMMENDED = {"genfire": {"n_iterations": 250, "oversampling": 2.0}, "resire": {"n_iterations": 300}}


def parameters(method="genfire", **params) -> dict:
    """Every parameter ``method`` will use: its defaults updated with ``params``.

    Raises InputError for an unknown method or parameter name.
    """
    if method not in _ITERATORS:
        raise InputError(f"unknown reconstruction method {method!r}: expected one of {', '.join(METHODS)}")
    signature = inspect.signature(_ITERATORS[method])
    accepted = [name for name in signature.parameters if name != "series"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise InputError(f"{method} does not take parameter(s) {', '.join(unknown)}: it accepts "
                         f"{', '.join(accepted)}")
    return {name: params.get(name, signature.parameters[name].default) for name in accepted}


def recommended_parameters(method="genfire") -> dict:
    """Every parameter of ``method`` as the pipeline and the widget start from (see :data:`RECOMMENDED`)."""
    return parameters(method, **RECOMMENDED.get(method, {}))


def iterate(series: TiltSeries, method="genfire", **params) -> Iterator[IterationState]:
    """A generator of :class:`IterationState`, one per iteration of ``method`` on an aligned series.

    The input is checked and the data prepared (GENFIRE's gridding, WBP entirely) on the call,
    so bad input raises InputError here. The last state of a completed run has ``final=True``
    and holds the method's result.
    See :func:`parameters` for the accepted keyword parameters of each method.
    """
    parameters(method, **params)
    return _ITERATORS[method](series, **params)


def lowest_r_free(r_free, *, rise=0.02) -> str | None:
    """"R-free lowest <value> at iteration <i> of <n>" when the R-free per iteration ``r_free``
    ended more than ``rise`` above its lowest (GENFIRE's rises again in its highest-resolution
    stages, benchmarks/RESULTS.md §3); None otherwise."""
    r_free = np.asarray(r_free if r_free is not None else [], dtype=float)
    if len(r_free) < 2 or r_free.min() >= r_free[-1] - rise:
        return None
    return f"R-free lowest {r_free.min():.3f} at iteration {int(np.argmin(r_free)) + 1} of {len(r_free)}"


def _recordable(value):
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape}"
    return value.item() if isinstance(value, np.generic) else value


def to_reconstruction(state: IterationState, series: TiltSeries, method: str, params: dict) -> Reconstruction:
    """The Reconstruction holding ``state``'s volume (e.g. the current one when stopping early)."""
    used = {k: _recordable(v) for k, v in parameters(method, **params).items()}
    if not state.final and "n_iterations" in used:  # stopped early: say how many ran
        used["n_iterations_requested"], used["n_iterations"] = used["n_iterations"], state.iteration
    return Reconstruction(state.volume, series.pixel_size, method, used, state.errors,
                          {"iterations_run": state.iteration, "completed": state.final})


def reconstruct(series: TiltSeries, method="genfire", *, progress: ProgressCallback = None, stop=None,
                on_iteration=None, **params) -> Reconstruction:
    """Reconstruct an aligned tilt series; volume ``(nz, ny, nx)`` float32, voxel = pixel size.

    method : one of :data:`METHODS`. progress : ``progress(fraction, message)`` after each
    iteration; raising :class:`~napari_aet.progress.Cancelled` from it cancels the run.
    stop : ``stop()`` true after an iteration ends the run there, keeping the current iterate
        (``metadata["iterations_run"]`` and ``["completed"]`` say so).
    on_iteration : called with each :class:`IterationState` (e.g. a live view).
    params : the method's parameters (see :func:`parameters`); all used values are recorded.
    """
    report(progress, 0.0, f"{method}: preparing")
    state = None
    for state in iterate(series, method, **params):
        errors = ", ".join(f"{k} {v[-1]:.4f}" for k, v in state.errors.items() if v)
        report(progress, state.iteration / state.n_iterations,
               f"{method}: iteration {state.iteration}/{state.n_iterations} ({errors})")
        if on_iteration is not None:
            on_iteration(state)
        if stop is not None and stop():
            break
    return to_reconstruction(state, series, method, params)
