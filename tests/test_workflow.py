"""The workflow: one stage on one time point, status and staleness, hand edits protected."""

import copy

import h5py
import numpy as np
import pytest
from scipy.spatial import cKDTree

from napari_aet import workflow
from napari_aet import edit
from napari_aet.edit import relabel
from napari_aet.undo import history_of
from napari_aet.align import align_auto
from napari_aet.model import InputError, Reconstruction, TiltSeries
from napari_aet.pipeline import run_pipeline
from napari_aet.project import Project, TimePoint, load_project, save_project
from napari_aet.simulate import fcc_particle, simulate_tilt_series


@pytest.fixture(scope="module")
def series():
    """A 55-atom FePt particle, 31 tilts over ±70°, 48² pixels of 0.4 Å, shifted up to 2 px."""
    atoms = fcc_particle(radius=6.0, seed=2)
    return simulate_tilt_series(atoms, np.linspace(-70, 70, 31), shape=(48, 48), max_shift=2, seed=2).tilt_series


@pytest.fixture(scope="module")
def traced(series):
    point = TimePoint("t0", raw=series)
    workflow.run_stage(point, "align", tilt_axis=0.0, projection_matching=False)
    workflow.run_stage(point, "reconstruct", method="resire", n_iterations=20)
    workflow.run_stage(point, "trace")
    return point


@pytest.fixture
def point(traced):
    """A time point aligned, reconstructed and traced (a fresh copy per test)."""
    return copy.deepcopy(traced)


def test_stages_run_in_order_and_record_status(point):
    assert workflow.status(point) == {"align": "done", "reconstruct": "done", "trace": "done",
                                      "classify": "not run", "refine": "not run", "analyse": "not run"}
    atoms = workflow.run_stage(point, "classify", "Fe,Pt", seed=0)
    assert point.atoms is atoms and set(atoms.species) <= {"", "Fe", "Pt"}
    record = point.stages["classify"]
    assert record["parameters"]["elements"] == ["Fe", "Pt"] and record["provenance"]["seconds"] >= 0
    assert point.stages["reconstruct"]["parameters"]["n_iterations"] == 20


def test_an_earlier_stage_makes_later_ones_stale_and_they_refuse(point):
    workflow.run_stage(point, "reconstruct", method="wbp")
    assert workflow.status(point)["trace"] == "stale"
    with pytest.raises(InputError, match="trace result of 't0' is stale"):
        workflow.run_stage(point, "classify", "Fe,Pt")
    workflow.run_stage(point, "trace")
    assert workflow.status(point)["trace"] == "done"


def test_a_stage_needs_its_input(series):
    point = TimePoint("t0", raw=series)
    with pytest.raises(InputError, match="run reconstruct on 't0' first"):
        workflow.run_stage(point, "trace")
    with pytest.raises(InputError, match="unknown stage"):
        workflow.run_stage(point, "polish")
    # a file without a pixel size opens in napari with a 1 Å placeholder: no stage runs on it
    placeholder = TimePoint("t0", raw=series.replace(metadata={**series.metadata, "pixel_size_unknown": True}))
    with pytest.raises(InputError, match="align 't0': the pixel size is unknown .* the Data step's field"):
        workflow.run_stage(placeholder, "align")
    assert placeholder.aligned is None


def test_the_study_route_checks_a_series_as_run_pipeline_does(series):
    """A series made in Python without its pixel size, with a pixel size in nm, with 5 projections or
    with angles in radians: refused by the first stage that reads it, as run_pipeline and the CLI do
    (they ran on: 1 Å gave 270 "atoms" for 201, 0.04 Å died of a MemoryError after 9.9 GB)."""
    pixels, angles = series.projections, series.angles
    wrong = {"pixel size unknown": (TiltSeries(pixels, angles), "the pixel size is unknown"),
             "nm for Å": (series.replace(pixel_size=0.04), "is the pixel size in Å"),
             "5 projections": (series.subset(np.arange(5)), "the chain needs at least 8"),
             "radians": (series.replace(angles=np.radians(angles)), "are they in radians")}
    for what, (bad, message) in wrong.items():
        for stage in ("align", "reconstruct"):
            point = TimePoint("t0", raw=bad)
            with pytest.raises(InputError, match=message):
                workflow.run_stage(point, stage)
            assert point.aligned is None and point.reconstruction is None, what
        with pytest.raises(InputError, match=message):
            run_pipeline(bad, "Fe,Pt")
        given_aligned = TimePoint("t0", aligned=bad)  # an aligned series entered as such is checked too
        with pytest.raises(InputError, match=message):
            workflow.run_stage(given_aligned, "reconstruct")
    euler = np.column_stack([np.zeros_like(angles), np.radians(angles), np.zeros_like(angles)])
    with pytest.raises(InputError, match="are they in radians"):
        workflow.run_stage(TimePoint("t0", raw=series.replace(angles=euler)), "reconstruct")
    with pytest.raises(InputError, match="are they in radians"):
        align_auto(series.replace(angles=np.radians(angles)))
    known = TiltSeries(pixels, angles).replace(pixel_size=0.4)  # a placeholder corrected
    assert "pixel_size_unknown" not in known.metadata


