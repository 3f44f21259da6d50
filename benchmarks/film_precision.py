"""How precisely the measured Ta film's projections fix an atom's position, and whether they prefer
the refinement's positions to the published ones on projections they were not fitted to.

    TA_FILM_DATA=…/ta_film python benchmarks/film_precision.py [--areas area17 area53] [--chain]

For each area the published atoms (all in the box) are refined — positions, Ta's height and
width, per-projection scale and background; no completion, no move check — against all
projections, the even ones and the odd ones. Printed, for the published atoms in the core strip:
how far each refinement moved them (RMS pm along x, y, z and 3D) and how far the even and the odd
refinements end apart (for independent noise, twice the full data's noise-limited RMS error).
Then the held-out check: the atoms moved a fraction f of the way from the published positions to
those refined on one half, scored on the other half by the R-factor of a model whose positions
stay put (heights, width, scales and background fitted there).

``--chain`` also runs the whole chain (film geometry, defaults) on the even and on the odd
projections and prints, traced and refined, each half's agreement with the published model and
the two halves' agreement with each other (mutual nearest within 1 Å, counted in the strip).
"""

from __future__ import annotations

import argparse

import numpy as np

from bench_film import MATCH_A, in_strip, load_area, score
from napari_aet.analysis.atom_metrics import mutual_nearest_pairs
from napari_aet.model import AtomModel
from napari_aet.pipeline import real_atoms, run_pipeline
from napari_aet.refine import refine_atoms

FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25)


def tantalum(positions) -> AtomModel:
    return AtomModel(positions, np.full(len(positions), "Ta", dtype=object), {})


def refined(series, positions, iterations=15):
    """Positions ``(N, 3)`` Å and final R-factor of ``positions`` refined against ``series``."""
    result = refine_atoms(series, tantalum(positions), elements=["Ta"], iterations=iterations,
                          complete_rounds=0, validate_moves=False)
    return result.atoms.positions, result.errors["r_factor"][-1]


def rms_pm(difference) -> str:
    """RMS of ``difference`` ``(N, 3)`` Å in pm along x, y, z and in 3D, as table cells."""
    per_axis = 100 * np.sqrt(np.mean(difference ** 2, axis=0))
    return " | ".join(f"{v:.1f}" for v in (*per_axis, np.sqrt(np.sum(per_axis ** 2))))


def halves(series) -> dict:
    """The even and the odd projections' indices."""
    return {"even": np.arange(0, series.n_angles, 2), "odd": np.arange(1, series.n_angles, 2)}


def chain_on_halves(area):
    """Table rows: the chain run on each half, scored against the published model and each other."""
    series, meta, published, core = load_area(area)
    found = {}
    for name, index in halves(series).items():
        result = run_pipeline(series.subset(index), "Ta", align=False, geometry="film", seed=0)
        for stage, atoms in (("traced", result.traced), ("refined", result.atoms)):
            found[name, stage] = positions = real_atoms(atoms).positions
            agreement = score(positions, published.positions, core.positions, meta)
            yield (f"| {area} | {name} | {stage} | {100 * agreement['found_over_published']:.1f}% | "
                   f"{100 * agreement['published_over_found']:.1f}% | {agreement['rms_pm']:.1f} |")
    for stage in ("traced", "refined"):
        i, j = mutual_nearest_pairs(found["even", stage], found["odd", stage], MATCH_A)
        strip = in_strip(found["even", stage][i], meta)
        yield f"| {area} | even − odd apart | {stage} | {strip.sum()} pairs | | " \
              f"{rms_pm((found['even', stage][i] - found['odd', stage][j])[strip]).split(' | ')[-1]} |"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--areas", nargs="+", default=["area17", "area53"])
    parser.add_argument("--chain", action="store_true", help="also run the whole chain on each half")
    args = parser.parse_args()
    print("| area | refined on | moved from published, pm: x | y | z | 3D |\n|---|---|---|---|---|---|")
    curves = []
    for area in args.areas:
        series, meta, published, _ = load_area(area)
        start = published.positions
        strip = in_strip(start, meta)
        moved = {"all": refined(series, start)[0]}
        moved.update({name: refined(series.subset(index), start)[0] for name, index in halves(series).items()})
        for name, positions in moved.items():
            print(f"| {area} | {name} | {rms_pm((positions - start)[strip])} |")
        print(f"| {area} | even − odd apart | {rms_pm((moved['even'] - moved['odd'])[strip])} |")
        for fitted, scored in (("even", "odd"), ("odd", "even")):
            judge = series.subset(halves(series)[scored])
            r = [refined(judge, start + f * (moved[fitted] - start), iterations=0)[1] for f in FRACTIONS]
            curves.append(f"| {area} | {fitted} | {scored} | " + " | ".join(f"{v:.4f}" for v in r) + " |")
    print("\n| area | moves fitted on | R-factor on | " + " | ".join(f"f = {f}" for f in FRACTIONS) + " |")
    print("|---|---|---|" + "---|" * len(FRACTIONS))
    print("\n".join(curves))
    if args.chain:
        print("\n| area | projections | atoms | found / published | published / found | RMS pm |\n"
              "|---|---|---|---|---|---|")
        for area in args.areas:
            for row in chain_on_halves(area):
                print(row)


if __name__ == "__main__":
    main()
