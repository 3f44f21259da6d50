"""Analysis and 4D benchmark (issue 13): accuracy on exact atoms against a fixed-window baseline, and speed.

Accuracy: :func:`napari_aet.simulate_alloy.annealing_series` — an FePt particle (~2,900 atoms) with
five planted nuclei (four L1₀ of three variants, one L1₂) in an A1 matrix at three annealing times
(grow, shrink, stable, dissolve, appear), randomly re-mounted each time, 2 % of the surface atoms
turned over. For each seed and time:

* phase accuracy: fraction of atoms not on a region boundary (no nearest neighbour of another true
  phase) whose phase (A1 / L10 / L12) is right;
* nucleus overlap: intersection over union of each planted nucleus with the found nucleus that
  overlaps it most; spurious nuclei: found ones overlapping no planted one;
* site tracking precision and recall between consecutive times (truth: the simulator's site id);
* nucleus events right: the event sequences of the nucleus tracks equal the scenario's.

Baseline ("fixed window + threshold"): the same order parameters in a fixed window around each
site, phase by the 0.5 threshold, nothing else (no majority filter, no region model),
for window radii 1.0 a (19 sites) and 1.3 a (43 sites).

Speed: the same scenario scaled to ~20,000 atoms per time: ``analyze_to_directory`` per time and
``track_to_directory`` on the three outputs, wall time.

    python benchmarks/bench_analysis.py --quick        # 2 seeds, no speed test
    python benchmarks/bench_analysis.py                # 5 seeds and the 20,000-atom speed test
    python benchmarks/bench_analysis.py --speed-only
    python benchmarks/bench_analysis.py --end-to-end --seeds 3   # ~2,900 atoms per time through the whole chain
    python benchmarks/bench_analysis.py --end-to-end --seeds 1 --scenario merge-split
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_aet.analysis.analyze import analyze_atoms
from napari_aet.analysis.lattice import first_shell, fit_lattice
from napari_aet.analysis.nuclei import find_nuclei, nucleus_overlap
from napari_aet.analysis.order import LABELS, _window_codes, classify_order, order_parameters
from napari_aet.analysis.registration import RigidTransform, register_atoms
from napari_aet.analysis.tracking import track_nuclei, track_sites
from napari_aet.model import AtomModel
from napari_aet.simulate_alloy import SCENARIO_EVENTS, SCENARIOS, annealing_series


def baseline(fitted, lattice, radius):
    """Fixed-window threshold: order parameters in a window of ``radius`` × a, phase by 0.5."""
    atoms = order_parameters(fitted, lattice, radius=radius)
    codes = _window_codes(atoms.features, 0.5)
    return atoms.with_features(phase=np.array([p for p, _, _ in LABELS], dtype=object)[codes],
                               variant=np.array([v for _, v, _ in LABELS], dtype=object)[codes])


def scores(classified, truth_atoms, lattice):
    """Phase accuracy off boundaries, per-nucleus IoU, spurious nuclei."""
    labelled, _ = find_nuclei(classified, lattice)
    truth = truth_atoms.features["true_phase"]
    idx, _, present = first_shell(truth_atoms.positions, lattice.r1, "fcc")
    boundary = ((np.append(truth, "")[idx] != truth[:, None]) & present).any(axis=1)
    accuracy = np.mean(labelled.features["phase"][~boundary] == truth[~boundary])
    iou, spurious = nucleus_overlap(labelled.features["nucleus"], truth_atoms.features["true_nucleus"])
    return accuracy, iou, spurious


def site_scores(tracks, times):
    """Precision and recall of the track links between consecutive times."""
    out = []
    for t in range(1, len(times)):
        site_now, site_before = times[t].features["site"], times[t - 1].features["site"]
        _, now, before = np.intersect1d(tracks.track[t], tracks.track[t - 1], return_indices=True)
        correct = np.count_nonzero(site_now[now] == site_before[before])
        true_links = len(np.intersect1d(site_now, site_before))
        out.append((correct / max(len(now), 1), correct / true_links))
    return out


def event_sequences(nucleus_tracks):
    """The sorted event sequences of the nucleus tracks (one tuple per track)."""
    return sorted(map(tuple, nucleus_tracks.to_frame().groupby("nucleus_track")["event"].apply(list)))


def accuracy(seeds, scenario):
    rows = {"ours": [], "window 1.0a": [], "window 1.3a": []}
    tracking, events_right = [], 0
    for seed in seeds:
        times = annealing_series(seed=seed, scenario=scenario)
        analyses = []
        for atoms in times:
            fitted, lattice = fit_lattice(atoms)
            rows["ours"].append(scores(classify_order(fitted, lattice), atoms, lattice))
            rows["window 1.0a"].append(scores(baseline(fitted, lattice, 1.0), atoms, lattice))
            rows["window 1.3a"].append(scores(baseline(fitted, lattice, 1.3), atoms, lattice))
            analyses.append(analyze_atoms(atoms))
        transforms = [RigidTransform(np.eye(3), np.zeros(3))]
        transforms += [register_atoms(a.atoms, analyses[0].atoms, a.lattice, analyses[0].lattice) for a in analyses[1:]]
        tracks = track_sites([t.apply(a.atoms.positions) for t, a in zip(transforms, analyses)],
                             max_distance=0.5 * analyses[0].lattice.r1)
        tracking += site_scores(tracks, times)
        found = event_sequences(track_nuclei([a.atoms.features["nucleus"] for a in analyses], tracks))
        events_right += found == SCENARIO_EVENTS[scenario]
        print(f"seed {seed}: residuals {[round(t.residual, 3) for t in transforms[1:]]} Å, events "
              f"{'right' if found == SCENARIO_EVENTS[scenario] else 'WRONG: ' + str(found)}", flush=True)
    print(f"\n{len(seeds)} seeds x 3 times, scenario {scenario}, {len(SCENARIOS[scenario])} planted nuclei")
    print("| method | phase accuracy off boundaries: min / mean | nucleus IoU: min / mean / share >= 0.6 "
          "| spurious nuclei: max per time |")
    print("|---|---|---|---|")
    for name, values in rows.items():
        acc = np.array([v[0] for v in values])
        iou = np.concatenate([v[1] for v in values])
        spurious = max(v[2] for v in values)
        print(f"| {name} | {acc.min():.4f} / {acc.mean():.4f} | {iou.min():.2f} / {iou.mean():.2f} / "
              f"{np.mean(iou >= 0.6):.0%} | {spurious} |")
    tracking = np.array(tracking)
    print(f"\nsite tracking: precision min {tracking[:, 0].min():.4f}, recall min {tracking[:, 1].min():.4f}; "
          f"nucleus events right for {events_right} of {len(seeds)} seeds")


def speed(radius=45.6):
    from napari_aet.analysis.outputs import analyze_to_directory, track_to_directory
    from napari_aet.io import write_atoms

    times = annealing_series(radius=radius, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        outputs = []
        for t, atoms in enumerate(times):
            write_atoms(root / f"atoms{t}.csv", atoms)
            start, cpu = time.perf_counter(), time.process_time()
            summary = analyze_to_directory(root / f"atoms{t}.csv", root / f"t{t}")
            print(f"analyze time {t}: {len(atoms)} atoms, wall {time.perf_counter() - start:.1f} s, "
                  f"CPU {time.process_time() - cpu:.1f} s ({summary['n_nuclei']} nuclei)", flush=True)
            outputs.append(root / f"t{t}")
        start, cpu = time.perf_counter(), time.process_time()
        summary = track_to_directory(outputs, root / "track")
        print(f"track 3 times: wall {time.perf_counter() - start:.1f} s, CPU {time.process_time() - cpu:.1f} s; "
              f"residuals {np.round(summary['residuals_A'], 3).tolist()} Å; events {summary['events']}")


def chain_atoms(truth, seed, t, size, pixel_size, dose, keep=None, name=""):
    """The real atoms ``run_pipeline`` finds in a tilt series of ``truth``, recall and precision after
    tracing (every peak) and after classification (without the non-atoms), and the seconds it took.
    keep : directory where they are saved as ``name.csv`` / ``name.json`` and read back on a re-run."""
    import json

    from napari_aet.analysis.atom_metrics import compare_atoms
    from napari_aet.io import read_atoms, write_atoms
    from napari_aet.pipeline import real_atoms, run_pipeline
    from napari_aet.simulate import simulate_tilt_series

    saved = Path(keep or ".") / name
    if keep and saved.with_suffix(".json").exists():
        return read_atoms(saved.with_suffix(".csv")), json.loads(saved.with_suffix(".json").read_text())
    start = time.perf_counter()
    series = simulate_tilt_series(truth, shape=(size, size), pixel_size=pixel_size, dose=dose, seed=seed + t).tilt_series
    result = run_pipeline(series, ("Fe", "Pt"), seed=seed)
    found = real_atoms(result.atoms)
    stages = {"trace": compare_atoms(AtomModel(result.traced.positions), truth),  # every traced peak
              "classify": compare_atoms(result.traced, truth),  # without the non-atoms
              "seconds": time.perf_counter() - start}
    if keep:
        saved.parent.mkdir(parents=True, exist_ok=True)
        write_atoms(saved.with_suffix(".csv"), found)
        saved.with_suffix(".json").write_text(json.dumps(stages))
    return found, stages


def end_to_end(seeds, scenario, radius=24.0, size=128, pixel_size=0.5, dose=400.0, keep=None):
    """Tilt series per time (51 tilts over ±70°, ``size``² pixels of ``pixel_size`` Å, Poisson noise at
    ``dose`` counts per Pt atom) -> run_pipeline -> analyze_atoms -> follow_particle, scored on the
    atoms matched to the truth (see :func:`chain_atoms` for ``keep``)."""
    from napari_aet.analysis.atom_metrics import compare_atoms, mutual_nearest_pairs
    from napari_aet.analysis.timeseries import follow_particle

    table = []
    for seed in seeds:
        times = annealing_series(radius=radius, max_shift=2.0, seed=seed, scenario=scenario)
        analyses, matches = [], []
        for t, truth in enumerate(times):
            found, stages = chain_atoms(truth, seed, t, size, pixel_size, dose, keep, f"{scenario}_s{seed}_t{t}")
            comparison = compare_atoms(found, truth)
            i, j = mutual_nearest_pairs(found.positions + comparison["translation"], truth.positions, 1.0)
            analysis = analyze_atoms(found)
            analyses.append(analysis)
            matches.append((i, j))
            # found labels carried onto the true atoms (unmatched true atoms: A1, no nucleus)
            phase = np.full(len(truth), "A1", dtype=object)
            nucleus = np.full(len(truth), -1)
            phase[j] = analysis.atoms.features["phase"][i]
            nucleus[j] = analysis.atoms.features["nucleus"][i]
            _, lattice = fit_lattice(truth)
            idx, _, present = first_shell(truth.positions, lattice.r1, "fcc")
            true_phase = truth.features["true_phase"]
            boundary = ((np.append(true_phase, "")[idx] != true_phase[:, None]) & present).any(axis=1)
            accuracy = np.mean(phase[~boundary] == true_phase[~boundary])
            iou, spurious = nucleus_overlap(nucleus, truth.features["true_nucleus"])
            row = {"seed": seed, "time": t, "n_true": len(truth), "accuracy": accuracy, "iou": iou,
                   "spurious": spurious, "final": comparison, **stages}
            table.append(row)
            print(f"seed {seed} time {t}: {len(truth)} true atoms; recall / precision after trace "
                  f"{stages['trace']['recall']:.4f} / {stages['trace']['precision']:.4f}, after classify "
                  f"{stages['classify']['recall']:.4f} / {stages['classify']['precision']:.4f}, after refine "
                  f"{comparison['recall']:.4f} / {comparison['precision']:.4f}, species {comparison['species_accuracy']:.4f}, "
                  f"RMS {comparison['rms_error_pm']:.1f} pm; phase accuracy off boundaries {accuracy:.4f}; nucleus IoU "
                  f"{np.round(iou, 2).tolist()}, spurious {spurious} ({row['seconds']:.0f} s)", flush=True)
        followed = follow_particle([a.atoms for a in analyses], [a.lattice for a in analyses])
        for t in range(1, len(times)):
            site = []
            for u in (t - 1, t):
                i, j = matches[u]
                labels = np.full(len(analyses[u].atoms), -1)
                labels[i] = times[u].features["site"][j]
                site.append(labels)
            _, before, now = np.intersect1d(followed.sites.track[t - 1], followed.sites.track[t], return_indices=True)
            known = (site[0][before] >= 0) & (site[1][now] >= 0)
            correct = np.count_nonzero(known & (site[0][before] == site[1][now]))
            true_links = len(np.intersect1d(site[0][site[0] >= 0], site[1][site[1] >= 0]))
            tracking = (correct / max(known.sum(), 1), correct / max(true_links, 1), followed.transforms[t].residual)
            table[-len(times) + t]["tracking"] = tracking
            print("seed {} times {}->{}: site tracking precision {:.4f}, recall {:.4f}; registration residual "
                  "{:.3f} Å".format(seed, t - 1, t, *tracking), flush=True)
        events = event_sequences(followed.nuclei)
        expected = SCENARIO_EVENTS[scenario]
        right = sum(min(events.count(e), expected.count(e)) for e in set(expected))
        table[-1]["events"] = (right, len(expected), events)
        print(f"seed {seed}: nucleus events right for {right} of {len(expected)} tracks"
              + ("" if events == expected else f"; found {events}"), flush=True)
    print_table(table)


def print_table(table):
    """The end-to-end rows as a markdown table (one row per seed and time)."""
    print("\n| seed | time | recall / precision: trace, classify, refine | species | RMS (pm) | phase accuracy "
          "off boundaries | nucleus IoU | spurious | site tracking precision / recall (to previous time) "
          "| nucleus events right | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in table:
        final = row["final"]
        recall = ", ".join(f"{row[k]['recall']:.3f} / {row[k]['precision']:.3f}" for k in ("trace", "classify"))
        tracking = "{:.4f} / {:.4f}".format(*row["tracking"][:2]) if "tracking" in row else "—"
        events = "{} of {}".format(*row["events"][:2]) if "events" in row else ""
        print(f"| {row['seed']} | {row['time']} | {recall}, {final['recall']:.4f} / {final['precision']:.4f} | "
              f"{final['species_accuracy']:.4f} | {final['rms_error_pm']:.1f} | {row['accuracy']:.4f} | "
              f"{', '.join(f'{x:.2f}' for x in row['iou'])} | {row['spurious']} | {tracking} | {events} | "
              f"{row['seconds']:.0f} |")
    iou = np.concatenate([row["iou"] for row in table])
    print(f"\nnucleus IoU over {len(iou)} nucleus-times: min {iou.min():.2f}, mean {iou.mean():.3f}, "
          f"{np.count_nonzero(iou < 0.5)} below 0.5; phase accuracy off boundaries min "
          f"{min(row['accuracy'] for row in table):.4f}; spurious nuclei max {max(row['spurious'] for row in table)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, no speed test")
    parser.add_argument("--seeds", type=int, default=5, help="N seeds of the scenario, from --first-seed")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="annealing")
    parser.add_argument("--keep", metavar="DIR", help="end to end: save each time's found atoms in DIR "
                        "and reuse them on a re-run (to re-analyse without re-running the chain)")
    parser.add_argument("--speed-only", action="store_true", help="only the 20,000-atom speed test")
    parser.add_argument("--end-to-end", action="store_true",
                        help="only the end-to-end test: tilt series per time -> run -> analyze -> track")
    args = parser.parse_args()
    if args.end_to_end:
        return end_to_end(range(args.first_seed, args.first_seed + args.seeds), args.scenario, keep=args.keep)
    if not args.speed_only:
        accuracy(range(args.first_seed, args.first_seed + (2 if args.quick else args.seeds)), args.scenario)
    if not args.quick:
        speed()


if __name__ == "__main__":
    main()