def test_what_the_study_route_refuses_or_records_later(point, tmp_path):
    """Tracing at a voxel size in the wrong unit, classifying without elements, a deletion not
    named, a positional align method, pair keys of a minimum distance (a re-audit of the API)."""
    for voxel in (0.05, 3.0):  # 2.0 Å is 40 or 0.67 voxels: nm or pm typed for Å
        wrong = TimePoint("t0", reconstruction=Reconstruction(point.reconstruction.volume, voxel))
        workflow.adopt(wrong, "reconstruct", wrong.reconstruction, "a file")
        with pytest.raises(InputError, match="is the pixel size in Å"):
            workflow.run_stage(wrong, "trace")
    with pytest.raises(InputError, match="which elements"):
        workflow.run_stage(point, "classify")
    workflow.run_stage(point, "classify", "Fe,Pt")
    with pytest.raises(InputError, match="pass the deleted atoms' indices"):
        workflow.edit_atoms(point, edit.delete(point.atoms, [3]))
    with pytest.raises(InputError, match="distinct indices"):
        edit.delete(point.atoms, [len(point.atoms)])
    aligned = TimePoint("t1", raw=point.raw)
    workflow.run_stage(aligned, "align", "cross-correlation")
    assert aligned.stages["align"]["parameters"]["method"] == "cross-correlation"
    assert "projection_matching" not in aligned.stages["align"]["parameters"]  # align_auto's: not used
    workflow.run_stage(point, "trace", min_distance={("Fe", "Pt"): 2.3}, replace_edits=True)
    assert point.stages["trace"]["parameters"]["min_distance_given"] == {"Fe-Pt": 2.3}
    save_project(tmp_path / "study.aet", Project([point]))  # JSON keys: text


def test_hand_edits_from_python_are_logged_kept_and_undoable(point):
    """Move, delete, add and relabel through the API, as the napari editor edits: logged, undoable,
    and kept from a new tracing (a deletion made with AtomModel.subset was lost to it)."""
    workflow.run_stage(point, "classify", "Fe,Pt", seed=0)
    workflow.run_stage(point, "analyse")
    start = point.atoms
    target = start.positions[0] + [0.3, 0.0, 0.0]
    steps = [(edit.move(start, [0], [target]), (), "move"),
             (lambda: edit.delete(point.atoms, [1]), [1], "delete"),
             (lambda: edit.add(point.atoms, [start.positions[1]], point.reconstruction), (), "add"),
             (lambda: edit.relabel(point.atoms, [2], "Pt" if point.atoms.species[2] == "Fe" else "Fe"), (), "relabel")]
    for after, removed, action in steps:
        label_before = point.atoms.species[2]
        entries = workflow.edit_atoms(point, after() if callable(after) else after, removed)
        assert [e["action"] for e in entries] == [action] and point.edits[-1]["action"] == action
    assert len(point.atoms) == len(start) and point.atoms.features["placed"][-1]
    assert workflow.status(point)["analyse"] == "stale"  # made from the atoms before the edits
    np.testing.assert_allclose(point.atoms.positions[0], target)
    assert point.atoms.features["locked"][0] and point.atoms.species[-1] in ("Fe", "Pt")  # labelled on adding
    with pytest.raises(InputError, match="hold hand edits"):
        workflow.run_stage(point, "trace")
    atoms, entry = history_of(point).undo(point.atoms)  # the relabel undone
    assert entry["entries"][0]["action"] == "relabel" and atoms.species[2] == label_before
    assert workflow.edit_atoms(point, point.atoms) == []  # nothing changed: nothing logged


