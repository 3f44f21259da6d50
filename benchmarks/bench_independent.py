"""`napari-aet run` on tilt series from an independent simulator (``independent_sim.py``), scored
against the truth: the 17 cases of the independent audit, rebuilt with its seeds and parameters.

    python benchmarks/bench_independent.py --out DIR [--cases c1_baseline,c9_31tilts]

Every case is 112 × 112 px of 0.38 Å, FePt L1₀ (radius 14.5 Å, 896 atoms, centroid ~1 Å off the
rotation centre), 61 tilts over ±70°, 300 counts per Pt atom per projection, unless its name says
otherwise (c2: ±4 px shifts, tilt axis 4°, axis 3 px off centre; c3: 0…177°; c4: 100 counts; c5: an
amorphous Pt film wider than the field, run with ``--elements Pt``; c6: acquisition orders; c7:
disordered FePt; c8a–e: probe tails, 0.4° angle errors, ±15 % beam current, channelling-like
attenuation, all four; c9: 31 tilts over ±60°; c10: tilt axis along image x). Data go to DIR/data,
runs to DIR/out/NAME (log in DIR/out/NAME.log), results to DIR/results.json; a Markdown table is
printed at the end.

Each case runs ``napari-aet run DATA.tif --angles ANGLES --pixel-size 0.38 --elements Fe,Pt
--out DIR/out/NAME --force`` as a user would, timed (wall, CPU, peak RSS of the process). Score:
mutual nearest neighbours within 1 Å, (i) in the output frame as written and (ii) after the best
of the 48 axis permutations / sign flips with a fitted translation (the matrix and the translation
added to the output are reported: "I" means no change of axes). RMS in pm, per element too;
species = matched pairs with the right element. The film counts only atoms (truth and output)
with |x|, |y| ≤ 20.9 Å, inside the field of view. Beside it, the tool's own half-set precision
(report.json) and its alignment decision (summary.txt). Run under ``nice`` on a shared machine.
"""

import argparse
import itertools
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from independent_sim import amorphous_slab, fept_particle, project, save_case

PIXEL = 0.38  # Å
SHAPE = (112, 112)  # px
TOL = 1.0  # Å: largest distance of a matched pair
FILM_BOX = 20.9  # Å: the film is scored inside |x|, |y| <= FILM_BOX (the field is ±21.3 Å)
CASES = ("c1_baseline", "c2_misaligned", "c3_halfturn", "c4_lowdose", "c5_film", "c6a_dosesym", "c6a_sorted",
         "c6b_descending", "c7_disordered", "c8a_tails", "c8b_angerr", "c8c_current", "c8d_channel", "c8e_all",
         "c9_31tilts", "c10a_axis+90", "c10b_axis-90")


def build(name):
    """Case ``name``: tilt series, angles written to the file (°), truth positions (Å) and species."""
    if name == "c6a_sorted":  # c6a's very images (same noise), sorted by angle
        series, ang, pos, sp = build("c6a_dosesym")
        o = np.argsort(ang)
        return series[o], ang[o], pos, sp
    if name == "c5_film":
        pos, sp = amorphous_slab(xhalf=80.0, yhalf=26.0, thickness=12.0, seed=3)
        pos = pos + np.array([0.3, -0.2, 0.4])
    elif name == "c7_disordered":
        pos, sp = fept_particle(radius=14.5, seed=7, order="disordered")
    else:
        pos, sp = fept_particle(radius=14.5, seed=1)
    a61 = np.linspace(-70, 70, 61)
    rng = np.random.default_rng(88)
    angle_errors, current = rng.normal(0, 0.4, 61), rng.uniform(0.85, 1.15, 61)  # c8: ° and ×
    shifts = np.random.default_rng(22).uniform(-4, 4, size=(61, 2))  # c2: (dy, dx) px
    axis_offset = 3.0 * np.array([np.cos(np.deg2rad(4.0)), -np.sin(np.deg2rad(4.0))])  # c2: (dx, dy) px
    dose_symmetric = a61[[30] + [30 + s * k for k in range(1, 31) for s in (1, -1)]]
    angles, true_angles, kw = {  # name: (angles in the file, true angles (None: the same), project keywords)
        "c1_baseline": (a61, None, dict(seed=11)),
        "c2_misaligned": (a61, None, dict(seed=12, tilt_axis=4.0, axis_offset=axis_offset, shifts=shifts)),
        "c3_halfturn": (np.arange(60) * 3.0, None, dict(seed=13)),
        "c4_lowdose": (a61, None, dict(seed=14, dose=100)),
        "c5_film": (a61, None, dict(seed=15)),
        "c6a_dosesym": (dose_symmetric, None, dict(seed=16)),
        "c6b_descending": (a61[::-1], None, dict(seed=17)),
        "c7_disordered": (a61, None, dict(seed=71)),
        "c8a_tails": (a61, None, dict(seed=80, tail=(0.25, 1.2))),
        "c8b_angerr": (a61, a61 + angle_errors, dict(seed=81)),
        "c8c_current": (a61, None, dict(seed=82, scale=current)),
        "c8d_channel": (a61, None, dict(seed=83, atten=0.04)),
        "c8e_all": (a61, a61 + angle_errors, dict(seed=84, tail=(0.25, 1.2), scale=current, atten=0.04)),
        "c9_31tilts": (np.linspace(-60, 60, 31), None, dict(seed=90)),
        "c10a_axis+90": (a61, None, dict(seed=101, tilt_axis=90.0)),
        "c10b_axis-90": (a61, None, dict(seed=102, tilt_axis=-90.0)),
    }[name]
    series = project(pos, sp, angles if true_angles is None else true_angles, SHAPE, PIXEL, **{"dose": 300, **kw})
    return series, angles, pos, sp


