"""napari-aet batch: plans, dask workers, resumable studies, one failure reported without stopping
the others, and the study opened in napari."""

import csv
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_aet import workflow
from napari_aet.batch import read_plan, run_series, time_order
from napari_aet.cli import main
from napari_aet.io import read_atoms, write_tilt_series
from napari_aet.model import InputError
from napari_aet.project import load_project
from napari_aet.simulate import fcc_particle, simulate_tilt_series
from cli_output import error_line

OPTIONS = "pixel_size,no_align,no_refine,iterations,seed"


def _series(path, seed):
    """A tiny aligned series (48 px, 15 tilts) of a ~80-atom FePt particle."""
    atoms = fcc_particle(radius=7.0, elements=("Fe", "Pt"), seed=seed)
    sim = simulate_tilt_series(atoms, np.linspace(-70, 70, 15), shape=(48, 48), pixel_size=0.4, max_shift=0,
                               seed=seed)
    write_tilt_series(path, sim.tilt_series)
    return path


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    """Three series: particle p1 at 0 and 30 min, and p2, whose angle file is one short (broken)."""
    folder = tmp_path_factory.mktemp("plan")
    (folder / "data").mkdir()
    for name, seed in (("p1_0", 1), ("p1_30", 2), ("p2_0", 3)):
        _series(folder / "data" / f"{name}.tif", seed)
    np.savetxt(folder / "data" / "p2_0.tlt", np.linspace(-70, 70, 14))
    path = folder / "plan.csv"
    path.write_text(f"series,elements,particle,time,{OPTIONS},lattice,min_nucleus\n"
                    "data/p1_0.tif,\"Fe,Pt\",p1,0,0.4,yes,yes,30,1,fcc,5\n"
                    "data/p1_30.tif,\"Fe,Pt\",p1,30,0.4,yes,yes,30,2,fcc,5\n"
                    "data/p2_0.tif,\"Fe,Pt\",p2,0,0.4,yes,yes,30,3,,\n")
    return path


