"""An ADF-STEM tilt-series simulator that shares no code with napari_aet.

It was written from docs/conventions.md alone and imports nothing from napari_aet (numpy, scipy
and tifffile only). That independence is the point: data made by the tool's own simulator
(``napari_aet.simulate``, built on ``geometry.project_atoms``) share the tool's geometry, image
model and any mistake in them, so the tool would be judged on its own assumptions. Here the
conventions are re-implemented from the documentation and the image model deliberately differs
(Z^1.5 contrast, 0.42 Å atoms, 0.7 px blur), so a wrong convention or an over-fitted model shows.

Geometry (docs/conventions.md): specimen (x, y, z) in Å about the rotation centre; a tilt θ about
y puts an atom at u = x cos θ − z sin θ, v = y; image column = x, row = y, centre pixel n // 2;
an in-plane tilt axis a (degrees, direction (sin a, cos a) in the image) puts (u, v) at image
(u cos a + v sin a, −u sin a + v cos a).

Image model: each atom an isotropic Gaussian (rms ``sigma`` Å) integrated exactly over each
pixel (erf), of integrated intensity dose × (Z / Z_max)^exponent counts per projection (the
heaviest element gives ``dose``), then a Gaussian blur of ``blur_px`` px, a constant background
(counts/px) and Poisson noise.
"""

import json
import os

import numpy as np
import tifffile
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree
from scipy.special import erf

Z = {"Fe": 26, "Pt": 78}


def rot_matrix(rx, ry, rz):
    """Rotation about x, then y, then z (degrees)."""
    a, b, c = np.deg2rad([rx, ry, rz])
    Rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    Ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    Rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def fept_particle(radius=13.5, a=3.85, c=3.75, order="L10", vacancy_frac=0.02, max_tilt_deg=8.0, seed=1):
    """FePt sphere of ``radius`` Å with one flat {001} cut: positions (N, 3) Å and species (N,).

    Tetragonal cell (a, a, c) Å; "L10" puts Fe on the z = 0 planes and Pt on z = c/2, "disordered"
    draws each species at random (50/50). Then ``vacancy_frac`` random vacancies, a random rotation
    of up to ±``max_tilt_deg`` degrees about each axis, 5 pm rms static displacements, and the
    centroid moved up to 1 Å from the rotation centre on each axis.
    """
    rng = np.random.default_rng(seed)
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    species_basis = np.array(["Fe", "Fe", "Pt", "Pt"])
    n = int(np.ceil(radius / min(a, c))) + 2
    ii = np.arange(-n, n + 1)
    cells = np.array(np.meshgrid(ii, ii, ii, indexing="ij")).reshape(3, -1).T
    pos = (cells[:, None, :] + basis[None]).reshape(-1, 3) * np.array([a, a, c])
    sp = np.tile(species_basis, len(cells))
    pos = pos + rng.uniform(-0.5, 0.5, 3)  # so that no atom sits exactly at the centre
    keep = (np.linalg.norm(pos, axis=1) < radius) & (pos[:, 2] > -radius * 0.85)
    pos, sp = pos[keep], sp[keep]
    if order == "disordered":
        sp = rng.choice(["Fe", "Pt"], size=len(sp))
    drop = rng.choice(len(pos), int(round(vacancy_frac * len(pos))), replace=False)
    m = np.ones(len(pos), bool)
    m[drop] = False
    pos, sp = pos[m], sp[m]
    pos = pos @ rot_matrix(*rng.uniform(-max_tilt_deg, max_tilt_deg, 3)).T
    pos = pos + rng.normal(scale=0.05, size=pos.shape)
    pos -= pos.mean(axis=0) - rng.uniform(-1, 1, 3)
    return pos, sp


def amorphous_slab(xhalf=80.0, yhalf=26.0, thickness=12.0, dmin=2.45, target_density=0.058, seed=3):
    """Hard spheres (no two closer than ``dmin`` Å) added at random to the slab |x| < xhalf,
    |y| < yhalf, |z| < thickness / 2 (Å) up to ``target_density`` atoms/Å³: positions, species (all Pt)."""
    rng = np.random.default_rng(seed)
    target = int(target_density * 4 * xhalf * yhalf * thickness)
    pts = np.empty((0, 3))
    lo = np.array([-xhalf, -yhalf, -thickness / 2])
    for _ in range(400):
        if len(pts) >= target:
            break
        cand = rng.uniform(lo, -lo, size=(4000, 3))
        if len(pts):
            d, _ = cKDTree(pts).query(cand)
            cand = cand[d >= dmin]
        if len(cand) == 0:
            continue
        bad = np.zeros(len(cand), bool)  # resolve clashes within the batch greedily
        for i, j in cKDTree(cand).query_pairs(dmin, output_type="ndarray"):
            if not bad[i] and not bad[j]:
                bad[j] = True
        cand = cand[~bad]
        pts = np.vstack([pts, cand[: max(0, target - len(pts))]])
    return pts, np.array(["Pt"] * len(pts))