def mutual(a, b, tol):
    """Indices (i into a, j into b) of mutual nearest neighbours closer than ``tol`` Å."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    da, ia = cKDTree(b).query(a)
    _, ib = cKDTree(a).query(b)
    idx = np.arange(len(a))
    m = (ib[ia] == idx) & (da <= tol)
    return idx[m], ia[m]


def metrics(T, Ts, O, Os, tol=TOL):
    """Recall, precision, RMS (pm; all and per element) and species accuracy of output O against truth T."""
    i, j = mutual(T, O, tol)
    d = O[j] - T[i]
    rms = lambda m: float(np.sqrt((d[m] ** 2).sum(1).mean()) * 100) if m.any() else None
    out = dict(n_true=len(T), n_out=len(O), recall=len(i) / max(1, len(T)), precision=len(j) / max(1, len(O)),
               rms_pm=rms(np.ones(len(i), bool)), species=float((Ts[i] == Os[j]).mean()) if len(i) else None)
    out.update({f"rms_pm_{e}": rms(Ts[i] == e) for e in sorted(set(Ts))})
    return out


def fit_translation(T, O, tol=TOL):
    """Translation (Å) to add to O that brings it onto T, by matching with shrinking radii."""
    t = T.mean(0) - O.mean(0)
    for r in [3.0, 2.0, 1.5, tol, tol, tol]:
        i, j = mutual(T, O + t, r)
        if len(i) < 3:
            break
        t = t + (T[i] - (O[j] + t)).mean(0)
    return t


def score(truth_csv, atoms_csv, box=None):
    """atoms.csv against the truth: metrics in the output frame and after the best of the 48 signed
    axis permutations plus a fitted translation (found on all atoms); ``box`` Å limits |x|, |y| of both."""
    t, o = pd.read_csv(truth_csv), pd.read_csv(atoms_csv)
    T, Ts = t[["x", "y", "z"]].to_numpy(float), t["element"].astype(str).to_numpy()
    O, Os = o[["x", "y", "z"]].to_numpy(float), o["element"].fillna("").astype(str).to_numpy()
    inside = lambda P: np.ones(len(P), bool) if box is None else (abs(P[:, 0]) <= box) & (abs(P[:, 1]) <= box)
    mt, mo = inside(T), inside(O)
    identity = metrics(T[mt], Ts[mt], O[mo], Os[mo])
    best = None
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product([1, -1], repeat=3):
            M = np.zeros((3, 3))
            M[range(3), perm] = signs
            tr = fit_translation(T, O @ M.T)
            n = len(mutual(T, O @ M.T + tr, TOL)[0])
            if best is None or n > best[0]:
                best = (n, M, tr)
    _, M, tr = best
    OT = O @ M.T + tr
    mo = inside(OT)
    matrix = "I" if (M == np.eye(3)).all() else "-I" if (M == -np.eye(3)).all() else str(M.astype(int).tolist())
    return dict(identity=identity, best=dict(matrix=matrix, translation_A=tr.round(3).tolist(),
                                             **metrics(T[mt], Ts[mt], OT[mo], Os[mo])))


def tool_report(run_dir):
    """The tool's alignment decision (summary.txt, report.json) and half-set precision (pm per element)."""
    report = json.loads((run_dir / "report.json").read_text())
    line = next(x for x in (run_dir / "summary.txt").read_text().splitlines() if x.startswith("Alignment: "))
    alignment = report.get("alignment", {})
    return dict(alignment=line[len("Alignment: "):].split(":")[0],
                tilt_axis_deg=alignment.get("tilt_axis", {}).get("used"),
                reprojection_t=alignment.get("check", {}).get("reprojection_t"),
                precision_pm={e: v["3d"] for e, v in report.get("refinement", {}).get("precision_pm", {}).items()})