def _summary(study):
    with open(study / "summary.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def study(plan, tmp_path_factory):
    """The first batch of ``plan`` on a local cluster of two worker processes."""
    out = tmp_path_factory.mktemp("study") / "study"
    shown = []  # what the terminal progress bar was given
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("napari_aet.cli.ConsoleProgress", lambda: lambda fraction, message="": shown.append(message))
        code = main(["batch", str(plan), "--out", str(out), "--workers", "2"])
    return out, code, shown


def test_batch_runs_every_series_and_reports_the_failure(study, plan):
    out, code, shown = study
    assert code == 1
    assert any("p1/0 reconstruct" in m or "p1/30 reconstruct" in m for m in shown)  # stages sent by the workers
    assert shown[-1].startswith("3/3 series, 1 failed")
    rows = {(r["particle"], r["time"], r["step"]): r for r in _summary(out)}
    assert {k: r["status"] for k, r in rows.items() if k[2] == "run"} == {
        ("p1", "0", "run"): "done", ("p1", "30", "run"): "done", ("p2", "0", "run"): "failed"}
    broken = rows["p2", "0", "run"]
    assert "15 projections but 14 angles" in broken["error"] and "\n" not in broken["error"]
    assert not (out / "p2").exists()  # a failed series leaves nothing
    for label, seed in (("0", 1), ("30", 2)):
        result = out / "p1" / label
        assert {"atoms.csv", "report.json", "project.aet", "reconstruction.mrc", "aligned.tif"} <= {
            p.name for p in result.iterdir()}
        report = json.loads((result / "report.json").read_text())
        assert report["parameters"]["seed"] == seed and report["parameters"]["align"] is False
        assert int(rows["p1", label, "run"]["n_atoms"]) == report["atoms"]["n_atoms"] == len(
            read_atoms(result / "atoms.csv"))
        assert 0 < float(rows["p1", label, "run"]["r_factor"]) < 1
        assert rows["p1", label, "run"]["precision_pm"] == ""  # no refinement in this plan
    particle = rows["p1", "0,30", "study+analyze+track"]
    assert particle["status"] == "done", particle["error"]
    points = load_project(out / "p1" / "study.aet").time_points
    assert [p.name for p in points] == ["0", "30"] and all(p.atoms is not None for p in points)
    assert [p.time for p in points] == [0.0, 30.0]
    # each time point knows which stages ran, so any of them can run again on the study (in napari)
    assert workflow.status(points[1]) == {"align": "not run", "reconstruct": "done", "trace": "done",
                                          "classify": "done", "refine": "not run", "analyse": "not run"}
    workflow.run_stage(points[1], "classify", "Fe,Pt")
    assert workflow.run_stage(points[1], "analyse", lattice="fcc", min_nucleus=5).atoms is not None
    tracks = pd.read_csv(out / "p1" / "tracks" / "tracks.csv")
    assert set(tracks.time) == {0, 30}  # the plan's time labels
    structure = json.loads((out / "p1" / "30" / "analysis" / "structure.json").read_text())
    assert structure["parameters"]["min_nucleus"] == 5 and structure["parameters"]["lattice"] == "fcc"


def test_a_batch_row_writes_what_run_writes(study, plan, tmp_path):
    out, *_ = study
    assert main(["run", str(plan.parent / "data" / "p1_30.tif"), "--elements", "Fe,Pt", "--pixel-size", "0.4",
                 "--no-align", "--no-refine", "--iterations", "30", "--seed", "2", "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "atoms.csv").read_text() == (out / "p1" / "30" / "atoms.csv").read_text()


def test_napari_opens_the_study_by_particle_with_a_time_axis(study, make_napari_viewer):
    out, *_ = study
    viewer = make_napari_viewer()
    viewer.open(str(out), plugin="napari-aet")
    assert [layer.name for layer in viewer.layers] == ["p1: reconstruction", "p1: atoms"]
    volume, atoms = viewer.layers
    truth = [load_project(out / "p1" / t / "project.aet").time_points[0] for t in ("0", "30")]
    assert volume.data.shape == (2, *truth[0].reconstruction.volume.shape)
    assert np.array_equal(volume.data[1], truth[1].reconstruction.volume)
    assert atoms.data.shape[1] == 4 and atoms.metadata["aet"]["times"] == ["0", "30"]
    assert atoms.features.groupby("time").size().to_dict() == {"0": len(truth[0].atoms), "30": len(truth[1].atoms)}
    assert np.allclose(atoms.data[atoms.data[:, 0] == 1][:, 1:] * atoms.scale[1:] + atoms.translate[1:],
                       truth[1].atoms.positions[:, ::-1])  # (z, y, x) in Å at the second time
    assert viewer.dims.axis_labels[0] == "time" and viewer.dims.range[0].stop == 1
    viewer.dims.ndisplay = 3
    viewer.dims.set_current_step(0, 1)
    shown = atoms._view_indices  # the time slider shows the real atoms of one time
    assert set(atoms.features["time"][shown]) == {"30"}
    assert len(shown) == np.count_nonzero(~truth[1].atoms.features["non_atom"].astype(bool))
    from napari_aet._napari import screenshot

    volume.visible = False  # the atoms alone render
    assert np.any(screenshot(viewer)[..., :3] > 0)

    viewer.layers.clear()
    viewer.open(str(out / "p1" / "study.aet"), plugin="napari-aet")
    assert [layer.name for layer in viewer.layers] == ["p1: reconstruction", "p1: atoms"]


def test_rerun_skips_finished_series_and_force_redoes_them(study, plan):
    from distributed import LocalCluster

    out, *_ = study
    before = (out / "p1" / "0" / "report.json").stat().st_mtime_ns
    # on an existing scheduler (an in-process cluster here; a SLURMCluster in production)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        batch = ["batch", str(plan), "--out", str(out), "--scheduler", cluster.scheduler_address]
        assert main(batch) == 1
        statuses = {(r["particle"], r["time"]): r["status"] for r in _summary(out) if r["step"] == "run"}
        assert statuses == {("p1", "0"): "skipped", ("p1", "30"): "skipped", ("p2", "0"): "failed"}
        assert (out / "p1" / "0" / "report.json").stat().st_mtime_ns == before
        assert main(batch + ["--force"]) == 1
    statuses = {(r["particle"], r["time"]): r["status"] for r in _summary(out) if r["step"] == "run"}
    assert statuses == {("p1", "0"): "done", ("p1", "30"): "done", ("p2", "0"): "failed"}
    assert (out / "p1" / "0" / "report.json").stat().st_mtime_ns > before


def test_the_toml_plan_of_the_docs_reads_time_0(tmp_path):
    """docs/batch.md's TOML example, as written: ``time = 0`` is a time (it read as missing)."""
    docs = (Path(__file__).parents[1] / "docs" / "batch.md").read_text()
    (tmp_path / "plan.toml").write_text(docs.split("```toml\n", 1)[1].split("```", 1)[0])
    for folder in ("sim", "sim30"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "tilt_series.tif").touch()
    rows = read_plan(tmp_path / "plan.toml")
    assert [(r.particle, r.time) for r in rows] == [("p1", "0"), ("p1", "30")]
    assert rows[1].options == {"pixel_size": 0.4, "no_refine": True}


def test_plan_paths_options_and_toml(tmp_path):
    for name in ("a.tif", "b.tif", "a.tlt"):
        (tmp_path / name).touch()
    csv_plan = tmp_path / "plan.csv"
    csv_plan.write_text("series,elements,particle,time,angles,pixel-size,no_refine,iterations,method\n"
                        "a.tif,Fe,p,5,a.tlt,0.35,true,,wbp\n"
                        "b.tif,\"Fe,Pt\",p,0.5,,,no,12,\n")
    toml_plan = tmp_path / "plan.toml"
    toml_plan.write_text('[[series]]\nseries = "a.tif"\nelements = "Fe"\nparticle = "p"\ntime = 5\n'
                         'angles = "a.tlt"\npixel_size = 0.35\nno_refine = true\nmethod = "wbp"\n\n'
                         '[[series]]\nseries = "b.tif"\nelements = "Fe,Pt"\nparticle = "p"\ntime = "0.5"\n'
                         'no_refine = false\niterations = 12\n')
    rows = read_plan(csv_plan)
    assert rows == read_plan(toml_plan)
    assert rows[0].series == tmp_path / "a.tif" and rows[0].time == "5"
    assert rows[0].options == {"angles": str(tmp_path / "a.tlt"), "pixel_size": 0.35, "no_refine": True,
                               "method": "wbp"}
    assert rows[1].options == {"no_refine": False, "iterations": 12} and rows[1].elements == "Fe,Pt"
    assert rows[0].analyze_options == rows[1].analyze_options == {}
    assert time_order([r.time for r in rows]) == ["0.5", "5"]
    assert time_order(["after", "before"]) == ["after", "before"]  # labels keep the plan's order


@pytest.mark.parametrize("body, message", [
    ("series,elements,particle,time,colour\na.tif,Fe,p,0,red\n", "unknown column(s) colour"),
    ("series,elements,particle\na.tif,Fe,p\n", "no time given"),
    ("series,elements,particle,time\na.tif,Fe,p,0\nb.tif,Fe,p,0\n", "particle p at time 0 is listed twice"),
    ("series,elements,particle,time,iterations\na.tif,Fe,p,0,ten\n", "iterations must be a whole number"),
    ("series,elements,particle,time,no_refine\na.tif,Fe,p,0,maybe\n", "no_refine must be true or false"),
    ("series,elements,particle,time\na.tif,Fe,../p,0\n", "cannot name a directory"),
    ("series,elements,particle,time\na.tif,Fe,p,tracks\n", "cannot name a directory"),
    ("series,elements,particle,time\na.tif,Xx,p,0\n", "unknown element"),
    ("series,elements,particle,time,method\na.tif,Fe,p,0,sirt\n", "unknown method 'sirt'"),
    ("series,elements,particle,time,pixel_size\na.tif,Fe,p,0,-0.4\n", "row 1: pixel_size must be positive, got -0.4"),
    ("series,elements,particle,time,refine_rounds\na.tif,Fe,p,0,-1\n", "row 1: refine_rounds must be 0 or more"),
    ("series,elements,particle,time\na.tif,Fe,p,0\nb.tif,Fe,Pt,p,5\n", 'row 2: more cells than the header has '
     'columns: quote a value that holds commas, e.g. "Fe,Pt"'),
    ('series,elements,particle,time,min_distance\na.tif,Fe,p,0,"Fe=2,Pt"\n', "expected PAIR=Å"),
    ("series,elements,particle,time,background\na.tif,Fe,p,0,smoth\n", "unknown background 'smoth'"),
    ("series,elements,particle,time,lattice\na.tif,Fe,p,0,fcc\nb.tif,Fe,p,5,bcc\n", "give the same for every time"),
    ("series,elements,particle,time\n", "lists no tilt series"),
    ("series,elements,particle,time\nc.tif,Fe,p,0\n", "series file"),
    ("series,elements,particle,time,angles\na.tif,Fe,p,0,c.tlt\n", "angles file"),
])
def test_bad_plans_are_one_clear_line(tmp_path, capsys, body, message):
    for name in ("a.tif", "b.tif"):
        (tmp_path / name).touch()
    plan = tmp_path / "plan.csv"
    plan.write_text(body)
    with pytest.raises(InputError, match="plan.csv"):
        read_plan(plan)
    assert main(["batch", str(plan), "--out", str(tmp_path / "out")]) == 2
    assert message in error_line(capsys)


def test_run_series_reports_instead_of_raising(tmp_path):
    from napari_aet.batch import PlanRow

    row = PlanRow(1, "p", "0", tmp_path / "missing.tif", "Fe,Pt", {"pixel_size": 0.4})
    summary = run_series(row, tmp_path / "out")
    assert summary["status"] == "failed" and "missing.tif does not exist" in summary["error"]
    assert not (tmp_path / "out").exists()


def test_a_refined_series_reports_its_precision(tmp_path):
    from napari_aet.batch import PlanRow

    row = PlanRow(1, "p", "0", _series(tmp_path / "s.tif", 1), "Fe,Pt",
                  {"pixel_size": 0.4, "no_align": True, "iterations": 30, "refine_rounds": 0})
    summary = run_series(row, tmp_path / "out")
    assert summary["status"] == "done", summary["error"]
    estimate = json.loads((tmp_path / "out" / "report.json").read_text())["refinement"]["precision_pm"]
    assert summary["precision_pm"] == ";".join(f"{e}={v['3d']:.1f}" for e, v in estimate.items())
    assert set(estimate) == {"Fe", "Pt"}


def test_rebuilding_a_study_keeps_its_hand_edits(study):
    from napari_aet.batch import build_study
    from napari_aet.project import save_project

    out, *_ = study
    project = load_project(out / "p1" / "study.aet")
    project.time_points[1].edits = [{"action": "delete", "index": 3}]
    save_project(out / "p1" / "study.aet", project)
    _, kept, carried, restarted = build_study(out / "p1", ["0", "30"])
    assert list((out / "p1").glob("study.edited-*.aet")) == [kept] and carried == ["30"] and restarted == []
    assert load_project(kept).time_points[1].edits == [{"action": "delete", "index": 3}]
    rebuilt = load_project(out / "p1" / "study.aet")  # time 30 did not run again: its edits carried over
    assert [p.edits for p in rebuilt.time_points] == [[], [{"action": "delete", "index": 3}]]
    assert rebuilt.provenance["particle"] == "p1"
    assert rebuilt.time_points[0].report["built_from"]["project"] == "0/project.aet"
    os.utime(out / "p1" / "30" / "project.aet", (4e9, 4e9))  # newer, as after a copy that drops file times
    assert build_study(out / "p1", ["0", "30"])[2] == ["30"]  # the same file: still carried
    ran_again = load_project(out / "p1" / "30" / "project.aet")
    ran_again.time_points[0].report["created"] = "a later run"
    save_project(out / "p1" / "30" / "project.aet", ran_again)  # its series ran again: the new result, edits in the copy
    _, kept_again, carried, restarted = build_study(out / "p1", ["0", "30"])
    assert [p.edits for p in load_project(out / "p1" / "study.aet").time_points] == [[], []] and carried == []
    assert restarted == ["30"]
    assert load_project(kept_again).time_points[1].edits == [{"action": "delete", "index": 3}]


def test_a_study_built_before_digests_judges_a_rerun_by_file_times(study):
    from napari_aet.batch import build_study
    from napari_aet.project import save_project

    out, *_ = study

    def edit_without_digests():
        project = load_project(out / "p1" / "study.aet")
        project.time_points[1].edits = [{"action": "delete", "index": 3}]
        for point in project.time_points:
            point.report.pop("built_from")
        save_project(out / "p1" / "study.aet", project)

    edit_without_digests()
    os.utime(out / "p1" / "30" / "project.aet", (4e9, 4e9))  # newer than the study: ran again
    assert build_study(out / "p1", ["0", "30"])[2] == []
    edit_without_digests()
    os.utime(out / "p1" / "30" / "project.aet", (1e9, 1e9))  # older than the study: carried, digest recorded
    assert build_study(out / "p1", ["0", "30"])[2] == ["30"]
    project = load_project(out / "p1" / "study.aet")
    assert "sha256" in project.time_points[1].report["built_from"]
    project.time_points[1].edits = []  # the module's study as it was, for the tests after this one
    save_project(out / "p1" / "study.aet", project)


def test_rebuilding_a_study_keeps_edits_napari_only_autosaved(study):
    """Edits made in napari and not saved (napari killed) live in study.edits.aet: a rebuild reads
    the study as napari opens it, carries them and keeps a copy."""
    from napari_aet.batch import build_study
    from napari_aet.project import Project, TimePoint, save_project
    from napari_aet.session import autosave_paths

    out, *_ = study
    _, edits_path = autosave_paths(out / "p1" / "study.aet")
    point = load_project(out / "p1" / "study.aet").time_points[0]
    hand_made = TimePoint(point.name, atoms=point.atoms, edits=[{"action": "delete", "index": 7}], stages=point.stages)
    save_project(edits_path, Project([hand_made]))
    _, kept, carried, _ = build_study(out / "p1", ["0", "30"])
    assert carried == ["0"] and load_project(kept).time_points[0].edits == [{"action": "delete", "index": 7}]
    assert load_project(out / "p1" / "study.aet").time_points[0].edits == [{"action": "delete", "index": 7}]
    assert not edits_path.exists() and autosave_paths(kept)[1].exists()  # the kept copy's now


def test_unsaved_edits_of_a_time_point_that_ran_again_are_kept(study):
    """Edits only in study.edits.aet (napari killed), at a time point whose series then ran again:
    the kept copy is the study as napari would open it, so it holds them (the renamed study.aet
    did not), and the rebuild names that time point."""
    from napari_aet.batch import build_study, describe_kept_study
    from napari_aet.project import Project, TimePoint, save_project
    from napari_aet.session import autosave_paths

    out, *_ = study
    _, edits_path = autosave_paths(out / "p1" / "study.aet")
    project = load_project(out / "p1" / "study.aet")
    project.time_points[0].edits = []
    save_project(out / "p1" / "study.aet", project)  # no edits saved
    point = project.time_points[0]
    save_project(edits_path, Project([TimePoint(point.name, atoms=point.atoms, stages=point.stages,
                                                edits=[{"action": "delete", "index": 2}])]))
    os.utime(edits_path, (1e9, 1e9))  # older than the study, as `cp -r` may leave it
    ran_again = load_project(out / "p1" / "0" / "project.aet")
    ran_again.time_points[0].report["created"] = "a later run"
    save_project(out / "p1" / "0" / "project.aet", ran_again)
    _, kept, carried, restarted = build_study(out / "p1", ["0", "30"])
    assert carried == [] and restarted == ["0"] and not edits_path.exists()
    assert load_project(kept).time_points[0].edits == [{"action": "delete", "index": 2}]
    assert autosave_paths(kept)[1].exists()  # moved beside the copy, not deleted
    assert load_project(out / "p1" / "study.aet").time_points[0].edits == []
    said = describe_kept_study({"particle": "p1", "kept": str(kept), "carried": carried, "restarted": restarted})
    assert f"time point(s) 0 ran again and start afresh: their hand edits are in {kept.name} only" in said


def test_a_stale_autosave_does_not_outlive_a_rebuilt_study(study):
    """Work napari autosaved and never saved (no hand edits) is kept in a copy and its autosave
    removed: left newer beside the rebuilt study.aet, napari's Open… loaded it instead."""
    from napari_aet.batch import build_study
    from napari_aet.project import save_project
    from napari_aet.session import StudySession, autosave_paths

    out, *_ = study
    autosave, _ = autosave_paths(out / "p1" / "study.aet")
    stale = load_project(out / "p1" / "study.aet")
    stale.time_points[1].report["created"] = "napari's unsaved work"
    save_project(autosave, stale)
    _, kept, _, _ = build_study(out / "p1", ["0", "30"])
    assert kept is not None and not autosave.exists() and autosave_paths(kept)[0].exists()
    assert load_project(kept).time_points[1].report["created"] == "napari's unsaved work"
    reopened = StudySession.open(out / "p1" / "study.aet")
    assert not reopened.recovered and reopened.study.time_points[1].report["created"] != "napari's unsaved work"


def test_study_progress_shows_series_done_and_stages_in_flight():
    from napari_aet.batch import StudyProgress

    shown = []
    study = StudyProgress(4, lambda fraction, message: shown.append((fraction, message)))
    study.finished = 1  # skipped
    study.stage((0.0, {"label": "p1/0", "fraction": 0.5, "stage": "reconstruct"}))
    study.done("p1/30", "failed")
    assert shown == [(pytest.approx(1.5 / 4), "1/4 series; p1/0 reconstruct 50%"),
                     (pytest.approx(2.5 / 4), "2/4 series, 1 failed; p1/0 reconstruct 50%; p1/30 failed")]


def test_ctrl_c_keeps_finished_series_and_a_rerun_finishes_the_rest(plan, tmp_path, capsys, monkeypatch):
    """A Ctrl-C after the first series: the interrupt flag set while its KeyboardInterrupt was
    swallowed (as in a dask callback, see the next test) stops the batch all the same."""
    from distributed import LocalCluster

    from napari_aet import batch as batch_module

    completed = batch_module._completed

    def interrupted_after_the_first(futures, interrupted, **kwargs):
        each = completed(futures, interrupted, **kwargs)
        yield next(each)
        interrupted.set()
        yield from each

    out = tmp_path / "study"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        batch = ["batch", str(plan), "--out", str(out), "--scheduler", cluster.scheduler_address]
        with monkeypatch.context() as patch:
            patch.setattr(batch_module, "_completed", interrupted_after_the_first)
            assert main(batch) == 130
        assert "finished series are kept" in capsys.readouterr().err
        rows = _summary(out)
        assert len(rows) == 3 and 1 <= sum(r["status"] != "interrupted" for r in rows) < 3
        assert all((out / r["particle"] / r["time"] / "report.json").exists() for r in rows if r["status"] == "done")
        assert main(batch) == 1
    statuses = {(r["particle"], r["time"]): r["status"] for r in _summary(out) if r["step"] == "run"}
    assert statuses[("p2", "0")] == "failed" and {statuses[("p1", "0")], statuses[("p1", "30")]} <= {"done", "skipped"}


def test_a_ctrl_c_in_a_garbage_collection_callback_still_stops_the_wait(monkeypatch):
    """dask's garbage-collection diagnosis runs as a gc callback in the main thread; a Ctrl-C landing
    there raised a KeyboardInterrupt that gc swallowed (printing a traceback), and the batch ran on
    to the end. There the handler now only sets the flag, and the wait for the futures stops on it."""
    import gc
    import signal
    import sys

    swallowed = []
    monkeypatch.setattr(sys, "unraisablehook", swallowed.append)

    from distributed import Client

    from napari_aet.batch import _completed, _interrupt_flag

    def ctrl_c_inside(phase, info):
        if phase == "start":
            signal.raise_signal(signal.SIGINT)  # the handler runs here, inside the callback
            sum(range(100))

    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as client, \
            _interrupt_flag() as interrupted:
        gc.callbacks.append(ctrl_c_inside)
        try:
            gc.collect()  # no KeyboardInterrupt comes out of it
        finally:
            gc.callbacks.remove(ctrl_c_inside)
        assert interrupted.is_set() and swallowed == []  # nothing raised into gc, so no traceback
        busy = client.submit(time.sleep, 3, pure=False)
        start = time.perf_counter()
        with pytest.raises(KeyboardInterrupt):
            list(_completed([busy], interrupted))
        assert time.perf_counter() - start < 1  # at once, not when the task ends


def test_only_batch_directories_open_as_studies(study, tmp_path):
    from napari_aet._napari.hooks import get_reader

    out, *_ = study
    assert get_reader(str(out)) is not None
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "study.aet").write_bytes((out / "p1" / "study.aet").read_bytes())
    assert get_reader(str(tmp_path)) is None  # a study.aet alone does not make a batch directory


def test_local_workers_are_single_threaded_quiet_and_without_dasks_malloc_trim(monkeypatch):
    """dask's MALLOC_TRIM_THRESHOLD_ made every series about 58% slower in a worker: it is not set;
    the workers' profiler and frequent monitors, which cost CPU the series need, are off or slowed."""
    import os

    import dask

    from napari_aet.batch import _close, start_client

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    client = start_client(workers=1)
    try:
        (environment,) = client.run(lambda: {name: os.environ.get(name)
                                             for name in ("OMP_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_")}).values()
        (settings,) = client.run(lambda: [dask.config.get(f"distributed.{name}") for name in
                                          ("worker.profile.enabled", "admin.system-monitor.interval",
                                           "admin.tick.interval")]).values()
        (on_ctrl_c,) = client.run(lambda: signal.getsignal(signal.SIGINT)).values()
    finally:
        _close(client, "none", True)
    assert environment == {"OMP_NUM_THREADS": "1", "MALLOC_TRIM_THRESHOLD_": None}
    assert settings == [False, "5s", "500ms"]
    assert on_ctrl_c == signal.SIG_IGN  # a Ctrl-C on the terminal reaches only the batch
    assert dask.config.get("distributed.worker.profile.enabled")  # the caller's own settings untouched
    assert dask.config.get("distributed.worker.multiprocessing-method") == "spawn"


def test_a_ctrl_c_while_the_local_cluster_starts_stops_the_batch(monkeypatch):
    """It was ignored (the batch ignored SIGINT while its workers started, so that they would)."""
    import distributed

    from napari_aet.batch import start_client

    started = []

    class CtrlCWhileStarting(distributed.LocalCluster):
        def __init__(self, *args, **kwargs):
            os.kill(os.getpid(), signal.SIGINT)  # as the terminal sends it, while the cluster starts
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(distributed, "LocalCluster", CtrlCWhileStarting)
    with pytest.raises(KeyboardInterrupt):
        start_client(workers=1)
    (cluster,) = started
    assert cluster.status.name == "closed"  # closed before the interrupt went on
