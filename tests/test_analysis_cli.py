"""``napari-aet analyze`` and ``napari-aet track``: the file contract other tools script against."""

import json

import numpy as np
import pandas as pd
import pytest

from napari_aet.analysis.outputs import analyze_to_directory, track_to_directory
from napari_aet.cli import main
from napari_aet.io import read_volume, write_atoms
from napari_aet.model import InputError
from napari_aet.simulate import amorphous_slab
from napari_aet.simulate_alloy import annealing_series
from cli_output import error_line

ATOM_COLUMNS = ["phase", "variant", "order_L10", "order_L12", "nucleus", "antisite", "displacement"]


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    root = tmp_path_factory.mktemp("anneal")
    outputs = []
    for t, atoms in enumerate(annealing_series(n_times=2, seed=1)):
        write_atoms(root / f"atoms{t}.csv", atoms)
        assert main(["analyze", str(root / f"atoms{t}.csv"), "--out", str(root / f"t{t}")]) == 0
        outputs.append(root / f"t{t}")
    return root, outputs


def test_analyze_writes_the_contract(analysed):
    root, (out, _) = analysed
    table = pd.read_csv(out / "atoms.csv", keep_default_na=False)
    source = pd.read_csv(root / "atoms0.csv", keep_default_na=False)
    columns = list(table.columns)
    assert columns[:len(source.columns)] == list(source.columns)
    assert columns[len(source.columns):len(source.columns) + len(ATOM_COLUMNS)] == ATOM_COLUMNS
    assert set(table["phase"]) == {"A1", "L10", "L12"} and table["order_L10"].between(0, 1).all()
    nuclei = pd.read_csv(out / "nuclei.csv")
    assert list(nuclei.columns[:8]) == ["nucleus", "phase", "variant", "n_atoms", "x", "y", "z", "max_order"]
    assert sorted(nuclei["nucleus"]) == sorted(set(table["nucleus"]) - {-1})
    structure = json.loads((out / "structure.json").read_text())
    assert structure["lattice"]["lattice_constant_A"] == pytest.approx(3.85, abs=0.01)
    assert len(structure["pdf"]["r_A"]) == len(structure["pdf"]["g"]) and "Q6" in structure
    assert read_volume(out / "strain_xy.mrc").volume.ndim == 3 and (out / "order.mrc").is_file()
    assert not list(out.glob(".partial-*"))


def test_track_writes_the_contract(analysed, tmp_path, capsys):
    _, outputs = analysed
    assert main(["track", *map(str, outputs), "--out", str(tmp_path), "--times", "0, 30"]) == 0
    tracks = pd.read_csv(tmp_path / "tracks.csv")
    assert list(tracks.columns) == ["time", "index", "track", "element", "x", "y", "z", "appeared", "vanishes"]
    assert set(tracks.time) == {0, 30}  # the labels given
    for t, out in zip((0, 30), outputs):
        rows, atoms = tracks[tracks.time == t], pd.read_csv(out / "atoms.csv")
        assert list(rows["index"]) == list(range(len(atoms))) and list(rows["element"]) == list(atoms["element"])
    transforms = json.loads((tmp_path / "transforms.json").read_text())
    assert len(transforms) == 2 and transforms[0]["residual_A"] == 0 and transforms[1]["residual_A"] < 0.2
    assert np.allclose(np.linalg.det(transforms[1]["rotation"]), 1) and transforms[1]["time"] == "30"
    # x, y, z are registered onto the first time: a site kept from 0 to 30 min has not moved
    registered = tracks.pivot_table(index="track", columns="time", values=["x", "y", "z"]).dropna()
    moved = np.sqrt(sum((registered[(c, 30)] - registered[(c, 0)]) ** 2 for c in "xyz"))
    raw = pd.read_csv(outputs[1] / "atoms.csv")[["x", "y", "z"]].to_numpy()
    rotation, translation = np.array(transforms[1]["rotation"]), np.array(transforms[1]["translation_A"])
    assert np.allclose(tracks[tracks.time == 30][["x", "y", "z"]], raw @ rotation.T + translation)
    assert np.median(moved) < 0.2
    nuclei = pd.read_csv(tmp_path / "nuclei_tracks.csv")
    assert list(nuclei.columns) == ["time", "nucleus_track", "nucleus", "n_atoms", "event", "mean_order"]
    assert nuclei[nuclei.nucleus >= 0].mean_order.between(0.3, 1).all()
    assert set(nuclei[nuclei.time == 0].event) == {"present"}
    assert set(nuclei[nuclei.time == 30].event) == {"grew", "shrank", "stable", "appeared"}
    assert "residuals" in capsys.readouterr().out