def run_case(name, out):
    """Build case ``name`` in out/data, run napari-aet on it in out/out/NAME and score the result."""
    series, angles, pos, sp = build(name)
    save_case(out / "data", name, series, angles, pos, sp, PIXEL, dict(case=name))
    data, run_dir = out / "data" / name, out / "out" / name
    cmd = ["napari-aet", "run", f"{data}.tif", "--angles", f"{data}_angles_in.txt", "--pixel-size", str(PIXEL),
           "--elements", "Pt" if name == "c5_film" else "Fe,Pt", "--out", str(run_dir), "--force"]
    start = time.perf_counter()
    with open(out / "out" / f"{name}.log", "w") as log:
        _, status, usage = os.wait4(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT).pid, 0)
    row = dict(case=name, command=" ".join(cmd), exit_code=os.waitstatus_to_exitcode(status),
               wall_s=round(time.perf_counter() - start, 1), cpu_s=round(usage.ru_utime + usage.ru_stime, 1),
               peak_rss_MB=round(usage.ru_maxrss / 1024))  # ru_maxrss is in KiB on Linux
    if row["exit_code"] == 0:
        row["score"] = score(f"{data}_truth.csv", run_dir / "atoms.csv", FILM_BOX if name == "c5_film" else None)
        row["tool"] = tool_report(run_dir)
    return row


def table(rows):
    """Markdown table of the results."""
    f = lambda x, k=1: "–" if x is None else f"{x:.{k}f}"
    pc = lambda x: f(None if x is None else 100 * x)
    lines = ["| case | N true | N out | output frame: recall / prec % / RMS pm | transform; translation Å | recall % "
             "| precision % | RMS pm | Fe pm | Pt pm | species % | alignment (axis °) | tool precision Fe / Pt pm "
             "| wall s | CPU s | peak RSS MB |", "|" + "---|" * 16]
    for r in rows:
        if "score" not in r:
            lines.append(f"| {r['case']} | failed (exit {r['exit_code']}) |" + " |" * 11 + f" {r['wall_s']} | "
                         f"{r['cpu_s']} | {r['peak_rss_MB']} |")
            continue
        i, b, t = r["score"]["identity"], r["score"]["best"], r["tool"]
        p = t["precision_pm"]
        lines.append(
            f"| {r['case']} | {b['n_true']} | {b['n_out']} | {pc(i['recall'])} / {pc(i['precision'])} / "
            f"{f(i['rms_pm'])} | {b['matrix']}; {tuple(b['translation_A'])} | {pc(b['recall'])} | "
            f"{pc(b['precision'])} | {f(b['rms_pm'])} | {f(b.get('rms_pm_Fe'))} | {f(b.get('rms_pm_Pt'))} | "
            f"{pc(b['species'])} | {t['alignment']} ({f(t['tilt_axis_deg'])}) | {f(p.get('Fe'), 0)} / "
            f"{f(p.get('Pt'), 0)} | {r['wall_s']} | {r['cpu_s']} | {r['peak_rss_MB']} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for data, runs and results.json")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names (default all)")
    args = parser.parse_args()
    names = args.cases.split(",")
    unknown = set(names) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s) {sorted(unknown)}; known: {', '.join(CASES)}")
    (args.out / "out").mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        rows.append(run_case(name, args.out))
        print(f"{name}: exit {rows[-1]['exit_code']}, {rows[-1]['wall_s']} s", flush=True)
        (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
