"""Benchmark napari-aet's reconstructions (GENFIRE, RESIRE, WBP) against GENFIRE-Python.

Every run happens in its own subprocess, which reports its wall time (reconstruction only,
gridding included, imports and file loading excluded) and its peak resident memory
(``ru_maxrss``); the parent compares the volume with the ground truth of the simulated
particle. GENFIRE-Python (PyPI ``genfire``) runs unmodified in its own virtual environment,
never vendored::

    python -m venv /tmp/genfire-venv && /tmp/genfire-venv/bin/pip install genfire numpy scipy

It runs with numpy 2 when R-free is off and FFT gridding is used (its defaults otherwise:
oversampling 3, cutoff 0.5, resolution extension/suppression). Examples::

    python benchmarks/bench_reconstruct.py --quick            # 64^3, ours only, < 1 minute
    python benchmarks/bench_reconstruct.py                    # 64^3 and 128^3, with GENFIRE-Python
    python benchmarks/bench_reconstruct.py --sizes 256 --n-angles 60 --no-genfire --methods genfire resire wbp
    python benchmarks/bench_reconstruct.py --methods genfire:oversampling=2 --no-genfire   # any parameters

The table reports, per run: wall time, CPU time (all threads; less sensitive to other load on a
shared machine), time per iteration, the time of one forward + inverse real
FFT of the padded grid measured in the same process (the "physical limit" of a Fourier
iteration) and their ratio, peak memory, and the relative error
``||v - truth|| / ||truth||`` of the volume (also after the least-squares intensity scale).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- children
def child_ours(case, method, params, out):
    """Run one of our methods on ``case`` (npz) and report time, per-iteration time, FFT pair."""
    from scipy import fft

    from napari_aet.model import TiltSeries
    from napari_aet.reconstruct import iterate
    from napari_aet.reconstruct.genfire import grid_size

    data = np.load(case)
    series = TiltSeries(data["projections"], data["angles"], float(data["pixel_size"]))
    start, cpu = time.perf_counter(), time.process_time()
    stamps, state = [], None
    for state in iterate(series, method, **params):
        stamps.append(time.perf_counter())
    seconds, cpu = stamps[-1] - start, time.process_time() - cpu
    steps = np.diff(stamps[: state.n_iterations])
    result = {"seconds": seconds, "cpu_seconds": cpu, "iterations": state.n_iterations,
              "iteration_s": float(np.median(steps)) if len(steps) else None,
              "maxrss_mb": peak_mb(), "errors": {k: v[-1] for k, v in state.errors.items()}}
    np.save(out, state.volume)
    if method == "genfire":
        n = grid_size(state.volume.shape, params.get("oversampling", 3.0))
        grid = np.zeros((n, n, n), np.float32)
        pairs = []
        for _ in range(3):
            t = time.perf_counter()
            fft.irfftn(fft.rfftn(grid, workers=-1), s=grid.shape, workers=-1)
            pairs.append(time.perf_counter() - t)
        result.update(grid=n, fft_pair_s=min(pairs))
    print(json.dumps(result))


def child_genfire_python(case, iterations, out):
    """Run GENFIRE-Python 1.1.11 with its defaults (R-free off) on ``case``; volume saved as (z, y, x)."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import genfire.reconstruct

    data = np.load(case)
    # GENFIRE indexes projections (u, v, n) and volumes (x, y, z): ours are (n, v, u) and (z, y, x)
    projections = np.ascontiguousarray(data["projections"].transpose(2, 1, 0), dtype=np.float64)
    angles = data["angles"]
    euler = np.stack([np.zeros_like(angles), angles, np.zeros_like(angles)], axis=1)
    start, cpu = time.perf_counter(), time.process_time()
    reconstructor = genfire.reconstruct.GenfireReconstructor(
        projections=projections, eulerAngles=euler, numIterations=iterations, calculateRfree=False,
        griddingMethod="FFT", verbose=False, resultsFilename=str(out) + ".mrc")
    results = reconstructor.reconstruct()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    np.save(out, np.asarray(results["reconstruction"], np.float32).transpose(2, 1, 0))
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "iterations": iterations, "iteration_s": None,
                      "maxrss_mb": peak_mb(), "errors": {"errK": float(results["errK"][-1])}}))


# --------------------------------------------------------------------------- parent
def make_case(size, n_angles, max_angle, dose, seed, folder) -> Path:
    from napari_aet.geometry import render_atoms
    from napari_aet.simulate import adf_amplitudes, fcc_particle, simulate_tilt_series

    pixel = 0.4
    atoms = fcc_particle(radius=0.3 * size * pixel, seed=seed)
    angles = np.linspace(-max_angle, max_angle, n_angles)
    sim = simulate_tilt_series(atoms, angles=angles, shape=(size, size), pixel_size=pixel,
                               dose=dose or None, max_shift=0, seed=seed)
    truth = render_atoms(atoms.positions, adf_amplitudes(atoms.species, dose or 1.0), 0.55, (size,) * 3, pixel)
    path = folder / f"case_{size}.npz"
    np.savez(path, projections=sim.tilt_series.projections, angles=angles, pixel_size=pixel, truth=truth,
             n_atoms=len(atoms))
    return path


