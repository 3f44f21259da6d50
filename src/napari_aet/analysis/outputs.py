"""Directory-level analysis: the files of ``napari-aet analyze`` and ``napari-aet track``.

``analyze`` writes ``atoms.csv`` (the input columns, then ``phase``, ``variant``, ``order_L10``,
``order_L12``, ``nucleus``, ``antisite``, ``displacement``, then the other per-atom results),
``nuclei.csv``, ``structure.json``, ``order.mrc`` and ``strain_xx.mrc`` … ``strain_yz.mrc``; without
a lattice (amorphous) only ``atoms.csv`` (the input columns, ``coordination``, ``Q4``, ``Q6``) and
``structure.json``, whose summary lists the analyses that ran and those skipped, with why.
``track`` writes ``tracks.csv``, ``transforms.json`` and ``nuclei_tracks.csv``. Files are written
into a hidden staging folder and moved in only when all succeeded, the JSON file last, so a failed
run leaves no half-written result (as :func:`napari_aet.pipeline.write_results`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from ..model import AtomModel, InputError, Reconstruction, real_atoms
from ..progress import ProgressCallback, report, sub_progress
from .analyze import ORDER_COLUMNS, Analysis, analyze_atoms
from .lattice import Lattice
from .strain import COMPONENTS
from .timeseries import follow_particle

#: The columns ``analyze`` adds, in the order of the command-line contract.
CONTRACT_COLUMNS = (*ORDER_COLUMNS, "displacement")
#: Further per-atom results, written after the contract columns.
EXTRA_COLUMNS = ("grain", "site_i", "site_j", "site_k", "misorientation", "displacement_x", "displacement_y",
                 "displacement_z", "eta_x", "eta_y", "eta_z", "nucleus_core", "nucleus_boundary",
                 "coordination", "Q4", "Q6")


def atoms_source(source) -> Path:
    """The atoms file of ``source``: an atoms CSV/XYZ, or a directory holding atoms.csv."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / "atoms.csv"
        if not path.is_file():
            raise InputError(f"{source} holds no atoms.csv: expected an atoms CSV, a run directory written by "
                             "`napari-aet run` or an `analyze` output")
    return path


def study_atoms(path) -> dict[str, AtomModel]:
    """The real atoms (:func:`~napari_aet.model.real_atoms`, hand edits included) of each time point
    of study ``path`` (``.aet``) that holds atoms, by time point name, in study order: one read."""
    from ..project import load_project

    return {point.name: real_atoms(point.atoms) for point in load_project(path).time_points
            if point.atoms is not None}


def read_source(source, time=None) -> AtomModel:
    """Atoms from an atoms file, a run / analyze directory, or a study (``.aet``: the atoms of its
    time point ``time``, hand edits included; ``time`` may be left out when it holds one); they
    must have x, y, z and element. Rows flagged ``non_atom`` (a study's noise peaks and removed
    atoms, also in a table written by ``io.write_atoms``) are left out, as the Analyse step leaves
    them out."""
    from ..io import read_atoms

    path = Path(source).expanduser()
    if path.suffix.lower() == ".aet":
        points = study_atoms(path)
        if time is None and len(points) == 1:
            time = next(iter(points))
        with contextlib.suppress(ValueError, TypeError):  # "30.0" for the time point named "30"
            time = next((name for name in points if float(name) == float(time)), time)
        if str(time) not in points:
            raise InputError(f"{path.name} holds atoms at time point(s) {', '.join(points) or 'none'}: "
                             + ("choose one with --time" if time is None else f"not at {time!r}"))
        atoms = points[str(time)]
    elif time is not None:
        raise InputError(f"--time chooses a time point of a study (.aet); {path.name} is not one")
    else:
        path = atoms_source(source)
        atoms = real_atoms(read_atoms(path))
    if np.all(atoms.species == ""):
        raise InputError(f"{path} has no element column (or it is empty): expected columns x,y,z,element")
    return atoms


