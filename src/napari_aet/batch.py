"""Batch studies on dask.distributed: many particles and time points, one machine or a cluster.

A plan (CSV or TOML) lists tilt series, one per row; each row becomes ``DIR/<particle>/<time>/``
holding exactly what ``napari-aet run`` writes (:func:`napari_aet.runs.run_to_directory`). Then
each particle gets ``DIR/<particle>/study.aet`` (every time point in one project) and, with two
or more times, each time is analysed into ``<time>/analysis/`` and the times are tracked into
``DIR/<particle>/tracks/``. ``DIR/summary.csv`` has one row per series and per particle step.

The engine is dask.distributed: a ``LocalCluster`` of single-threaded worker processes by
default, or any running scheduler (``scheduler="tcp://host:8786"``, e.g. dask-jobqueue's
``SLURMCluster``). A series whose directory holds a complete result (``report.json``, written
last) is skipped unless ``force``; a failing series is reported and does not stop the others.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import json
import logging
import os
import secrets
import shutil
import signal
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .background import BACKGROUNDS
from .elements import parse_min_distance
from .io.files import file_sha256
from .model import InputError, check_elements
from .progress import ProgressCallback
from .reconstruct import METHODS
from .runs import RUN_OPTIONS, edited_copy_path, run_to_directory

#: Plan columns every row must give (besides any ``run`` option of :data:`RUN_OPTIONS`).
REQUIRED = ("series", "elements", "particle", "time")
#: Optional plan columns passed to ``analyze`` (the same for every time of a particle).
ANALYZE_OPTIONS = {"lattice": str, "lattice_constant": float, "min_nucleus": int}
#: Columns of ``summary.csv``.
SUMMARY_COLUMNS = ("particle", "time", "step", "status", "n_atoms", "r_factor", "precision_pm", "wall_time_s", "error",
                   "series")
#: Names a particle or time label cannot take: they are directories or files of the batch layout.
RESERVED = {"tracks", "analysis", "study.aet", "summary.csv"}
TRUE, FALSE = {"true", "yes", "y", "1"}, {"false", "no", "n", "0", ""}
#: dask settings of the local cluster :func:`start_client` starts, each measured to cost a batch
#: time on a 2-core machine (benchmarks/RESULTS.md §10):
#:
#: * no ``MALLOC_TRIM_THRESHOLD_`` in the workers' environment: it turns off glibc's adaptive mmap
#:   threshold, so every large array of the reconstruction is mapped and zero-filled anew (a series
#:   was 58% slower in a worker than in a plain process);
#: * no statistical profiling of the running task (a sample of every thread's stack each 10 ms), the
#:   system monitor every 5 s instead of 0.5 s and the event loops' health check every 0.5 s instead
#:   of 20 ms: together they kept about 0.04 of a core busy in the batch's process and as much in
#:   each worker, taken from the series when there are as many workers as cores.
LOCAL_CLUSTER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,  # None: unset
                        "distributed.worker.profile.enabled": False,
                        "distributed.admin.system-monitor.interval": "5s",
                        "distributed.admin.tick.interval": "500ms"}


@dataclass(frozen=True)
class PlanRow:
    """One tilt series of a plan: where it is, what it is, and its ``run`` options.

    line : its row number in the plan (1 = the first series), for messages.
    options : keyword arguments of :func:`napari_aet.runs.run_to_directory`.
    analyze_options : keyword arguments of ``analyze_to_directory`` for the particle.
    """

    line: int
    particle: str
    time: str
    series: Path
    elements: str
    options: dict = field(default_factory=dict)
    analyze_options: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.particle}/{self.time}"


def _value(name, value, kind, where):
    """A plan cell converted to ``kind``; None when empty."""
    if value is None or (isinstance(value, str) and not value.strip() and kind is not bool):
        return None
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).strip().lower() in TRUE | FALSE:
            return str(value).strip().lower() in TRUE
        raise InputError(f"{where}: {name} must be true or false, got {value!r}")
    try:
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return kind(value.strip() if isinstance(value, str) else value)
    except ValueError:
        expected = {int: "a whole number", float: "a number", str: "text"}[kind]
        raise InputError(f"{where}: {name} must be {expected}, got {value!r}") from None


def _label(name, value, where) -> str:
    text = str(value).strip()
    if not text or text.startswith(".") or "/" in text or "\\" in text or text in RESERVED:
        raise InputError(f"{where}: {name} {text!r} cannot name a directory: use letters, digits, '-' or '_' "
                         f"(not {', '.join(sorted(RESERVED))})")
    return text


def _records(path: Path) -> list[dict]:
    """The plan's rows as dicts with lower-case, ``_``-separated column names."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the plan {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if path.suffix.lower() == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            raise InputError(f"{path.name}: TOML plans need Python 3.11 or newer: use a CSV plan") from None
        try:
            records = tomllib.loads(text).get("series", [])
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"{path.name} is not valid TOML ({exc}): expected [[series]] tables") from None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise InputError(f"{path.name}: expected [[series]] tables, one per tilt series")
    else:
        records = list(csv.DictReader(io.StringIO(text)))
        for line, record in enumerate(records, start=1):
            if None in record:
                raise InputError(f"{path.name} row {line}: more cells than the header has columns: quote a value "
                                 'that holds commas, e.g. "Fe,Pt"')
    return [{str(k).strip().lower().replace("-", "_"): v for k, v in record.items()} for record in records]


