"""Draw docs/figures/conventions.png with the project's own geometry code.

Run: python docs/figures/make_conventions_figure.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from napari_aet.geometry import project_atoms

# Three atoms, (x, y, z) in Å: one on the tilt axis, one at +x, one at +z (towards the detector side).
atoms = np.array([[0.0, 0.0, 0.0], [6.0, 3.0, 0.0], [0.0, -4.0, 6.0]])
names = ["origin", "+x (6, 3, 0)", "+z (0, -4, 6)"]
colours = ["white", "tab:orange", "tab:cyan"]
angles = [-40.0, 0.0, 40.0]
images = project_atoms(atoms, 1.0, 0.6, angles, (64, 64), 0.4)

fig, axes = plt.subplots(1, 4, figsize=(15, 3.8))
ax = axes[0]
ax.set_title("Specimen frame, side view (y into page)", fontsize=9)
ax.arrow(0, 0, 1, 0, head_width=0.08, color="k")
ax.arrow(0, 0, 0, 1, head_width=0.08, color="k")
ax.text(1.05, -0.05, "x (image columns)")
ax.text(-0.1, 1.1, "z (beam at 0°)")
t = np.deg2rad(40)
ax.plot([-1.2 * np.cos(t), 1.2 * np.cos(t)], [1.2 * np.sin(t), -1.2 * np.sin(t)], "--", color="tab:red")
ax.text(0.45, -0.85, "image u axis at θ = +40°:\nu = x cosθ − z sinθ", color="tab:red")
ax.set_xlim(-1.5, 2.2), ax.set_ylim(-1.3, 1.4), ax.set_aspect("equal"), ax.axis("off")
for a, img, theta in zip(axes[1:], images, angles):
    a.imshow(img, cmap="gray", extent=(-32 * 0.4, 32 * 0.4, 32 * 0.4, -32 * 0.4))
    r = np.deg2rad(theta)
    for (x, y, z), c in zip(atoms, colours):
        a.plot(x * np.cos(r) - z * np.sin(r), y, "o", mfc="none", mec=c, ms=14)
    a.set_title(f"projection at θ = {theta:+.0f}° (tilt axis = y)", fontsize=9)
    a.set_xlabel("x / u (Å, columns)"), a.set_ylabel("y (Å, rows, pointing down)")
axes[3].legend([plt.Line2D([], [], ls="", marker="o", mfc="none", mec=c) for c in colours], names,
               loc="lower right", fontsize=8, facecolor="0.3", labelcolor="white")
fig.tight_layout()
out = Path(__file__).with_name("conventions.png")
fig.savefig(out, dpi=90)
print(f"wrote {out}")