def test_track_accepts_atoms_files_and_the_functions_return_summaries(analysed, tmp_path):
    root, _ = analysed
    summary = track_to_directory([root / "atoms0.csv", root / "atoms1.csv"], tmp_path)
    assert summary["n_times"] == 2 and summary["events"]["appeared"] == 1


def test_analyze_leaves_out_rows_flagged_non_atom(analysed, tmp_path):
    """A study's atoms written with io.write_atoms keep their non-atoms (flagged); analyze counts
    the atoms only, as the Analyse step does (it counted 503 for 356 atoms)."""
    from napari_aet.io import read_atoms

    root, (out, _) = analysed
    atoms = read_atoms(root / "atoms0.csv")
    noise = atoms.positions[:40] + [[0.3, 1.4, 0.9]]  # peaks between the atoms
    flagged = type(atoms)(np.vstack([atoms.positions, noise]), np.concatenate([atoms.species, [""] * 40]).astype(object),
                          {"non_atom": np.arange(len(atoms) + 40) >= len(atoms)})
    write_atoms(tmp_path / "study_atoms.csv", flagged)
    assert main(["analyze", str(tmp_path / "study_atoms.csv"), "--out", str(tmp_path / "a")]) == 0
    assert len(pd.read_csv(tmp_path / "a" / "atoms.csv")) == len(atoms)
    reference = json.loads((out / "structure.json").read_text())["lattice"]["lattice_constant_A"]
    assert json.loads((tmp_path / "a" / "structure.json").read_text())["lattice"]["lattice_constant_A"] == \
        pytest.approx(reference, abs=1e-6)


def test_analyze_and_track_read_a_study_with_its_hand_edits(analysed, tmp_path, capsys):
    """A study edited in napari is analysed and tracked as it stands (the edits included), without
    exporting tables first."""
    from napari_aet.atom_labels import NON_ATOM
    from napari_aet.edit import relabel
    from napari_aet.io import read_atoms
    from napari_aet.project import Project, TimePoint, save_project

    root, _ = analysed
    first, second = read_atoms(root / "atoms0.csv"), read_atoms(root / "atoms1.csv")
    edited = relabel(second, [0, 1], NON_ATOM)  # two atoms marked non-atoms by hand
    save_project(tmp_path / "study.aet", Project([TimePoint("0", atoms=first), TimePoint("30", atoms=edited)]))
    assert main(["analyze", str(tmp_path / "study.aet"), "--out", str(tmp_path / "a")]) == 2
    assert "study.aet holds atoms at time point(s) 0, 30: choose one with --time" in error_line(capsys)
    assert main(["analyze", str(tmp_path / "study.aet"), "--time", "30.0", "--out", str(tmp_path / "a")]) == 0
    assert len(pd.read_csv(tmp_path / "a" / "atoms.csv")) == len(second) - 2
    (tmp_path / "run").mkdir()  # a run directory is never overwritten by an analysis
    (tmp_path / "run" / "report.json").write_text("{}")
    assert main(["analyze", str(tmp_path / "study.aet"), "--time", "0", "--out", str(tmp_path / "run")]) == 2
    assert "holds a run's results (report.json): the analysis would replace its atoms.csv" in error_line(capsys)
    assert not (tmp_path / "run" / "atoms.csv").exists()
    assert main(["track", str(tmp_path / "study.aet"), "--out", str(tmp_path / "t")]) == 0
    tracks = pd.read_csv(tmp_path / "t" / "tracks.csv")
    assert set(tracks.time) == {0, 30} and len(tracks[tracks.time == 30]) == len(second) - 2


