"""Single-pixel spikes (X-ray hits, hot pixels): what ``preprocess.replace_spikes`` finds on clean
series, what it catches, and what spikes do to the chain with and without it.

    python benchmarks/bench_spikes.py [--chain]

1. Clean series, nothing injected: how far the rule's two statistics reach (the largest "excess
   over the brightest neighbour" over the 90th percentile of that excess at local maxima, among
   pixels more than twice as bright as every neighbour, and among all) and how many pixels it
   replaces — our simulator at four doses (201 atoms in 96² and 256² px; 13 atoms in 256² px;
   13 atoms at 0.6 Å pixels and 0.45 Å blur), the abTEM series of bench_multislice.py when
   present (/tmp/ms21za, /tmp/ms21off), the measured Ta film (``$TA_FILM_DATA``) and the demo.
2. Injected: 20 random spikes, and 3 hot pixels present in every projection, at 2, 3 and 10 times
   the series' brightest pixel: how many are caught, how many other pixels replaced.
3. ``--chain``: the 201-atom particle (dose 400, 35 tilts, 96² px, ±3 px shifts) with 20 spikes
   at 3 and 10 times its brightest pixel, ``run_pipeline`` with ``keep_spikes`` False and True:
   recall / precision / RMS (pm) against the truth.
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from napari_aet.model import TiltSeries
from napari_aet.preprocess import SPIKE_RATIO, replace_spikes
from napari_aet.simulate import fcc_particle, sample_fept, simulate_tilt_series

ANGLES = np.linspace(-70, 70, 35)


def statistics(series) -> str:
    projections = series.projections.astype(np.float64)
    around = np.ones((1, 3, 3), bool)
    around[0, 1, 1] = False
    brightest = ndimage.maximum_filter(projections, footprint=around, mode="mirror")
    excess = projections - brightest
    scale = np.quantile(excess[excess > 0], 0.9)
    sharp = (excess > 0) & (projections > SPIKE_RATIO * np.maximum(brightest, 0))
    largest_sharp = excess[sharp].max() / scale if sharp.any() else 0.0
    replaced = len(replace_spikes(series).metadata.get("spikes", []))
    return f"{largest_sharp:.1f} | {excess.max() / scale:.1f} | {replaced}"


def clean_series():
    big, small = fcc_particle(radius=10, seed=0), fcc_particle(radius=4, seed=0)
    for dose in (None, 400, 40, 4):
        for label, atoms, shape, pixel, blur in (("201 atoms, 96² px", big, (96, 96), 0.4, 0.55),
                                                 ("201 atoms, 256² px", big, (256, 256), 0.4, 0.55),
                                                 ("13 atoms, 256² px", small, (256, 256), 0.4, 0.55),
                                                 ("13 atoms, 0.6 Å px, 0.45 Å blur", small, (128, 128), 0.6, 0.45)):
            yield f"simulator, {label}, dose {dose}", simulate_tilt_series(
                atoms, ANGLES, shape=shape, pixel_size=pixel, blur=blur, dose=dose, max_shift=3, seed=0).tilt_series
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_multislice

    for name in ("za", "off"):
        folder = Path(f"/tmp/ms21{name}")
        if (folder / "particle.npz").exists():
            _, images, angles = bench_multislice.load(folder, 400.0)
            counts = np.random.default_rng(0).poisson(np.maximum(images, 0)).astype(np.float32)
            yield f"abTEM {folder}, dose 400", TiltSeries(counts, angles, bench_multislice.PIXEL)
    if os.environ.get("TA_FILM_DATA"):
        import bench_film

        for area in ("area17", "area53"):
            yield f"measured Ta film, {area}", bench_film.load_area(area)[0]
    yield "demo (sample_fept)", sample_fept(seed=0).tilt_series


def injected(series, n, level, every_projection, seed=5):
    rng = np.random.default_rng(seed)
    projections, top = series.projections.copy(), series.projections.max()
    count, ny, nx = projections.shape
    where = set()
    for _ in range(n):
        y, x = int(rng.integers(ny)), int(rng.integers(nx))
        views = range(count) if every_projection else [int(rng.integers(count))]
        where |= {(i, y, x) for i in views}
    for i, y, x in where:
        projections[i, y, x] = level * top
    return series.replace(projections=projections), where


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chain", action="store_true", help="also run the chain with and without replacing")
    args = parser.parse_args()
    print("| clean series | largest excess / P90, pixels > 2× every neighbour | largest, all | replaced |")
    print("|---|---|---|---|")
    for name, series in clean_series():
        print(f"| {name} | {statistics(series)} |", flush=True)
    print("\n| series | injected | level | caught | other pixels replaced |")
    print("|---|---|---|---|---|")
    big = fcc_particle(radius=10, seed=0)
    for dose in (400, 40, 4):
        series = simulate_tilt_series(big, ANGLES, shape=(96, 96), dose=dose, max_shift=3, seed=0).tilt_series
        for level in (2.0, 3.0, 10.0):
            for every, label in ((False, "20 random"), (True, "3 hot pixels × 35")):
                spiked, where = injected(series, 3 if every else 20, level, every)
                found = {tuple(p) for p in replace_spikes(spiked).metadata.get("spikes", [])}
                print(f"| 201 atoms, dose {dose} | {label} ({len(where)}) | {level:g}× | {len(found & where)} | "
                      f"{len(found - where)} |", flush=True)
    if args.chain:
        from napari_aet.analysis.atom_metrics import compare_atoms
        from napari_aet.pipeline import real_atoms, run_pipeline

        print("\n| spikes (20) | keep_spikes | replaced | recall / precision / RMS pm |")
        print("|---|---|---|---|")
        series = simulate_tilt_series(big, ANGLES, shape=(96, 96), dose=400, max_shift=3, seed=0).tilt_series
        for level in (3.0, 10.0):
            spiked, _ = injected(series, 20, level, False)
            for keep in (True, False):
                result = run_pipeline(spiked, "Fe,Pt", keep_spikes=keep, seed=0)
                m = compare_atoms(real_atoms(result.atoms), big)
                print(f"| {level:g}× | {keep} | {result.report['input']['spikes_replaced']} | "
                      f"{m['recall']:.2%} / {m['precision']:.2%} / {m['rms_error_pm']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