def run_child(python, args, timeout):
    done = subprocess.run([python, str(HERE), "_child", *args], capture_output=True, text=True, timeout=timeout,
                          check=False)
    if done.returncode:
        raise RuntimeError(f"benchmark child {args[:2]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def errors_against(volume, truth):
    volume, truth = volume.astype(np.float64), truth.astype(np.float64)
    relative = np.linalg.norm(volume - truth) / np.linalg.norm(truth)
    scale = (volume * truth).sum() / max((volume * volume).sum(), 1e-30)
    return float(relative), float(np.linalg.norm(scale * volume - truth) / np.linalg.norm(truth))


def method_and_params(spec, iterations):
    """``("genfire", '{"n_iterations": 50, ...}')`` from ``"genfire:key=value,..."``."""
    name, _, extra = spec.partition(":")
    params = {} if name == "wbp" else {"n_iterations": iterations}
    for item in filter(None, extra.split(",")):
        key, _, value = item.partition("=")
        params[key] = json.loads(value)
    return name, json.dumps(params)


def table_row(r) -> str:
    """One markdown row of the results table."""
    pair, per = r.get("fft_pair_s"), r["iteration_s"]
    cells = [f"{r['size']}³", r["method"], f"{r['seconds']:.2f}", f"{r['cpu_seconds']:.2f}",
             "" if per is None else f"{per:.3f}",
             "" if pair is None else f"{pair:.3f} ({r['grid']}³)",
             "" if pair is None or per is None else f"{per / pair:.2f}",
             f"{r['maxrss_mb']:.0f}", f"{r['relative_error']:.4f}", f"{r['scaled_error']:.4f}"]
    return "| " + " | ".join(cells) + " |"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--quick", action="store_true", help="64^3 only, our methods only (< 1 minute)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="volume sizes (default 64 128)")
    parser.add_argument("--n-angles", type=int, default=31, help="projections per series (default 31)")
    parser.add_argument("--max-angle", type=float, default=70.0, help="tilt range ±degrees (default 70)")
    parser.add_argument("--iterations", type=int, default=50, help="iterations of every iterative method")
    parser.add_argument("--dose", type=float, default=400.0,
                        help="counts per Pt atom per projection, Poisson noise; 0 = noiseless (default 400)")
    parser.add_argument("--methods", nargs="+", default=["genfire", "genfire:r_free_fraction=0", "resire", "wbp"],
                        help="our methods to run, each 'name' or 'name:param=value,...' (values in JSON); "
                             "default: genfire, genfire without R-free (like-for-like with GENFIRE-Python), "
                             "resire, wbp")
    parser.add_argument("--genfire-venv", default=os.environ.get("GENFIRE_VENV", "/tmp/genfire-venv"),
                        help="virtual environment with the genfire package (env GENFIRE_VENV)")
    parser.add_argument("--no-genfire", action="store_true", help="skip GENFIRE-Python")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.no_genfire = [64], True
    genfire_python = Path(args.genfire_venv) / "bin" / "python"
    if not args.no_genfire and not genfire_python.exists():
        parser.error(f"no GENFIRE-Python venv at {args.genfire_venv}: create it (see --help) or pass --no-genfire")

    load = os.getloadavg()
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, {os.cpu_count()} CPUs, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"# {args.n_angles} projections over ±{args.max_angle:g}°, dose {args.dose:g}, "
          f"{args.iterations} iterations, command: {' '.join(sys.argv)}\n")
    header = ("| size | method | time s | CPU s | s/iteration | FFT pair s | ratio | peak MB | rel. error | "
              "scaled error |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for size in args.sizes:
            case = make_case(size, args.n_angles, args.max_angle, args.dose, args.seed, folder)
            truth = np.load(case)["truth"]
            runs = [(spec, sys.executable, ["ours", str(case), *method_and_params(spec, args.iterations)])
                    for spec in args.methods]
            if not args.no_genfire:
                runs.append(("GENFIRE-Python", str(genfire_python), ["genfire", str(case), str(args.iterations)]))
            for name, python, child_args in runs:
                out = folder / f"run{len(rows)}.npy"
                result = run_child(python, child_args + [str(out)], timeout=3600)
                relative, scaled = errors_against(np.load(out), truth)
                result.update(size=size, method=name, relative_error=relative, scaled_error=scaled)
                rows.append(result)
                print(table_row(result), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        kind, rest = sys.argv[2], sys.argv[3:]
        if kind == "ours":
            child_ours(rest[0], rest[1], json.loads(rest[2]), rest[3])
        else:
            child_genfire_python(rest[0], int(rest[1]), rest[2])
    else:
        main()