def read_plan(path) -> list[PlanRow]:
    """Read and check a batch plan.

    CSV (a header row, then one row per tilt series) or TOML (one ``[[series]]`` table per tilt series).
    Columns: ``series`` (the file), ``elements`` ("Fe,Pt"), ``particle`` and ``time`` (labels; times
    in minutes are ordered by value), and optionally any ``run`` option: ``angles``, ``pixel_size``
    (Å), ``tilt_axis``, ``layout``, ``exclude``, ``keep_spikes``, ``no_align``, ``method``, ``iterations``,
    ``background``, ``normalise``, ``fsc``, ``no_refine``, ``refine_iterations``, ``refine_rounds``,
    ``keep_every_move``, ``no_precision``, ``min_distance`` (``2.2`` or ``"Fe-Pt=2.3,Pt=2.4"``,
    quoted in a CSV), ``seed``, ``geometry`` (:data:`napari_aet.runs.RUN_OPTIONS`). Relative paths
    are relative to the plan file; an empty cell means the default. Raises InputError for a plan
    that cannot run (unknown column, missing value, a repeated particle and time, an unknown element
    or method, a malformed minimum distance, a series or angle file that does not exist); a series
    file that exists but cannot be used is not checked here: its row fails alone.
    """
    path = Path(path).expanduser().absolute()  # series paths must hold on every worker
    if not path.is_file():
        raise InputError(f"plan {path} does not exist: expected a CSV or TOML file, one row per tilt series")
    records = _records(path)
    if not records:
        raise InputError(f"plan {path.name} lists no tilt series: expected a header and one row per series")
    known = set(REQUIRED) | set(RUN_OPTIONS) | set(ANALYZE_OPTIONS)
    rows, seen, analysis = [], set(), {}
    for line, record in enumerate(records, start=1):
        where = f"{path.name} row {line}"
        unknown = sorted(set(record) - known)
        if unknown:
            raise InputError(f"{where}: unknown column(s) {', '.join(unknown)}: expected "
                             f"{', '.join(REQUIRED)}, run options {', '.join(RUN_OPTIONS)} and analyze "
                             f"options {', '.join(ANALYZE_OPTIONS)}")
        missing = [name for name in REQUIRED if record.get(name) is None or not str(record[name]).strip()]
        if missing:
            raise InputError(f"{where}: no {', '.join(missing)} given")
        particle, time_label = _label("particle", record["particle"], where), _label("time", record["time"], where)
        if (particle, time_label) in seen:
            raise InputError(f"{where}: particle {particle} at time {time_label} is listed twice")
        seen.add((particle, time_label))
        try:
            elements = ",".join(check_elements(str(record["elements"])))
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
        options = {name: _value(name, record[name], RUN_OPTIONS[name], where)
                   for name in RUN_OPTIONS if name in record}
        options = {name: value for name, value in options.items() if value is not None}
        for name in ("pixel_size", "iterations"):
            if name in options and options[name] <= 0:
                raise InputError(f"{where}: {name} must be positive, got {options[name]}")
        for name in ("refine_iterations", "refine_rounds"):
            if name in options and options[name] < 0:
                raise InputError(f"{where}: {name} must be 0 or more, got {options[name]}")
        if options.get("method", METHODS[0]) not in METHODS:
            raise InputError(f"{where}: unknown method {options['method']!r}: expected one of {', '.join(METHODS)}")
        if options.get("background", "auto") not in ("auto", *BACKGROUNDS):
            raise InputError(f"{where}: unknown background {options['background']!r}: expected auto, "
                             f"{', '.join(BACKGROUNDS)}")
        if "min_distance" in options:
            try:
                parse_min_distance(options["min_distance"])
            except InputError as exc:
                raise InputError(f"{where}: {exc}") from None
        if "angles" in options:
            options["angles"] = str(path.parent / Path(options["angles"]).expanduser())
        series = path.parent / Path(str(record["series"]).strip()).expanduser()
        for what, file in (("series", series), ("angles", options.get("angles"))):
            if file is not None and not Path(file).is_file():  # found now, not hours into the batch
                raise InputError(f"{where}: {what} file {file} does not exist (paths are relative to the plan)")
        analyze = {name: _value(name, record[name], ANALYZE_OPTIONS[name], where)
                   for name in ANALYZE_OPTIONS if name in record}
        analyze = {name: value for name, value in analyze.items() if value is not None}
        if analysis.setdefault(particle, analyze) != analyze:
            raise InputError(f"{where}: analyze options {analyze} differ from those of particle {particle}'s "
                             f"earlier rows {analysis[particle]}: give the same for every time of a particle")
        rows.append(PlanRow(line, particle, time_label, series, elements, options, analyze))
    return rows


