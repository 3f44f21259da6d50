"""The napari-aet command: the contract that batch users and outside checks rely on."""

import json
import re

import numpy as np
import pytest
import tifffile

from napari_aet.cli import build_parser, main, parse_tilt_axis
from napari_aet.io import read_atoms, read_volume, write_tilt_series
from napari_aet.model import InputError
from napari_aet.pipeline import real_atoms
from napari_aet.project import load_project
from napari_aet.runs import RUN_OPTIONS, pipeline_options
from napari_aet.simulate import fcc_particle, simulate_tilt_series
from cli_output import error_line


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    assert main(["simulate", "--out", str(out), "--size", "64", "--radius", "7", "--n-angles", "31",
                 "--seed", "3"]) == 0
    return out


def test_simulate_writes_series_angles_and_truth(simulated):
    assert tifffile.imread(simulated / "tilt_series.tif").shape == (31, 64, 64)
    assert len(np.loadtxt(simulated / "tilt_series.tlt")) == 31
    truth = json.loads((simulated / "truth.json").read_text())
    assert len(truth["true_shifts_dy_dx_px"]) == 31
    assert len(read_atoms(simulated / "truth_atoms.csv")) == truth["n_atoms"]


def test_run_writes_every_result(simulated, tmp_path, capsys):
    out = tmp_path / "result"
    assert main(["run", str(simulated / "tilt_series.tif"), "--pixel-size", "0.4", "--elements", "Fe,Pt",
                 "--out", str(out), "--seed", "1", "--fsc", "--iterations", "60", "--refine-rounds", "1"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"atoms.csv", "reconstruction.mrc", "aligned.tif", "report.json", "project.aet", "summary.txt"} <= names
    assert not [n for n in names if n.startswith(".partial")]
    header = (out / "atoms.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["x", "y", "z", "element"]
    report = json.loads((out / "report.json").read_text())
    assert report["atoms"]["n_atoms"] == len(read_atoms(out / "atoms.csv")) > 0
    # the half-set (FSC) reconstructions are timed within "reconstruct" (workflow's reconstruct stage)
    assert set(report["timings_s"]) >= {"align", "reconstruct", "trace", "classify", "refine", "total"}
    refinement = report["refinement"]
    assert set(refinement["heights"]) == {"Fe", "Pt"} and refinement["heights"]["Pt"] > refinement["heights"]["Fe"]
    assert 0.3 < refinement["widths_A"]["Pt"] < 1.0 and 0 < refinement["final_r_factor"] < 1
    assert 0 < refinement["shift_A"]["median"] < 0.5 and refinement["n_added"] >= 0
    assert set(refinement["moves_kept"]) == {"Fe", "Pt"} and all(0 <= f <= 1 for f in refinement["moves_kept"].values())
    assert refinement["residual_correlation"] and min(refinement["residual_correlation"]) >= 1  # per completion round
    # the refinement gets the run's seed, and removes the background the reconstruction did
    assert report["parameters"]["refine_options"] == {"complete_rounds": 1, "seed": 1, "background": "smooth"}
    assert recon_background(report) == "smooth"
    assert {"refine_shift", "half_set_error"} <= set((out / "atoms.csv").read_text().splitlines()[0].split(","))
    assert load_project(out / "project.aet").time_points[0].traced is not None
    recon = report["reconstruction"]
    assert recon["method"] == "genfire" and report["parameters"]["reconstruct_options"]["n_iterations"] == 60
    assert 0.9 < recon["relative_totals"][0] <= 1 <= recon["relative_totals"][1] < 1.1  # a steady beam
    assert "normalisation_factors" not in recon
    assert len(recon["errors_per_iteration"]["r_free"]) == 60 and 0 < recon["final_r_free"] < 1
    fsc = recon["half_set_fsc"]
    assert fsc["fsc"][0] > 0.9 and 0.8 < fsc["resolution_A_at_0.143"] < 5.0
    assert read_volume(out / "reconstruction.mrc").voxel_size == pytest.approx(0.4)
    printed = capsys.readouterr().out
    assert "Atoms:" in printed and "moves kept (checked on held-out projections): Fe" in printed
    assert (out / "summary.txt").read_text().rstrip("\n") in printed  # what was printed is kept
    axis, shifts = report["alignment"]["tilt_axis"]["used"], list(report["alignment"]["shifts"].values())[-1]
    rms = np.sqrt(np.mean(np.sum(np.square(shifts), axis=1)))
    assert 1 < rms < 5  # the simulator shifts by up to ±3 px
    assert re.search(rf"^Alignment: aligned series kept: .*; tilt axis {axis + 0.0:.1f}° \(the data cannot tell it "
                     rf"from .*°, which gives the mirror image: --tilt-axis chooses\), rms shift {rms:.1f} px$", printed,
                     re.MULTILINE)
    assert set(report["refinement"]["precision_pm"]) == {"Fe", "Pt"}
    assert "Position precision (half sets, noise only): Fe" in printed
    assert report["atoms"]["n_outside_box"] == 0 and "outside the reconstructed box" not in printed
    from napari_aet.runs import summary_text

    report["atoms"]["n_outside_box"] = 3
    assert "peaks rejected as noise; 3 atom(s) outside the reconstructed box" in summary_text(report)
    assert "total intensities range" not in printed and "Projections scaled" not in printed
    assert refinement["worst_projections"] == [] and len(refinement["projection_misfit"]) == 31  # none stands out


def recon_background(report):
    return report["reconstruction"]["background"]["method"]


def test_the_summary_is_saved_with_where_the_input_came_from(simulated, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(simulated)  # relative paths given, absolute ones recorded
    out = tmp_path / "result"
    assert main(["run", "tilt_series.tif", "--elements", "Fe,Pt", "--no-align", "--no-refine", "--iterations", "5",
                 "--out", str(out)]) == 0
    saved = (out / "summary.txt").read_text()
    assert saved.endswith("\n") and saved.rstrip("\n") in capsys.readouterr().out
    series, sidecar = (simulated / "tilt_series.tif").resolve(), (simulated / "tilt_series.tlt").resolve()
    assert saved.startswith(f"Input: {series} read as stack (angles, y, x); angles from sidecar {sidecar}, pixel "
                            "size 0.4 Å from file metadata\n")
    assert "\nAlignment: not run (--no-align)\n" in saved
    source = json.loads((out / "report.json").read_text())["input"]
    assert source["path"] == str(series) and source["angles_from"] == f"sidecar {sidecar}"
    assert source["pixel_size_from"] == "file metadata"
    assert main(["run", "tilt_series.tif", "--elements", "Fe,Pt", "--no-align", "--no-refine", "--iterations", "5",
                 "--pixel-size", "0.5", "--angles", "tilt_series.tlt", "--out", str(tmp_path / "given")]) == 0
    assert (tmp_path / "given" / "summary.txt").read_text().startswith(
        f"Input: {series} read as stack (angles, y, x); angles from --angles {sidecar}, pixel size 0.5 Å from "
        "--pixel-size (the file says 0.4 Å)\n")  # the simulator writes its pixel size into the TIFF


def test_atoms_outside_the_reconstructed_box_are_counted_and_named():
    """A film's refined atoms at the box's edges were counted with the others, unsaid (an audit:
    38 of 1,133 outside the field)."""
    from napari_aet.model import AtomModel, Reconstruction
    from napari_aet.pipeline import _outside_box

    box = Reconstruction(np.zeros((10, 10, 10), np.float32), 1.0)  # voxels 0…9, voxel 5 at 0 Å: -5.5 to 4.5 Å
    atoms = AtomModel([[0.0, 0.0, 0.0], [4.4, -5.4, 0.0], [4.6, 0.0, 0.0], [0.0, 0.0, -5.6]], ["Pt"] * 4)
    assert _outside_box(atoms, box) == 2


def test_the_alignment_line_says_what_the_alignment_did():
    from napari_aet.runs import alignment_line

    shifts = {"centre of mass": [[0, 0], [0, 0]], "final": [[3.0, 4.0], [0.0, 0.0]]}  # rms 5/√2 px
    measured = {"tilt_axis": {"used": 29.84, "given": None}, "shifts": shifts}
    kept = {**measured, "check": {"accepted": True, "reason": "aligned series kept: better"}}
    assert alignment_line({"parameters": {"align": True}, "alignment": kept}) == (
        "aligned series kept: better; tilt axis 29.8° (the data cannot tell it from -150.2°, which gives the "
        "mirror image: --tilt-axis chooses), rms shift 3.5 px")
    mirrored = {**kept, "tilt_axis": {"used": -95.0, "given": None}}
    assert "tilt axis -95.0° (the data cannot tell it from 85.0°" in alignment_line(
        {"parameters": {"align": True}, "alignment": mirrored})
    searched = list(np.arange(-90.0, 90.0, 3.0))  # an axis along image x, searched about 0°: a toss-up
    for used, tie in ((-90.1, True), (89.9, True), (80.0, False), (29.8, False)):
        line = alignment_line({"parameters": {"align": True},
                               "alignment": {**kept, "tilt_axis": {"used": used, "given": None, "angles": searched}}})
        assert ("at the edge of the range searched the two were a toss-up" in line) == tie, line
    rejected = {"tilt_axis": {"used": 27.0, "given": 27.0}, "shifts": shifts,
                "check": {"accepted": False, "reason": "input kept: worse"}}
    assert alignment_line({"parameters": {"align": True}, "alignment": rejected}) == (
        "input kept: worse; not kept: tilt axis 27.0° (given), rms shift 3.5 px")
    skipped = {"angles": [0, 1], "shifts": {}, "skipped": "kept as it is: Euler angles"}
    assert alignment_line({"parameters": {"align": True}, "alignment": skipped}) == "kept as it is: Euler angles"
    assert alignment_line({"parameters": {"align": False}, "alignment": {}}) == "not run (--no-align)"


def test_keep_every_move_reaches_the_refinement():
    args = build_parser().parse_args(["run", "series.tif", "--elements", "Pt", "--out", "o", "--keep-every-move"])
    assert args.keep_every_move and RUN_OPTIONS["keep_every_move"] is bool
    assert pipeline_options(keep_every_move=True)["refine_options"] == {"validate_moves": False}
    assert pipeline_options()["refine_options"] == {}


def test_a_background_choice_reaches_the_reconstruction():
    args = build_parser().parse_args(["run", "s.tif", "--elements", "Pt", "--out", "o", "--background", "constant"])
    assert args.background == "constant" and RUN_OPTIONS["background"] is str
    assert pipeline_options(background="none")["reconstruct_options"] == {"background": "none"}
    assert pipeline_options()["reconstruct_options"] == {}  # auto: smooth for a particle, none for a film


def test_normalise_reaches_the_reconstruction():
    args = build_parser().parse_args(["run", "series.tif", "--elements", "Pt", "--out", "o", "--normalise"])
    assert args.normalise and RUN_OPTIONS["normalise"] is bool
    assert pipeline_options(normalise=True)["reconstruct_options"] == {"normalise": True}
    assert pipeline_options()["reconstruct_options"] == {}


def test_a_drifting_beam_is_pointed_out_and_normalised_on_request(simulated, tmp_path, capsys):
    from napari_aet.io import read_tilt_series, write_tilt_series

    series = read_tilt_series(simulated / "tilt_series.tif", pixel_size=0.4)
    drift = np.random.default_rng(0).uniform(0.7, 1.3, series.n_angles)
    write_tilt_series(tmp_path / "drift.tif", series.replace(projections=series.projections * drift[:, None, None]))
    common = [str(tmp_path / "drift.tif"), "--pixel-size", "0.4", "--elements", "Fe,Pt", "--iterations", "20",
              "--no-refine"]
    assert main(["run", *common, "--out", str(tmp_path / "as_is")]) == 0
    assert "total intensities range" in capsys.readouterr().out
    assert main(["run", *common, "--out", str(tmp_path / "scaled"), "--normalise"]) == 0
    printed = capsys.readouterr().out
    assert "Projections scaled to one total intensity" in printed and "total intensities range" not in printed
    recon = json.loads((tmp_path / "scaled" / "report.json").read_text())["reconstruction"]
    low, high = recon["normalisation_factors"]
    assert low < 1 / drift.max() * 1.1 and high > 1 / drift.min() * 0.9  # they undo the drift


def test_spikes_are_replaced_counted_and_kept_on_request(simulated, tmp_path, capsys):
    from napari_aet.io import read_tilt_series, write_tilt_series

    series = read_tilt_series(simulated / "tilt_series.tif", pixel_size=0.4)
    projections = series.projections.copy()
    projections[3, 10, 12] = projections[17, 40, 50] = 10 * projections.max()  # two X-ray hits
    write_tilt_series(tmp_path / "hits.tif", series.replace(projections=projections))
    common = [str(tmp_path / "hits.tif"), "--pixel-size", "0.4", "--elements", "Fe,Pt", "--iterations", "20",
              "--no-refine"]
    assert main(["run", *common, "--out", str(tmp_path / "clean")]) == 0
    assert "Replaced 2 single-pixel spike(s)" in capsys.readouterr().out
    assert json.loads((tmp_path / "clean" / "report.json").read_text())["input"]["spikes_replaced"] == 2
    assert main(["run", *common, "--out", str(tmp_path / "kept"), "--keep-spikes"]) == 0
    assert "Replaced" not in capsys.readouterr().out
    report = json.loads((tmp_path / "kept" / "report.json").read_text())
    assert report["input"]["spikes_replaced"] == 0 and report["parameters"]["keep_spikes"] is True
    assert RUN_OPTIONS["keep_spikes"] is bool


def test_projections_that_fit_worst_are_named_and_can_be_left_out(simulated, tmp_path, capsys):
    from scipy import ndimage

    from napari_aet.io import read_tilt_series, write_tilt_series

    series = read_tilt_series(simulated / "tilt_series.tif", pixel_size=0.4)
    projections = series.projections.copy()
    for i in (8, 21):  # scan distortion: sheared images
        projections[i] = ndimage.affine_transform(projections[i], [[1, 0], [0.15, 1]], offset=[0, -5], order=1)
    write_tilt_series(tmp_path / "sheared.tif", series.replace(projections=projections))
    common = [str(tmp_path / "sheared.tif"), "--pixel-size", "0.4", "--elements", "Fe,Pt", "--iterations", "20"]
    assert main(["run", *common, "--out", str(tmp_path / "all"), "--refine-rounds", "1", "--no-precision"]) == 0
    worst = json.loads((tmp_path / "all" / "report.json").read_text())["refinement"]["worst_projections"]
    assert {p["index"] for p in worst} == {8, 21} and all(p["misfit"] > 1.5 for p in worst)
    indices = ",".join(str(p["index"]) for p in worst)  # worst first
    assert "Projections fitting the model worst" in (printed := capsys.readouterr().out)
    assert f"--exclude {indices} leaves them out" in printed
    assert main(["run", *common, "--out", str(tmp_path / "some"), "--refine-rounds", "1", "--no-precision",
                 "--exclude", "3, 8"]) == 0
    assert "Left out projections 3, 8; 29 remain" in (printed := capsys.readouterr().out)
    assert "; projections 3, 8 left out (--exclude)\n" in (tmp_path / "some" / "summary.txt").read_text()
    report = json.loads((tmp_path / "some" / "report.json").read_text())
    assert report["input"]["excluded_projections"] == [3, 8] and report["input"]["shape"][0] == 29
    # the other sheared image is named by its place in the file (21), as --exclude counts, not in the series (19)
    assert [p["index"] for p in report["refinement"]["worst_projections"]] == [21]
    assert "--exclude 3,8,21 leaves them out with those left out already" in printed
    assert RUN_OPTIONS["exclude"] is str


def test_no_precision_reaches_the_refine_stage():
    args = build_parser().parse_args(["run", "series.tif", "--elements", "Pt", "--out", "o", "--no-precision"])
    assert args.no_precision and RUN_OPTIONS["no_precision"] is bool
    assert pipeline_options(no_precision=True)["refine_options"] == {"precision": False}


def test_min_distance_reaches_tracing_and_refinement():
    args = build_parser().parse_args(["run", "s.tif", "--elements", "Fe,Pt", "--out", "o", "--min-distance", "Pt=2.6"])
    assert args.min_distance == "Pt=2.6" and RUN_OPTIONS["min_distance"] is str
    options = pipeline_options(min_distance="Pt=2.6")
    assert options["trace_options"] == {"min_distance": {"Pt-Pt": 2.6}}
    assert options["refine_options"] == {"min_distance": {"Pt-Pt": 2.6}}
    assert pipeline_options()["trace_options"] == {}


def test_no_two_atoms_nearer_than_the_minimum_distance_given(simulated, tmp_path):
    def shortest(out):
        from scipy.spatial import cKDTree

        positions = real_atoms(read_atoms(out / "atoms.csv")).positions
        return cKDTree(positions).query(positions, k=2)[0][:, 1].min()

    common = [str(simulated / "tilt_series.tif"), "--pixel-size", "0.4", "--elements", "Fe,Pt", "--iterations", "20",
              "--no-align", "--no-precision"]
    assert main(["run", *common, "--out", str(tmp_path / "default")]) == 0
    assert main(["run", *common, "--out", str(tmp_path / "far"), "--min-distance", "Fe=3,Fe-Pt=3,Pt=3"]) == 0
    report = json.loads((tmp_path / "far" / "report.json").read_text())["parameters"]
    assert report["trace_options"]["min_distance"] == report["refine_options"]["min_distance"] == {
        "Fe-Fe": 3.0, "Fe-Pt": 3.0, "Pt-Pt": 3.0}
    assert shortest(tmp_path / "default") < 2.9 <= 3.0 <= shortest(tmp_path / "far")


@pytest.mark.parametrize("args, message", [
    (["run", "missing.tif", "--pixel-size", "0.4", "--elements", "Fe,Pt"], "missing.tif"),
    (["run", "{sim}/tilt_series.tif", "--pixel-size", "0", "--elements", "Fe,Pt"], "pixel size"),
    (["run", "{sim}/tilt_series.tif", "--pixel-size", "0.4", "--elements", "Fe,Xx"], "unknown element"),
    (["run", "{sim}/tilt_series.tif", "--pixel-size", "0.4", "--elements", "Fe,Pt", "--angles",
      "{sim}/short.tlt"], "angles"),
    (["run", "{sim}/tilt_series.tif", "--pixel-size", "0.4", "--elements", "Fe,Pt", "--tilt-axis", "left"],
     "--tilt-axis"),
    (["run", "{sim}/tilt_series.tif", "--pixel-size", "0.4", "--elements", "Fe,Pt", "--refine-iterations", "-1"],
     "--refine-iterations"),
    (["run", "{sim}/tilt_series.tif", "--pixel-size", "0.4", "--elements", "Fe,Pt", "--refine-rounds", "-2"],
     "--refine-rounds"),
    (["run", "{sim}/tilt_series.tif", "--pixel-size", "0.4", "--elements", "Fe,Pt", "--min-distance", "Fe-Pt"],
     "the minimum distance"),
    (["run", "{sim}/tilt_series.tif", "--pixel-size", "0.4", "--elements", "Fe,Pt", "--exclude", "3,40"],
     "no projection [40] among the 31"),
    (["run", "{sim}/tilt_series.tif", "--pixel-size", "0.4", "--elements", "Fe,Pt", "--exclude", "first"],
     "projections to leave out must be indices"),
])
def test_bad_input_is_one_clear_line(simulated, tmp_path, capsys, args, message):
    np.savetxt(simulated / "short.tlt", np.linspace(-60, 60, 10))
    args = [a.format(sim=simulated) for a in args] + ["--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert message in error_line(capsys)
    assert not (tmp_path / "o" / "report.json").exists()


def test_run_without_refinement(simulated, tmp_path):
    out = tmp_path / "result"
    assert main(["run", str(simulated / "tilt_series.tif"), "--pixel-size", "0.4", "--elements", "Fe,Pt",
                 "--out", str(out), "--iterations", "20", "--no-refine"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert "refinement" not in report and "refine" not in report["timings_s"]
    assert "refine_shift" not in (out / "atoms.csv").read_text().splitlines()[0]
    assert load_project(out / "project.aet").time_points[0].traced is None


def test_tilt_axis_inconsistent_with_the_data(simulated, tmp_path, capsys):
    code = main(["run", str(simulated / "tilt_series.tif"), "--pixel-size", "0.4", "--elements", "Fe,Pt",
                 "--out", str(tmp_path / "o"), "--tilt-axis", "x"])
    error = error_line(capsys)
    assert code == 2 and "tilt axis 90.00° disagrees with the data" in error
    assert "leave out --tilt-axis" in error  # the command line's words, not only Python's


def test_unwritable_output_directory(simulated, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code = main(["run", str(simulated / "tilt_series.tif"), "--pixel-size", "0.4", "--elements", "Fe,Pt",
                 "--out", str(blocker / "out")])
    assert code == 2 and "cannot write to output directory" in capsys.readouterr().err


def test_parse_tilt_axis():
    assert parse_tilt_axis("y") == 0.0 and parse_tilt_axis("X") == 90.0 and parse_tilt_axis("-12.5") == -12.5
    with pytest.raises(InputError):
        parse_tilt_axis("diagonal")


def test_demo_gui_layers(make_napari_viewer):
    """What ``napari-aet demo --gui`` shows: tilt series, aligned series, volume, refined atoms,
    atoms before refinement, truth."""
    from napari_aet.cli import add_result_layers
    from napari_aet.pipeline import run_pipeline
    from napari_aet.simulate import sample_fept

    sim = sample_fept(size=64, radius=7.0)
    result = run_pipeline(sim.tilt_series, "Fe,Pt", reconstruct_options={"n_iterations": 20})
    viewer = make_napari_viewer()
    add_result_layers(viewer, result, sim.atoms)
    names = [layer.name for layer in viewer.layers]
    assert names == ["tilt series", "aligned", "reconstruction", "atoms", "traced atoms", "ground truth atoms"]
    assert viewer.dims.ndisplay == 3 and viewer.layers["reconstruction"].visible
    assert not viewer.layers["ground truth atoms"].visible and not viewer.layers["traced atoms"].visible
    atoms = viewer.layers["atoms"]
    assert len(atoms.data) == len(result.atoms)
    assert np.array_equal(atoms.shown, ~result.atoms.features["non_atom"].astype(bool))  # noise hidden


QUICK = ["--pixel-size", "0.4", "--elements", "Fe,Pt", "--no-align", "--no-refine", "--iterations", "5"]


def test_run_refuses_a_directory_with_results_unless_forced(simulated, tmp_path, capsys):
    out = tmp_path / "result"
    out.mkdir()
    (out / "atoms.csv").write_text("x,y,z,element\n")
    args = ["run", str(simulated / "tilt_series.tif"), *QUICK, "--out", str(out)]
    assert main(args) == 2
    error = error_line(capsys)
    assert "already holds results (atoms.csv); it has no report.json, which a run writes last" in error
    assert "(a run that did not finish, or another program's files): pass --force to replace them, delete the " \
        "folder, or choose another --out" in error
    assert (out / "atoms.csv").read_text() == "x,y,z,element\n" and not (out / "report.json").exists()
    assert main(args + ["--force"]) == 0
    assert len(read_atoms(out / "atoms.csv")) > 0 and (out / "report.json").exists()


def test_force_keeps_a_project_with_hand_edits(simulated, tmp_path, capsys):
    from napari_aet.project import save_project

    out = tmp_path / "result"
    args = ["run", str(simulated / "tilt_series.tif"), *QUICK, "--out", str(out), "--force"]
    assert main(args) == 0
    project = load_project(out / "project.aet")
    project.time_points[0].edits = [{"action": "delete", "index": 0}]
    save_project(out / "project.aet", project)
    capsys.readouterr()
    assert main(args) == 0
    kept = list(out.glob("project.edited-*.aet"))
    assert len(kept) == 1 and f"as {kept[0]}" in capsys.readouterr().out
    assert load_project(kept[0]).time_points[0].edits == [{"action": "delete", "index": 0}]
    assert load_project(out / "project.aet").time_points[0].edits == []
    assert main(args) == 0  # the new project has no edits: it is replaced, nothing more is kept
    assert len(list(out.glob("project.edited-*.aet"))) == 1


def test_a_failed_run_leaves_no_directory(simulated, tmp_path, capsys, monkeypatch):
    out = tmp_path / "new" / "result"
    assert main(["run", str(simulated / "tilt_series.tif"), "--pixel-size", "0.4", "--elements", "Fe,Xx",
                 "--out", str(out)]) == 2
    assert not (tmp_path / "new").exists()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("napari_aet.pipeline.run_pipeline", interrupted)
    assert main(["run", str(simulated / "tilt_series.tif"), *QUICK, "--out", str(out)]) == 130
    assert not (tmp_path / "new").exists() and "interrupted" in capsys.readouterr().err


def test_results_appear_whole_or_not_at_all(simulated, tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("napari_aet.io.write_volume", disk_full)
    with pytest.raises(OSError):
        main(["run", str(simulated / "tilt_series.tif"), *QUICK, "--out", str(tmp_path / "new" / "result")])
    assert list(tmp_path.iterdir()) == []


def test_truncated_tiff_is_one_clear_line(simulated, tmp_path, capsys):
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes((simulated / "tilt_series.tif").read_bytes()[:20000])
    assert main(["run", str(truncated), "--angles", str(simulated / "tilt_series.tlt"), *QUICK,
                 "--out", str(tmp_path / "o")]) == 2
    error = error_line(capsys)
    assert "truncated or corrupt" in error and "truncated.tif" in error


def test_nan_projections_are_named(simulated, tmp_path, capsys):
    data = tifffile.imread(simulated / "tilt_series.tif")
    data[4, 10, 10] = np.nan
    data[17, 0, 0] = np.inf
    tifffile.imwrite(tmp_path / "nan.tif", data)
    assert main(["run", str(tmp_path / "nan.tif"), "--angles", str(simulated / "tilt_series.tlt"), *QUICK,
                 "--out", str(tmp_path / "o")]) == 2
    assert "2 NaN or Inf values, in projections 4, 17" in error_line(capsys)


def test_nan_frames_are_named(tmp_path):
    from napari_aet.io import read_frames

    frames = np.ones((4, 2, 8, 8), np.float32)
    frames[2, 1, 3, 3] = np.nan
    np.save(tmp_path / "frames.npy", frames)
    with pytest.raises(InputError, match=r"in the frames of tilts 2 \(from 0\)"):
        read_frames(tmp_path / "frames.npy")


def test_on_a_terminal_the_error_replaces_the_progress_bar(simulated, tmp_path, monkeypatch):
    """The bar is redrawn in place with \\r; the error must not be appended to its line."""
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    code = main(["run", str(simulated / "tilt_series.tif"), "--pixel-size", "0.4", "--elements", "Fe,Pt",
                 "--out", str(tmp_path / "o"), "--tilt-axis", "x"])
    bar, error = terminal.getvalue().rsplit("\r\033[K", 1)
    assert code == 2 and "%" in bar and error.startswith("napari-aet: error:") and error.count("\n") == 1


@pytest.mark.parametrize("pixel_size, message", [("0.04", "is the pixel size in Å .a value in nm is 10 times smaller"),
                                                 ("40", "too few to tell them apart")])
def test_a_pixel_size_in_the_wrong_unit_is_refused_before_any_work(tmp_path, capsys, pixel_size, message):
    series = simulate_tilt_series(fcc_particle(radius=5.0), np.linspace(-60, 60, 9), shape=(32, 32)).tilt_series
    write_tilt_series(tmp_path / "s.tif", series)
    assert main(["run", str(tmp_path / "s.tif"), "--pixel-size", pixel_size, "--elements", "Pt,Fe",
                 "--out", str(tmp_path / "out")]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out" / "report.json").exists()


def test_too_few_projections_are_refused_before_any_work(tmp_path, capsys):
    series = simulate_tilt_series(fcc_particle(radius=5.0), np.linspace(-60, 60, 5), shape=(32, 32)).tilt_series
    write_tilt_series(tmp_path / "s.tif", series)
    assert main(["run", str(tmp_path / "s.tif"), "--pixel-size", "0.4", "--elements", "Pt",
                 "--out", str(tmp_path / "out")]) == 2
    assert "5 projections: a tomogram needs many views" in capsys.readouterr().err


def test_bad_reconstruction_options_are_refused_before_any_work(tmp_path, capsys, monkeypatch):
    import napari_aet.align

    def fail(series, *, background="smooth", **options):
        raise AssertionError("alignment ran before the options were checked")

    monkeypatch.setattr(napari_aet.align, "align_auto", fail)
    series = simulate_tilt_series(fcc_particle(radius=5.0), np.linspace(-60, 60, 9), shape=(32, 32)).tilt_series
    write_tilt_series(tmp_path / "s.tif", series)
    assert main(["run", str(tmp_path / "s.tif"), "--pixel-size", "0.4", "--elements", "Pt", "--iterations", "0",
                 "--out", str(tmp_path / "out")]) == 2
    assert "iterations must be a whole number of 1 or more, got 0" in capsys.readouterr().err


def test_a_projection_of_nan_can_be_left_out(tmp_path, capsys):
    series = simulate_tilt_series(fcc_particle(radius=5.0), np.linspace(-60, 60, 9), shape=(32, 32)).tilt_series
    data = series.projections.copy()
    data[3] = np.nan  # a corrupt frame
    np.save(tmp_path / "s.npy", data)
    np.savetxt(tmp_path / "s.tlt", series.angles)
    common = ["run", str(tmp_path / "s.npy"), "--pixel-size", "0.4", "--elements", "Pt", "--no-align", "--no-refine",
              "--iterations", "3"]
    assert main([*common, "--out", str(tmp_path / "a")]) == 2
    assert "NaN or Inf values, in projections 3" in capsys.readouterr().err
    assert main([*common, "--exclude", "3", "--out", str(tmp_path / "b")]) == 0
    assert "Left out projections 3; 8 remain" in capsys.readouterr().out


def test_a_placeholder_pixel_size_in_an_mrc_header_is_named_in_the_summary(simulated, tmp_path, capsys):
    """An MRC header's 1 Å (what many programs write when the pixel size is unset) is used with a
    warning kept in the summary and the report; a pixel size given on the command line wins, and
    the summary says what the file held."""
    import mrcfile

    with mrcfile.new(tmp_path / "s.mrc") as mrc:
        mrc.set_data(tifffile.imread(simulated / "tilt_series.tif").astype(np.float32))
        mrc.voxel_size = 1.0
    (tmp_path / "s.tlt").write_text((simulated / "tilt_series.tlt").read_text())
    quick = ["--elements", "Fe,Pt", "--no-align", "--no-refine", "--iterations", "5"]
    with pytest.warns(UserWarning, match="gives 1 Å per pixel"):
        assert main(["run", str(tmp_path / "s.mrc"), *quick, "--out", str(tmp_path / "header")]) == 0
    summary = (tmp_path / "header" / "summary.txt").read_text()
    assert "pixel size 1 Å from file metadata\n" in summary
    assert "Warning: s.mrc: the MRC header gives 1 Å per pixel" in summary and "(--pixel-size)" in summary
    report = json.loads((tmp_path / "header" / "report.json").read_text())
    assert report["input"]["file_pixel_size_A"] == 1.0 and "pixel_size_warning" in report["input"]
    from napari_aet.runs import summary_text  # an R-free that rose again is named with its lowest point

    report["reconstruction"]["errors_per_iteration"]["r_free"] = [0.5, 0.3, 0.4]
    assert "final R-free" in summary_text(report) and "R-free lowest 0.300 at iteration 2 of 3" in summary_text(report)
    report["reconstruction"]["errors_per_iteration"]["r_free"] = [0.5, 0.4, 0.39]
    assert "R-free lowest" not in summary_text(report)
    assert main(["run", str(tmp_path / "s.mrc"), *quick, "--pixel-size", "0.4", "--out", str(tmp_path / "given")]) == 0
    summary = (tmp_path / "given" / "summary.txt").read_text()
    assert "pixel size 0.4 Å from --pixel-size (the file says 1 Å)" in summary and "Warning: s.mrc" not in summary