def test_tracing_again_never_silently_replaces_hand_edits(point):
    point.atoms = relabel(point.atoms, [0], "Pt")
    with pytest.raises(InputError, match="hold hand edits"):
        workflow.run_stage(point, "trace")
    workflow.run_stage(point, "trace", replace_edits=True)
    assert point.edits[-1]["action"] == "replace"
    assert not workflow.has_hand_edits(point)


def test_study_round_trip_keeps_stages_and_time(point, series, tmp_path):
    point.time = 16.0
    save_project(tmp_path / "study.aet", Project([point, TimePoint("26 min", raw=series, time=26.0)]))
    first, second = load_project(tmp_path / "study.aet").time_points
    assert first.stages == point.stages and first.time == 16.0
    assert workflow.status(second)["align"] == "not run" and second.time == 26.0


def test_version_1_files_read_with_their_results_done(point, tmp_path):
    path = save_project(tmp_path / "old.aet", Project([point]))
    with h5py.File(path, "r+") as handle:  # what a version-1 writer left: no stages, no time
        handle.attrs["format_version"] = 1
        for name in ("stages", "time"):
            del handle["time_points/0000"].attrs[name]
    (old,) = load_project(path).time_points
    assert workflow.status(old) == {"align": "done", "reconstruct": "done", "trace": "done",
                                    "classify": "not run", "refine": "not run", "analyse": "not run"}
    assert old.time is None


def test_analyse_reads_the_current_atoms_and_is_saved(point, tmp_path):
    workflow.run_stage(point, "classify", "Fe,Pt")
    analysis = workflow.run_stage(point, "analyse", min_nucleus=5)
    real = np.count_nonzero(~point.atoms.features["non_atom"].astype(bool))
    assert len(point.analysis) == real == point.report["analysis"]["n_atoms"]
    assert {"phase", "order_L10", "nucleus", "displacement"} <= set(point.analysis.features)
    assert analysis.lattice.kind == "fcc" and 3.5 < analysis.lattice.constant < 4.2  # FePt: a = 3.85 Å
    save_project(tmp_path / "a.aet", Project([point]))
    (back,) = load_project(tmp_path / "a.aet").time_points
    np.testing.assert_array_equal(back.analysis.features["phase"], point.analysis.features["phase"])
    workflow.run_stage(point, "classify", "Fe,Pt", seed=1)
    assert workflow.status(point)["analyse"] == "stale"


def test_classify_warns_when_the_elements_do_not_match(point):
    workflow.run_stage(point, "classify", "Fe,Pt,Au")
    assert any("Pt and Au" in w for w in point.report["classify_warnings"])


def test_the_study_keeps_the_alignment_report_as_plain_records(series, tmp_path):
    """align returns a typed report; the study (and so the .aet file) keeps its record, the
    string-keyed dicts that version-1 files hold too."""
    point = TimePoint("t0", raw=series)
    automatic = workflow.align(point, tilt_axis=0.0, projection_matching=False, check=False).report
    assert automatic.tilt_axis.given == 0.0 and automatic.projection_matching == [] and automatic.check is None
    assert point.report["alignment"]["tilt_axis"]["used"] == automatic.tilt_axis.used
    assert "check" not in point.report["alignment"] and "reprojection" not in point.report["alignment"]["tilt_axis"]
    single = workflow.align(point, "cross-correlation").report
    assert single.tilt_axis is None and set(point.report["alignment"]) == {"angles", "shifts"}
    save_project(tmp_path / "study.aet", Project([point]))
    loaded = load_project(tmp_path / "study.aet").time_points[0].report["alignment"]
    np.testing.assert_allclose(loaded["shifts"]["cross-correlation"], single.shifts["cross-correlation"])
    assert loaded["angles"] == single.angles


def test_a_minimum_distance_given_to_the_tracing_holds_for_the_refinement(point):
    point.parameters["elements"] = ["Fe", "Pt"]
    far = {"Fe-Fe": 3.0, "Fe-Pt": 3.0, "Pt-Pt": 3.0}
    workflow.run_stage(point, "trace", min_distance=far)
    assert point.stages["trace"]["parameters"]["min_distance"] == 3.0  # the table's shortest, for tracing
    assert point.stages["trace"]["parameters"]["min_distance_given"] == far
    workflow.run_stage(point, "classify", "Fe,Pt")
    workflow.run_stage(point, "refine", complete_rounds=1, precision=False)
    assert point.stages["refine"]["parameters"]["min_distance"] == far
    real = point.atoms.positions[point.atoms.species != ""]
    assert cKDTree(real).query(real, k=2)[0][:, 1].min() >= 3.0 - 1e-6

    workflow.run_stage(point, "trace")  # the physical table again, for both stages
    workflow.run_stage(point, "classify", "Fe,Pt")
    workflow.run_stage(point, "refine", complete_rounds=1, precision=False)
    assert point.stages["refine"]["parameters"]["min_distance"] is None  # refine_atoms' default: the table
    real = point.atoms.positions[point.atoms.species != ""]
    assert cKDTree(real).query(real, k=2)[0][:, 1].min() < 2.9