def time_order(labels) -> list[str]:
    """Time labels in study order: by value when every label is a number (minutes), else as given."""
    labels = list(labels)
    try:
        return sorted(labels, key=float)
    except ValueError:
        return labels


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if isinstance(exc, InputError) else f"{type(exc).__name__}: {text}"


def _report_metrics(report: dict) -> dict:
    """Atoms, final R-factor (refinement's if it ran, else the reconstruction's) and the half-set
    precision of the refined positions (3D RMS, pm, per element: "Fe=16.2;Pt=2.9"; "" when not
    estimated) of a report."""
    refinement = report.get("refinement", {})
    r_factor = refinement.get("final_r_factor", report.get("reconstruction", {}).get("final_r_factor"))
    precision = ";".join(f"{element}={v['3d']:.1f}" for element, v in refinement.get("precision_pm", {}).items())
    return {"n_atoms": report.get("atoms", {}).get("n_atoms", ""), "r_factor": "" if r_factor is None else r_factor,
            "precision_pm": precision}


class _StageEvents:
    """A progress callback that sends a series' pipeline stage (align, reconstruct, …) and
    fraction done to the client as a dask event, at every new stage and at most twice a second
    between; does nothing outside a dask worker."""

    def __init__(self, topic, label):
        from distributed import get_worker

        from .pipeline import STAGE_WEIGHTS

        try:
            self.worker = get_worker()
        except ValueError:
            self.worker = None
        self.stages, self.topic, self.label = set(STAGE_WEIGHTS), topic, label
        self.stage, self.sent_stage, self.sent = "starting", "", 0.0

    def __call__(self, fraction, message=""):
        first = message.split("…")[0].split(" ")[0]
        self.stage = first if first in self.stages else self.stage
        now = time.monotonic()
        if self.worker is not None and (self.stage != self.sent_stage or now - self.sent > 0.5):
            self.worker.log_event(self.topic, {"label": self.label, "fraction": float(fraction), "stage": self.stage})
            self.sent_stage, self.sent = self.stage, now


def run_series(row: PlanRow, out_dir, *, force=False, topic=None) -> dict:
    """Run one plan row into ``out_dir`` (a dask task); never raises for a bad series.

    Returns its summary row: status "done" or "failed" with the one-line error, or "skipped"
    when, without ``force``, a complete result appeared since the batch looked (an interrupted
    run's series that finished late, another batch).
    """
    start = time.perf_counter()
    summary = {"particle": row.particle, "time": row.time, "step": "run", "series": str(row.series)}
    out_dir = Path(out_dir)
    if not force and (out_dir / "report.json").exists():
        return skipped_summary(row, out_dir)
    for staging in (*out_dir.parent.glob(f".partial-{out_dir.name}-*"), *out_dir.glob(".partial-*")):
        shutil.rmtree(staging, ignore_errors=True)  # left by a run killed while writing; the batch owns DIR
    try:
        report = run_to_directory(row.series, out_dir, row.elements, force=force, **row.options,
                                  progress=_StageEvents(topic, row.label) if topic else None)
        summary.update(status="done", error="", **_report_metrics(report))
    except Exception as exc:  # one bad series must not stop the others: it is reported instead
        summary.update(status="failed", error=_one_line(exc), n_atoms="", r_factor="")
    summary["wall_time_s"] = round(time.perf_counter() - start, 2)
    return summary