def project(pos, sp, angles, shape=(112, 112), pixel=0.38, dose=300.0, exponent=1.5, sigma=0.42, blur_px=0.7,
            background=0.5, tilt_axis=0.0, axis_offset=(0.0, 0.0), shifts=None, noise=True, seed=0, tail=None,
            atten=0.0, atten_radius=0.8, scale=None):
    """Tilt series (n_angles, ny, nx) float32 of atoms ``pos`` (Å) at single tilts ``angles`` (degrees).

    ``pixel`` Å; ``dose`` counts per heaviest atom per projection; ``tilt_axis`` degrees;
    ``axis_offset`` (dx, dy) px: where the rotation axis's image lies relative to pixel n // 2;
    ``shifts`` (n, 2) (dy, dx) px added to projection i's content. Non-idealities, off by default:
    ``tail=(frac, sigma_tail)`` spreads a fraction of each atom's intensity with rms ``sigma_tail`` Å
    (probe tails); ``atten=alpha`` multiplies an atom's intensity by (1 − alpha)^k, k = atoms upstream
    of it (smaller depth) within ``atten_radius`` Å laterally (channelling-like sub-linear columns);
    ``scale`` (n,) multiplies each projection (beam-current drift).
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    zmax = max(Z[s] for s in set(sp))
    amp = np.array([dose * (Z[s] / zmax) ** exponent for s in sp])
    th = np.deg2rad(np.asarray(angles, float))
    a = np.deg2rad(tilt_axis)
    out = np.empty((len(th), ny, nx), np.float32)
    xe = (np.arange(nx + 1) - 0.5 - nx // 2) * pixel  # pixel edges, Å
    ye = (np.arange(ny + 1) - 0.5 - ny // 2) * pixel
    comps = [(1.0, sigma)] if tail is None else [(1 - tail[0], sigma), (tail[0], tail[1])]
    for k, t in enumerate(th):
        u = pos[:, 0] * np.cos(t) - pos[:, 2] * np.sin(t)
        v = pos[:, 1]
        w = pos[:, 0] * np.sin(t) + pos[:, 2] * np.cos(t)
        amp_k = amp.copy()
        if atten > 0:
            pairs = cKDTree(np.c_[u, v]).query_pairs(atten_radius, output_type="ndarray")
            up = np.zeros(len(u))
            if len(pairs):
                i, j = pairs[:, 0], pairs[:, 1]
                np.add.at(up, np.where(w[i] < w[j], j, i), 1)
            amp_k = amp_k * (1 - atten) ** up
        if scale is not None:
            amp_k = amp_k * scale[k]
        X = u * np.cos(a) + v * np.sin(a) + axis_offset[0] * pixel
        Y = -u * np.sin(a) + v * np.cos(a) + axis_offset[1] * pixel
        if shifts is not None:
            X = X + shifts[k][1] * pixel
            Y = Y + shifts[k][0] * pixel
        img = np.zeros((ny, nx))
        for frac, sg in comps:
            s2 = sg * np.sqrt(2)
            cx = 0.5 * np.diff(erf((xe[None, :] - X[:, None]) / s2), axis=1)  # (N, nx)
            cy = 0.5 * np.diff(erf((ye[None, :] - Y[:, None]) / s2), axis=1)  # (N, ny)
            img += (cy * (frac * amp_k)[:, None]).T @ cx
        if blur_px > 0:
            img = gaussian_filter(img, blur_px, mode="constant")
        img = img + background
        if noise:
            img = rng.poisson(img).astype(np.float32)
        out[k] = img
    return out


def save_case(outdir, name, series, angles, pos, sp, pixel, meta):
    """Write NAME.tif, NAME_angles_in.txt (degrees), NAME_truth.csv (x,y,z Å, element) and
    NAME_meta.json (``meta`` plus pixel size Å and atom counts) to ``outdir``; return the meta."""
    os.makedirs(outdir, exist_ok=True)
    tifffile.imwrite(f"{outdir}/{name}.tif", series.astype(np.float32))
    np.savetxt(f"{outdir}/{name}_angles_in.txt", np.asarray(angles), fmt="%.4f")
    with open(f"{outdir}/{name}_truth.csv", "w") as f:
        f.write("x,y,z,element\n")
        for p, s in zip(pos, sp):
            f.write(f"{p[0]:.4f},{p[1]:.4f},{p[2]:.4f},{s}\n")
    meta = dict(meta, pixel=pixel, n_atoms=int(len(pos)), n_Fe=int(np.sum(sp == "Fe")), n_Pt=int(np.sum(sp == "Pt")))
    with open(f"{outdir}/{name}_meta.json", "w") as f:
        json.dump(meta, f, indent=1)
    return meta