def test_normalising_undoes_a_drifting_beam_current(series):
    """Projections scaled by up to ±25% (a drifting beam current) reconstruct, once normalised,
    as the steady ones do (the same volume but for one overall scale); left as they are, worse."""
    drift = np.random.default_rng(4).uniform(0.75, 1.25, series.n_angles)
    runs = {}
    for name, scale, normalise in (("steady", np.ones(series.n_angles), True), ("drifting", drift, False),
                                   ("normalised", drift, True)):
        point = TimePoint("t0", raw=series.replace(projections=series.projections * scale[:, None, None],
                                                   shifts=np.zeros((series.n_angles, 2))))
        runs[name] = workflow.run_stage(point, "reconstruct", method="resire", n_iterations=20, normalise=normalise)
    steady, drifting, normalised = runs["steady"], runs["drifting"], runs["normalised"]
    factors = np.asarray(normalised.metadata["normalisation"]["factors"])
    undone = factors * drift / np.asarray(steady.metadata["normalisation"]["factors"])
    assert np.ptp(undone) < 1e-4 * undone.mean()  # the factors undo the drift exactly
    assert "normalisation" not in drifting.metadata
    ratio = normalised.volume.sum() / steady.volume.sum()
    np.testing.assert_allclose(normalised.volume, ratio * steady.volume, atol=1e-3 * np.abs(steady.volume).max())
    assert normalised.errors["r_factor"][-1] < drifting.errors["r_factor"][-1]


def test_the_refinement_removes_the_background_the_reconstruction_removed(series):
    level = 30.0  # a detector offset, counts per pixel
    point = TimePoint("t0", raw=series.replace(projections=series.projections + level,
                                               shifts=np.zeros((series.n_angles, 2))),
                      parameters={"elements": ["Fe", "Pt"]})
    workflow.run_stage(point, "reconstruct", method="resire", n_iterations=20, background="smooth")
    assert point.reconstruction.metadata["background"]["mean_level"] == pytest.approx(level, rel=0.05)
    workflow.run_stage(point, "trace")
    workflow.run_stage(point, "classify", "Fe,Pt")
    workflow.run_stage(point, "refine", complete_rounds=1, precision=False)
    assert point.stages["refine"]["parameters"]["background"] == "smooth"  # the reconstruction's
    fitted = workflow.refined_series(point)  # what the model projections are compared with
    removed = np.mean(workflow.tilt_series_of(point).projections) - np.mean(fitted.projections)
    assert removed == pytest.approx(level, rel=0.05)
    with pytest.raises(InputError, match="background 'smoth' is unknown"):
        workflow.run_stage(point, "reconstruct", method="resire", n_iterations=2, background="smoth")
    assert np.count_nonzero(point.atoms.species != "") < 1.3 * np.count_nonzero(point.traced.species != "")


def test_the_readmes_study_gives_the_atoms_run_pipeline_gives(series):
    """The README's workflow example and run_pipeline on the same series: the same atoms, so the
    study's defaults are the chain's (they differed: a 2.0 Å tracing distance, spikes kept, no
    background removed)."""
    point = TimePoint("9 min", raw=series, time=9.0, parameters={"elements": "Fe,Pt"})
    for stage in ("align", "reconstruct", "trace", "classify", "refine"):
        workflow.run_stage(point, stage, **({"n_iterations": 40} if stage == "reconstruct" else {}))
    chain = run_pipeline(series, "Fe,Pt", reconstruct_options={"n_iterations": 40})
    np.testing.assert_array_equal(point.atoms.positions, chain.atoms.positions)
    np.testing.assert_array_equal(point.atoms.species, chain.atoms.species)
    used = point.stages["trace"]["parameters"]
    assert used["min_distance"] == pytest.approx(2.108, abs=0.01) and "threshold" in used  # defaults recorded