def skipped_summary(row: PlanRow, out_dir: Path) -> dict:
    """The summary row of a series whose directory already holds a complete result."""
    report = json.loads((out_dir / "report.json").read_text())
    return {"particle": row.particle, "time": row.time, "step": "run", "status": "skipped", "error": "",
            "series": str(row.series), "wall_time_s": "", **_report_metrics(report)}


def build_study(particle_dir, times) -> tuple[Path, Path | None, list[str], list[str]]:
    """``particle_dir/study.aet``: one project holding every time (in order) from
    ``particle_dir/<time>/project.aet``, each time point named by its time label (and timed by it
    when it is a number) with the record of its stages (so any stage can run again), and the
    particle's name in its provenance (``"particle"``: napari opens it as a study).

    Hand edits are never lost: the previous study is read as napari opens it (with its
    autosaves: :meth:`napari_aet.session.StudySession.load`); a time point it holds with edits is
    carried into the new study as it was, unless its series ran again since (:func:`_ran_again`).
    When the previous study held edits, or had autosaves, it is first saved so under a new name
    (``study.edited-<UTC time>.aet``), and its autosaves are moved beside that copy, as its own:
    left beside the new study, napari would open them instead of it. Each time point taken from
    a project.aet records that file's SHA-256 (``report["built_from"]``). Returns the study's
    path, that kept copy's (None if there was nothing to keep), the names of the time points
    carried over and of the edited ones that ran again (their edits only in the kept copy)."""
    from .project import Project, holds_edits, load_project, provenance, save_project
    from .session import StudySession, autosave_paths

    particle_dir = Path(particle_dir)
    study = particle_dir / "study.aet"
    autosaves = [path for path in autosave_paths(study) if path.exists()]
    found = [path for path in (study, *autosaves) if path.exists()]
    worth_reading = autosaves or (study.exists() and holds_edits(study))  # else nothing to keep: not read
    previous = StudySession.open(study).study if worth_reading else None
    edited = {point.name: point for point in (previous.time_points if previous else []) if point.edits}
    written = max((path.stat().st_mtime for path in found), default=0.0)
    points, carried, restarted = [], [], []
    for label in times:
        project = particle_dir / label / "project.aet"
        digest = file_sha256(project)
        built_from = {"project": f"{label}/project.aet", "sha256": digest}
        if label in edited and not _ran_again(edited[label], project, digest, written):
            edited[label].report["built_from"] = built_from  # edited in napari since the run: kept
            points.append(edited[label])
            carried.append(label)
            continue
        if label in edited:
            restarted.append(label)
        for point in load_project(project).time_points:
            point.name = label
            point.report["built_from"] = built_from
            with contextlib.suppress(ValueError):  # a time in minutes, when the label is a number
                point.time = float(label)
            points.append(point)
    kept = save_project(edited_copy_path(study), previous) if edited or autosaves else None
    for path in autosaves:  # the copy's now: nothing deleted
        path.rename(autosave_paths(kept)[autosave_paths(study).index(path)])
    saved = save_project(study, Project(points, {**provenance("napari-aet batch"), "particle": particle_dir.name}))
    return saved, kept, carried, restarted


def _ran_again(point, project, digest, study_written) -> bool:
    """Whether the series of the study's time point ``point`` ran again since the study was built:
    its ``project`` (a project.aet, SHA-256 ``digest``) is not the file the point was taken from.
    A point of a study built before the digest was recorded is judged by file times (``project``
    newer than the study, modified at ``study_written``, seconds since the epoch)."""
    recorded = point.report.get("built_from", {}).get("sha256")
    if recorded is None:
        return project.stat().st_mtime > study_written
    return recorded != digest