@pytest.mark.parametrize("args, message", [
    (["track", "ONE", "--out", "OUT"], "at least two time points"),
    (["track", "ONE", "TWO", "--times", "0,0", "--out", "OUT"], "time labels 0, 0 for 2 time points: give one"),
    (["track", "ONE", "TWO", "--times", "0", "--out", "OUT"], "time labels 0 for 2 time points"),
    (["analyze", "NOELEMENT", "--out", "OUT"], "no element column"),
    (["analyze", "MISSING", "--out", "OUT"], "does not exist"),
    (["analyze", "RANDOM", "--out", "OUT", "--lattice", "fcc"], 'does not fit these atoms: only'),
    (["analyze", "RANDOM", "--out", "OUT", "--lattice", "bcc"], 'lattice "none" for an amorphous sample'),
])
def test_bad_input_is_one_line_and_status_2(analysed, tmp_path, capsys, args, message):
    _, outputs = analysed
    pd.DataFrame({"x": [0.0, 1], "y": [0.0, 1], "z": [0.0, 1]}).to_csv(tmp_path / "noelement.csv", index=False)
    rng = np.random.default_rng(0)
    pd.DataFrame({**dict(zip("xyz", rng.uniform(-12, 12, (3, 600)))), "element": "Pt"}).to_csv(
        tmp_path / "random.csv", index=False)
    names = {"ONE": str(outputs[0]), "TWO": str(outputs[1]), "NOELEMENT": str(tmp_path / "noelement.csv"),
             "MISSING": str(tmp_path / "missing.csv"), "RANDOM": str(tmp_path / "random.csv"),
             "OUT": str(tmp_path / "out")}
    assert main([names.get(a, a) for a in args]) == 2
    assert message in error_line(capsys)


def test_one_element_still_writes_the_structure(analysed, tmp_path, capsys):
    root, _ = analysed
    atoms = pd.read_csv(root / "atoms0.csv")
    atoms["element"] = "Pt"
    atoms.to_csv(tmp_path / "pt.csv", index=False)
    assert main(["analyze", str(tmp_path / "pt.csv"), "--out", str(tmp_path / "out")]) == 2
    assert "exactly two elements" in capsys.readouterr().err
    assert (tmp_path / "out" / "structure.json").is_file()
    table = pd.read_csv(tmp_path / "out" / "atoms.csv")
    assert (table["nucleus"] == -1).all() and table["order_L10"].isna().all()


def test_min_nucleus_is_checked(tmp_path):
    with pytest.raises(InputError, match="at least 1"):
        analyze_to_directory(tmp_path / "x.csv", tmp_path, min_nucleus=0)


def test_analyze_without_a_lattice_writes_the_structure_and_says_what_was_skipped(tmp_path, capsys):
    write_atoms(tmp_path / "film.csv", amorphous_slab(elements=("Ta",), seed=0))
    out = tmp_path / "none"
    assert main(["analyze", str(tmp_path / "film.csv"), "--out", str(out), "--lattice", "none"]) == 0
    printed = capsys.readouterr().out
    assert "no lattice (amorphous)" in printed and "skipped: lattice fit, chemical order, nuclei, strain" in printed
    assert sorted(p.name for p in out.iterdir()) == ["atoms.csv", "structure.json"]
    table = pd.read_csv(out / "atoms.csv")
    assert list(table.columns) == [*pd.read_csv(tmp_path / "film.csv").columns, "coordination", "Q4", "Q6"]
    structure = json.loads((out / "structure.json").read_text())
    assert structure["lattice"] is None and structure["parameters"]["lattice"] == "none"
    assert 2.4 <= structure["first_peak_A"] <= 2.7 and structure["neighbour_cutoff_A"] > 3
    summary = structure["summary"]
    assert summary["ran"] == ["pair distribution", "coordination", "Q4/Q6"]
    assert summary["skipped"]["chemical order"] == "needs a lattice: no lattice chosen (amorphous)"

    auto = tmp_path / "auto"  # no --lattice: neither fits, analysed as amorphous, and said so
    assert main(["analyze", str(tmp_path / "film.csv"), "--out", str(auto)]) == 0
    assert "lattice auto: no lattice fits" in capsys.readouterr().out
    assert json.loads((auto / "structure.json").read_text())["summary"]["lattice"] == "none"
    assert main(["track", str(out), str(auto), "--out", str(tmp_path / "tracks")]) == 2
    assert "analysed without a lattice (amorphous)" in error_line(capsys)
