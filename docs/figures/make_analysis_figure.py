"""Draw docs/figures/analysis.png: stage 9 on the simulator's annealing series.

Run: python docs/figures/make_analysis_figure.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from napari_aet.analysis.analyze import analyze_atoms
from napari_aet.analysis.registration import RigidTransform, register_atoms
from napari_aet.analysis.tracking import track_nuclei, track_sites
from napari_aet.simulate_alloy import annealing_series

times = annealing_series(seed=0)
analyses = [analyze_atoms(atoms) for atoms in times]
first = analyses[0]
atoms, lattice = first.atoms, first.lattice
crystal = (atoms.positions - lattice.origins[0]) @ lattice.rotation  # crystal frame, Å
plane = np.abs(crystal[:, 2] - np.median(crystal[:, 2])) < 1.0  # one (001) atomic plane through the centre

fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))
for ax, labels, title in [(axes[0], times[0].features["true_nucleus"], "planted nuclei (truth)"),
                          (axes[1], atoms.features["nucleus"], "found nuclei")]:
    colour = np.where(labels[plane] >= 0, labels[plane] % 10, -1)
    ax.scatter(crystal[plane, 0], crystal[plane, 1], c=np.where(colour >= 0, colour, np.nan), cmap=plt.get_cmap("tab10").with_extremes(bad="lightgrey"),
               vmin=0, vmax=9, s=28, edgecolors="none", plotnonfinite=True)
    heavy = plane & (atoms.species == "Pt")
    ax.scatter(crystal[heavy, 0], crystal[heavy, 1], s=4, c="k")
    ax.set_title(f"{title}; one (001) plane, black dots: Pt, grey: A1", fontsize=9)
    ax.set_aspect("equal")
    ax.set_xlabel("crystal x (Å)")
axes[0].set_ylabel("crystal y (Å)")

r, g = np.array(first.structure["pdf"]["r_A"]), np.array(first.structure["pdf"]["g"])
axes[2].plot(r, g, lw=1)
axes[2].set_xlabel("r (Å)")
axes[2].set_title(f"pair distribution; a = {lattice.constant:.3f} Å from r₁ = {lattice.r1:.3f} Å", fontsize=9)
inset = axes[2].inset_axes([0.5, 0.5, 0.45, 0.4])
inset.hist([atoms.features["order_L10"], atoms.features["order_L12"]], bins=20, range=(0, 1),
           label=["L1₀", "L1₂"], log=True)
inset.set_title("order parameters", fontsize=8)
inset.legend(fontsize=7)

transforms = [RigidTransform(np.eye(3), np.zeros(3))]
transforms += [register_atoms(a.atoms, first.atoms, a.lattice, lattice) for a in analyses[1:]]
tracks = track_sites([t.apply(a.atoms.positions) for t, a in zip(transforms, analyses)], max_distance=0.5 * lattice.r1)
table = track_nuclei([a.atoms.features["nucleus"] for a in analyses], tracks).to_frame()
for track, rows in table.groupby("nucleus_track"):
    axes[3].plot(rows["time"], rows["n_atoms"], "o-", label=f"track {track}: {', '.join(rows['event'])}")
axes[3].set_xticks([0, 1, 2])
axes[3].set_xlabel("time point")
axes[3].set_ylabel("atoms in nucleus")
axes[3].set_title("nuclei followed across times (registered without a guess)", fontsize=9)
axes[3].legend(fontsize=7)
fig.tight_layout()
out = Path(__file__).with_name("analysis.png")
fig.savefig(out, dpi=110)
print(f"wrote {out}")