def describe_kept_study(summary: dict) -> str:
    """What a rebuild of a particle's study did with the study before (a :func:`finish_particle` row)."""
    kept, carried, restarted = Path(summary["kept"]).name, summary["carried"], summary["restarted"]
    said = [f"{summary['particle']}: its study before (hand edits, or work napari autosaved) is kept as {kept}"]
    if carried:
        said.append(f"the new study.aet carries the edited time point(s) {', '.join(carried)}, which did not "
                    "run again")
    if restarted:
        said.append(f"time point(s) {', '.join(restarted)} ran again and start afresh: their hand edits are in "
                    f"{kept} only")
    return "; ".join(said)


def finish_particle(particle_dir, times, analyze_options=None) -> dict:
    """A particle's study-level steps (a dask task): ``study.aet``, then with two or more times
    ``analyze`` each time (with ``analyze_options``: lattice, lattice_constant, min_nucleus) and
    ``track`` them. Returns its summary row."""
    from .analysis.outputs import analyze_to_directory, study_atoms, track_to_directory

    start = time.perf_counter()
    particle_dir = Path(particle_dir)
    summary = {"particle": particle_dir.name, "time": ",".join(times),
               "step": "study+analyze+track" if len(times) >= 2 else "study", "series": "",
               "n_atoms": "", "r_factor": "", "status": "done", "error": ""}
    try:
        _, kept, carried, restarted = build_study(particle_dir, times)
        if kept is not None:
            summary["kept"], summary["carried"], summary["restarted"] = str(kept), carried, restarted
        if len(times) >= 2:
            by_time = study_atoms(particle_dir / "study.aet")  # the hand edits it carries count; read once
            for label in times:
                analyze_to_directory(particle_dir / "study.aet", particle_dir / label / "analysis", time=label,
                                     atoms=by_time[label], **(analyze_options or {}))
            track_to_directory([particle_dir / label / "analysis" for label in times], particle_dir / "tracks",
                               times=times)
    except Exception as exc:
        summary.update(status="failed", error=_one_line(exc))
    summary["wall_time_s"] = round(time.perf_counter() - start, 2)
    return summary


def write_summary(path, rows) -> Path:
    """Write ``summary.csv`` (columns :data:`SUMMARY_COLUMNS`) atomically."""
    from .io.files import atomic_write

    path = Path(path)
    with atomic_write(path) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows({name: row.get(name, "") for name in SUMMARY_COLUMNS} for row in rows)
    return path


class StudyProgress:
    """Study-level progress: series finished out of all, with the stage of each series in flight,
    sent to ``progress(fraction, message)``. Fed from dask events and finished futures."""

    def __init__(self, total, progress: ProgressCallback):
        self.total, self.progress, self.lock = max(total, 1), progress, threading.Lock()
        self.finished, self.failed, self.in_flight = 0, 0, {}

    def stage(self, event):
        """dask event handler: ``event`` is ``(timestamp, {"label", "fraction", "stage"})``."""
        message = event[1]
        with self.lock:
            self.in_flight[message["label"]] = (message["fraction"], message["stage"])
            self._show()

    def done(self, label, status):
        with self.lock:
            self.in_flight.pop(label, None)
            self.finished += 1
            self.failed += status == "failed"
            self._show(f"{label} {status}")

    def _show(self, last=""):
        if self.progress is None:
            return
        running = sum(fraction for fraction, _ in self.in_flight.values())
        stages = ", ".join(f"{label} {stage} {fraction:.0%}"
                           for label, (fraction, stage) in sorted(self.in_flight.items()))
        failed = f", {self.failed} failed" if self.failed else ""
        self.progress((self.finished + running) / self.total,
                      f"{self.finished}/{self.total} series{failed}" + (f"; {stages}" if stages else "")
                      + (f"; {last}" if last else ""))