@contextmanager
def _staged(out_dir, last):
    """A staging folder whose files move into ``out_dir`` on success (``last`` moved last). A run
    directory (holding report.json or project.aet) is refused: its atoms.csv would be replaced."""
    out_dir = Path(out_dir)
    run_files = [name for name in ("report.json", "project.aet") if (out_dir / name).exists()]
    if run_files:
        raise InputError(f"{out_dir} holds a run's results ({', '.join(run_files)}): the analysis would replace "
                         "its atoms.csv; choose another --out (e.g. a folder inside it)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=out_dir))
    except OSError as error:
        raise InputError(f"cannot write to output directory {out_dir}: {error.strerror or error}") from None
    try:
        yield staging
        for path in sorted(staging.iterdir(), key=lambda p: p.name == last):
            os.replace(path, out_dir / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _output_atoms(analysis: Analysis, input_columns) -> AtomModel:
    f = analysis.atoms.features
    order = [c for c in input_columns if c not in CONTRACT_COLUMNS + EXTRA_COLUMNS]
    order += [*CONTRACT_COLUMNS, *EXTRA_COLUMNS]
    return AtomModel(analysis.atoms.positions, analysis.atoms.species, {c: f[c] for c in order if c in f})


def write_analysis(analysis: Analysis, out_dir, input_columns=(), parameters=None) -> dict:
    """Write the ``analyze`` files of ``analysis`` into ``out_dir``; returns the summary."""
    from ..io import write_atoms, write_volume

    summary = analysis.summary()
    with _staged(out_dir, "structure.json") as staging:
        write_atoms(staging / "atoms.csv", _output_atoms(analysis, input_columns))
        if analysis.lattice is not None:
            analysis.nuclei.to_frame().to_csv(staging / "nuclei.csv", index=False, lineterminator="\n")
        if analysis.order_volume is not None:
            write_volume(staging / "order.mrc", Reconstruction(analysis.order_volume, analysis.order_voxel_size,
                                                               method="order parameter"))
        for name in COMPONENTS if analysis.strain is not None else ():
            write_volume(staging / f"strain_{name}.mrc", Reconstruction(analysis.strain.strain[name],
                                                                        analysis.strain.voxel_size, method="strain"))
        lattice = analysis.lattice.to_dict() if analysis.lattice is not None else None
        record = {"summary": summary, "lattice": lattice, **analysis.structure,
                  "parameters": parameters or {}}
        (staging / "structure.json").write_text(json.dumps(record, indent=1))
    return summary


def analyze_to_directory(source, out_dir, *, time=None, atoms=None, lattice="auto", lattice_constant=None,
                         min_nucleus=13, progress: ProgressCallback = None) -> dict:
    """``napari-aet analyze``: analyse the atoms of ``source`` and write the files into ``out_dir``.

    source : an atoms CSV (x, y, z in Å, element; other columns kept), a directory holding
    atoms.csv (a run directory), or a study (``.aet``; its time point ``time``, hand edits
    included). atoms : those atoms when already read (e.g. :func:`study_atoms`: a study is read
    once for all its time points). lattice : "auto", "fcc", "bcc" or "none" (amorphous; see
    :func:`~.analyze.choose_lattice`). Returns the summary (atoms, lattice, phase counts, nuclei,
    analyses run and skipped) with ``text``, a line for a person. When the order analysis cannot
    run on a lattice, everything else is written and then InputError says why.
    """
    if min_nucleus < 1:
        raise InputError(f"--min-nucleus must be at least 1, got {min_nucleus}")
    atoms = read_source(source, time) if atoms is None else atoms
    analysis = analyze_atoms(atoms, lattice=lattice, lattice_constant=lattice_constant, min_nucleus=min_nucleus,
                             progress=sub_progress(progress, 0, 0.9))
    summary = write_analysis(analysis, out_dir, input_columns=list(atoms.features),
                             parameters={"source": str(source), "time": time, "lattice": lattice,
                                         "lattice_constant": lattice_constant, "min_nucleus": min_nucleus})
    report(progress, 1.0, "analysis written")
    if analysis.order_error:
        raise InputError(f"{analysis.order_error}; the structure analysis was written to {out_dir}")
    return {**summary, "text": analysis.describe()}


def load_analysis_inputs(source, atoms=None):
    """Atoms (with ``nucleus``) and lattice (None: analysed without one) of one time point: read
    from an ``analyze`` output, or analysed now when ``source`` is a run directory or an atoms
    file, or when its ``atoms`` are given (a study's time point, :func:`study_atoms`)."""
    if atoms is None:
        atoms = read_source(source)
    structure = Path(source) / "structure.json"
    if structure.is_file():
        record = json.loads(structure.read_text())
        if record.get("lattice", {}) is None:
            return atoms, None
        if "nucleus" in atoms.features:
            return atoms, Lattice.from_dict(record["lattice"])
    analysis = analyze_atoms(atoms)
    return analysis.atoms, analysis.lattice


def track_to_directory(sources, out_dir, *, times=None, max_distance=None, change=0.1,
                       progress: ProgressCallback = None) -> dict:
    """``napari-aet track``: register the time points onto the first, track sites and nuclei.

    sources : ``analyze`` outputs (or run directories / atoms files, analysed on the fly) in time
    order, or one study (``.aet``: every time point holding atoms, hand edits included, labelled
    by their names). times : their labels for the ``time`` columns (e.g. minutes "0", "30", "60";
    default 0, 1, 2 …, or a study's time point names). max_distance : largest site move between times (Å; default half the
    nearest-neighbour distance). change : relative size change for grew / shrank.
    Writes tracks.csv (every atom of every time: its site track, element and x, y, z in Å
    registered onto the first time's frame), transforms.json, nuclei_tracks.csv; returns a summary.
    """
    sources = [(source, None) for source in sources]
    if len(sources) == 1 and Path(sources[0][0]).suffix.lower() == ".aet":
        study = sources[0][0]
        by_time = study_atoms(study)
        sources, times = [(study, atoms) for atoms in by_time.values()], list(by_time) if times is None else times
    if len(sources) < 2:
        raise InputError(f"tracking needs at least two time points, got {len(sources)}")
    labels = list(range(len(sources))) if times is None else list(times)
    if len(labels) != len(sources) or len(set(map(str, labels))) != len(labels):
        raise InputError(f"time labels {', '.join(map(str, labels))} for {len(sources)} time points: give one "
                         "label per time point, each once")
    loaded = []
    for t, (source, atoms) in enumerate(sources):
        report(progress, 0.4 * t / len(sources), f"reading time {labels[t]}…")
        loaded.append(load_analysis_inputs(source, atoms))
    followed = follow_particle([atoms for atoms, _ in loaded], [lattice for _, lattice in loaded],
                               max_distance=max_distance, change=change, progress=sub_progress(progress, 0.4, 0.9))
    sites, nuclei, transforms = followed.sites, followed.nuclei, followed.transforms
    tracks = pd.concat([pd.DataFrame({"time": labels[t], "index": np.arange(len(ids)), "track": ids,
                                      "element": loaded[t][0].species, **dict(zip("xyz", followed.positions[t].T)),
                                      "appeared": sites.appeared[t], "vanishes": sites.vanishes[t]})
                        for t, ids in enumerate(sites.track)])
    record = [{"time": labels[t], "source": str(source), **tr.to_dict()}
              for t, ((source, _), tr) in enumerate(zip(sources, transforms))]
    nucleus_rows = nuclei.to_frame()
    nucleus_rows["time"] = [labels[t] for t in nucleus_rows["time"]]
    with _staged(out_dir, "transforms.json") as staging:
        tracks.to_csv(staging / "tracks.csv", index=False, lineterminator="\n")
        nucleus_rows.to_csv(staging / "nuclei_tracks.csv", index=False, lineterminator="\n")
        (staging / "transforms.json").write_text(json.dumps(record, indent=1))
    report(progress, 1.0, "tracking written")
    return {"n_times": len(sources), "residuals_A": [tr.residual for tr in transforms],
            "n_tracks": int(tracks["track"].nunique()), "n_nucleus_tracks": int(len(np.unique(nuclei.nucleus_track))),
            "events": {str(e): int(n) for e, n in zip(*np.unique(nuclei.event.astype(str), return_counts=True))}}