def start_client(*, workers=None, scheduler=None):
    """A dask ``Client``: on the running scheduler at ``scheduler`` (e.g. ``"tcp://host:8786"``),
    else on a new ``LocalCluster`` of ``workers`` (default: one per core) single-threaded worker
    processes, with :data:`LOCAL_CLUSTER_CONFIG`. dask's nanny sets OMP_NUM_THREADS (and
    MKL/OpenBLAS) to 1 in each worker process, which :func:`napari_aet.threads.fft_workers` and BLAS
    honour, so workers do not oversubscribe the cores."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            return Client(scheduler, timeout="20s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise InputError(f"cannot reach the dask scheduler at {scheduler} ({_one_line(exc)}): is it "
                             "running, and is the address tcp://host:port?") from None
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise InputError(f"--workers must be 1 or more, got {workers}")
    import dask

    with dask.config.set({**LOCAL_CLUSTER_CONFIG, "distributed.worker.multiprocessing-method": "forkserver"}):
        _start_forkserver()
        with _interrupt_flag(deferred=True) as interrupted:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                                   silence_logs=logging.ERROR)
    if interrupted.is_set():  # a Ctrl-C while the cluster started
        cluster.close()
        raise KeyboardInterrupt
    return Client(cluster)


def _start_forkserver():
    """Start multiprocessing's fork server (with dask's preloads) with SIGINT ignored: the worker
    processes forked from it ignore SIGINT too, so a Ctrl-C on the terminal reaches only the batch
    (which cancels the work and closes its cluster), not every worker with a traceback. Spawned
    workers would take the batch's own handler, reset by exec to Python's KeyboardInterrupt.
    Ignored only in the main thread, where signal handlers can be set, for the ~0.2 s the server takes."""
    import multiprocessing.forkserver

    from distributed.utils import get_mp_context

    get_mp_context()  # sets dask's preloads of the server
    if threading.current_thread() is not threading.main_thread():
        multiprocessing.forkserver.ensure_running()
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, previous)



@contextmanager
def _interrupt_flag(*, deferred=False):
    """An Event that Ctrl-C (SIGINT) sets, besides raising KeyboardInterrupt as usual (not when
    ``deferred``: the caller looks at the Event). dask runs callbacks of its own in the main thread
    (its garbage-collection diagnosis): a KeyboardInterrupt raised in one of them is swallowed there
    ("Exception ignored in …") and the batch ran on to the end; the waiting loops
    (:func:`_completed`) check the flag, so it stops all the same. Only in the main thread, where
    signal handlers can be set (elsewhere the Event is never set)."""
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted
        return

    def on_ctrl_c(signum, frame):
        interrupted.set()
        if not deferred and not _in_gc_callback(frame):  # there it would only be swallowed, with a traceback
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def _in_gc_callback(frame) -> bool:
    """Whether ``frame`` runs inside one of the garbage collector's callbacks (``gc.callbacks``)."""
    codes = {getattr(getattr(callback, "__func__", callback), "__code__", None) for callback in gc.callbacks}
    while frame is not None:
        if frame.f_code in codes:
            return True
        frame = frame.f_back
    return False


def _completed(futures, interrupted: threading.Event, poll=0.2):
    """Each of ``futures`` as it completes (looking every ``poll`` s); KeyboardInterrupt as soon as
    ``interrupted`` is set (:func:`_interrupt_flag`)."""
    from distributed import as_completed

    pending = as_completed(futures)
    while not pending.is_empty():
        if interrupted.is_set():
            raise KeyboardInterrupt
        batch = pending.next_batch(block=False)
        yield from batch
        if not batch:
            time.sleep(poll)


def run_batch(plan, out_dir, *, workers=None, scheduler=None, force=False, progress: ProgressCallback = None,
              log: Callable[[str], None] | None = None) -> list[dict]:
    """Run every series of a plan on dask, then each particle's study steps; write ``summary.csv``.

    plan : CSV or TOML file (:func:`read_plan`).
    out_dir : the study directory ``DIR``.
    workers : worker processes of the local cluster (default: one per core); ignored with ``scheduler``.
    scheduler : address of a running dask scheduler, e.g. ``"tcp://host:8786"``.
    force : redo series that already have a complete result (hand-edited projects are kept).
    progress : ``progress(fraction, message)`` for the study; log : one-line messages for the user.

    Returns the summary rows (as in ``summary.csv``). Bad plans raise InputError before anything
    runs; a failing series is a "failed" row. On KeyboardInterrupt the series in flight are
    cancelled (they leave no result) and marked "interrupted", the summary is written, and the
    interrupt propagates; a re-run finishes the rest.
    """
    log = log or (lambda message: None)
    rows = read_plan(plan)
    out_dir = Path(out_dir)
    summaries = {}
    for row in rows:
        if not force and (out_dir / row.particle / row.time / "report.json").exists():
            summaries[row.label] = skipped_summary(row, out_dir / row.particle / row.time)
    pending = [row for row in rows if row.label not in summaries]
    log(f"{len(rows)} series in {Path(plan).name}: {len(summaries)} already done, {len(pending)} to run")
    client = start_client(workers=workers, scheduler=scheduler)
    topic = f"napari-aet-batch-{secrets.token_hex(4)}"
    study = StudyProgress(len(rows), progress)
    study.finished = len(summaries)
    futures = {}
    with _interrupt_flag() as interrupted:
        try:
            return _run_plan(client, rows, pending, summaries, out_dir, force, topic, study, futures, interrupted,
                             log)
        except KeyboardInterrupt:
            for future, row in futures.items():
                if row.label in summaries:
                    continue
                if future.status == "finished":  # finished, not yet collected
                    summaries[row.label] = future.result()
                else:
                    future.cancel()
                    summaries[row.label] = {"particle": row.particle, "time": row.time, "step": "run",
                                            "series": str(row.series), "status": "interrupted",
                                            "error": "interrupted before it finished"}
            write_summary(out_dir / "summary.csv", _in_plan_order(rows, summaries))
            raise
        finally:
            _close(client, topic, scheduler is None)


def _run_plan(client, rows, pending, summaries, out_dir, force, topic, study, futures, interrupted, log):
    """:func:`run_batch`'s work on ``client``: submit the ``pending`` rows (their futures go into
    ``futures``), collect each summary into ``summaries`` as it finishes, then run each particle's
    study steps; returns the summary rows."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the study directory {out_dir}: {exc.strerror or exc}") from None
    log(f"dask dashboard: {client.dashboard_link}")
    client.subscribe_topic(topic, study.stage)
    futures.update({client.submit(run_series, row, out_dir / row.particle / row.time, force=force, topic=topic,
                                  key=f"{topic}-{row.line}", pure=False): row for row in pending})
    unsettled = Counter(row.particle for row in pending)  # a particle's study steps start once it is 0
    finishing = [_finish_particle(client, rows, summaries, out_dir, force, particle)
                 for particle in dict.fromkeys(row.particle for row in rows) if not unsettled[particle]]
    for future in _completed(futures, interrupted):
        row = futures[future]
        try:
            summary = future.result()
        except Exception as exc:  # the worker died (KilledWorker) or the cluster failed
            summary = {"particle": row.particle, "time": row.time, "step": "run", "series": str(row.series),
                       "status": "failed", "error": f"its worker failed: {_one_line(exc)}"}
        summaries[row.label] = summary
        study.done(row.label, summary["status"])
        if summary["status"] == "failed":
            log(f"{row.label} failed: {summary['error']}")
        write_summary(out_dir / "summary.csv", _in_plan_order(rows, summaries))
        unsettled[row.particle] -= 1
        if not unsettled[row.particle]:  # overlaps the series still running
            finishing.append(_finish_particle(client, rows, summaries, out_dir, force, row.particle))
    finishing = [future for future in finishing if future is not None]
    for _ in _completed(finishing, interrupted):
        pass
    particle_rows = client.gather(finishing)
    for summary in particle_rows:
        if summary["status"] == "failed":
            log(f"{summary['particle']} study steps failed: {summary['error']}")
        if summary.get("kept"):
            log(describe_kept_study(summary))
    result = _in_plan_order(rows, summaries) + particle_rows
    write_summary(out_dir / "summary.csv", result)
    return result


def _in_plan_order(rows, summaries) -> list[dict]:
    return [summaries[row.label] for row in rows if row.label in summaries]


def _finish_particle(client, rows, summaries, out_dir, force, particle):
    """Submit ``particle``'s study steps (study.aet, analyze, track) once all its series are settled,
    if one of them changed, ``force``, or nothing was built yet; the future, or None."""
    settled = [row for row in rows if row.particle == particle and row.label in summaries
               and summaries[row.label]["status"] in ("done", "skipped")]
    if not settled:
        return None
    changed = any(summaries[row.label]["status"] == "done" for row in settled)
    if not (changed or force or not (out_dir / particle / "study.aet").exists()):
        return None
    times = time_order(row.time for row in settled)
    return client.submit(finish_particle, out_dir / particle, times, settled[0].analyze_options, pure=False)


def _close(client, topic, own_cluster):
    """Close the client (and the local cluster it started) without leaving worker processes."""
    try:
        client.unsubscribe_topic(topic)
    except Exception:  # already gone with a dead scheduler
        pass
    cluster = client.cluster if own_cluster else None
    client.close()
    if cluster is not None:
        cluster.close()
