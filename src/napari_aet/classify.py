"""Species classification of traced atoms, with every doubt made visible.

1. Each atom's local profile: the ``box**3`` voxels around its sub-voxel position
   (trilinear interpolation), weighted by a Gaussian of the atoms' width in the volume (a
   matched filter, measured on the brightest atoms' mean profile); its sum is the integrated
   intensity.
2. Initial classes from a 1D Gaussian mixture of the integrated intensities: one class per
   element plus a "non-atom" class for noise peaks, kept only when the Bayesian information
   criterion (BIC) says the data need it; and a non-atom class measured where there is only
   noise: a peak no brighter than the noise peaks away from the particle is a non-atom.
3. Unbiased iterative re-classification: each atom goes to the class whose average profile
   (leave-one-out, so an atom never votes for itself) is nearest; repeat until no atom moves.
4. Local re-classification: the class averages seen by an atom are scaled by the brightness
   of the element atoms within ``local_radius`` (shrunk towards 1 where few neighbours
   exist), which cancels slow intensity drift across the particle; repeat until no atom moves.
5. Confidence: the posterior margin between the best and the second-best class, from the
   spread of the profiles along the direction separating those two classes.

Atoms whose feature ``locked`` is True keep their species and still count in the averages.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, sparse
from scipy.spatial import cKDTree

from .geometry import voxel_to_specimen
from .model import ATOMIC_NUMBERS, AtomModel, InputError, Reconstruction, check_elements
from .progress import report, sub_progress
from .class_profiles import class_means, confidence_margin, profile_distances
from .sampling import atom_window, integrated_intensities, local_profiles

#: Lower end of the ADF contrast exponent (intensity ~ Z**exponent is 1.6-1.8 for ADF-STEM).
_MIN_CONTRAST_EXPONENT = 1.6

#: A mixture component at most 1/this as bright as the lightest element's is a non-atom class.
_NON_ATOM_CONTRAST = 2.0

#: Fewest noise peaks away from the particle that describe the non-atom class.
_MIN_NOISE_PEAKS = 100

#: The measured non-atom class is not used when it would leave more than this share of the
#: peaks non-atoms.
_MAX_NOISE_SHARE = 0.75

def _fit_mixture(values, k, rng, n_init=4, iterations=300):
    """1D Gaussian mixture of ``k`` components by EM, best of ``n_init`` starts.

    The first start is k-means from evenly spaced quantiles, the others k-means from random
    data points (``rng``). Returns means, variances, weights (sorted by mean) and the BIC.
    """
    x = values.astype(np.float64)
    starts = [np.quantile(x, (np.arange(k) + 0.5) / k)] + [np.sort(rng.choice(x, k, replace=False))
                                                          for _ in range(n_init - 1)]
    best = max((_em(x, k, means, iterations) for means in starts), key=lambda fit: fit[3])
    means, variances, weights, log_lik = best
    order = np.argsort(means)
    bic = -2 * log_lik + (3 * k - 1) * np.log(len(x))
    return means[order], variances[order], weights[order], bic


def _em(x, k, means, iterations):
    """EM for a 1D Gaussian mixture from k-means started at ``means``; returns means, variances,
    weights and the log-likelihood."""
    spread = max(np.var(x), 1e-30)
    for _ in range(50):  # k-means
        label = np.argmin(np.abs(x[:, None] - means[None]), axis=1)
        means = np.array([x[label == c].mean() if np.any(label == c) else means[c] for c in range(k)])
    variances = np.array([np.var(x[label == c]) if np.count_nonzero(label == c) > 1 else spread
                          for c in range(k)]) + 1e-6 * spread
    weights = np.bincount(label, minlength=k) / len(x) + 1e-3
    weights /= weights.sum()
    log_lik = -np.inf
    for _ in range(iterations):
        log_p = (np.log(weights) - 0.5 * np.log(2 * np.pi * variances)
                 - 0.5 * (x[:, None] - means) ** 2 / variances)
        top = log_p.max(axis=1, keepdims=True)
        total = top[:, 0] + np.log(np.exp(log_p - top).sum(axis=1))
        resp = np.exp(log_p - total[:, None])
        n_c = resp.sum(axis=0) + 1e-12
        weights = n_c / len(x)
        means = (resp * x[:, None]).sum(axis=0) / n_c
        variances = (resp * (x[:, None] - means) ** 2).sum(axis=0) / n_c + 1e-6 * spread
        new = total.sum()
        if new - log_lik < 1e-8 * abs(new):
            break
        log_lik = new
    return means, variances, weights, new


def _initial_classes(intensity, elements, rng):
    """Class index per atom (0 = non-atom, 1.. = elements) from the intensity mixture, and
    whether a non-atom class was found.

    Mixtures of 1 .. len(elements) + 2 components are tried in order of BIC. Going down from
    the brightest component, a component joins the current element's group unless it is
    dimmer than the group's brightest by at least the square root of the ADF contrast expected
    between that element and the next lighter one, (Z2/Z1)**1.6 (half the expected contrast
    in log scale): then it starts the next element's group. Below the lightest element, a
    component at most 1/2 as bright as that group's brightest starts the non-atom class. The first mixture that yields a group for every element is used, so e.g.
    surface and bulk atoms of one element are neither taken for two elements nor stop the
    non-atom class from being found.
    """
    n_elements = len(elements)
    n_max = n_elements + 2
    if len(intensity) < 3 * n_max:
        raise InputError(f"only {len(intensity)} atoms: too few to estimate {n_elements} element class(es) "
                         "and a non-atom class")
    z = np.array([ATOMIC_NUMBERS[e] for e in elements], dtype=np.float64)
    needed = np.sqrt((z[1:] / z[:-1]) ** _MIN_CONTRAST_EXPONENT)
    fits = [_fit_mixture(intensity, k, rng) for k in range(1, n_max + 1)]
    for means, variances, weights, _ in sorted(fits, key=lambda fit: fit[3]):
        group = np.zeros(len(means), dtype=np.int64)  # 0 = non-atom, i = elements[i - 1]
        element, top = n_elements, means[-1]
        for c in range(len(means) - 1, -1, -1):
            contrast = needed[element - 2] if element >= 2 else _NON_ATOM_CONTRAST
            if means[c] * contrast <= top:  # clearly dimmer than this group's brightest: next class
                element, top = element - 1, means[c]
                if element == 0:
                    break
            group[c] = element
        if np.all(np.isin(np.arange(1, n_elements + 1), group)) and np.all(means[group > 0] > 0):
            break
    else:
        raise InputError(f"{n_elements} elements ({', '.join(elements)}) requested but the integrated "
                         "intensities do not show that many distinct classes with the contrast expected "
                         "between them: check the element list or the reconstruction")
    log_p = np.log(weights) - 0.5 * np.log(variances) - 0.5 * (intensity[:, None] - means) ** 2 / variances
    label = group[np.argmax(log_p, axis=1)]
    return label, bool(np.any(group == 0))


def noise_peaks(volume, atoms: AtomModel, voxel_size, *, clearance=5.0) -> AtomModel:
    """Local maxima (26 neighbours) of ``volume`` with a positive value farther than
    ``clearance`` Å from every atom: peaks of noise alone, outside the particle. Their
    intensities show what a noise peak looks like in this reconstruction, at its dose."""
    volume = np.asarray(volume, dtype=np.float32)
    peaks = np.argwhere((ndimage.maximum_filter(volume, size=3, mode="nearest") == volume) & (volume > 0))
    positions = voxel_to_specimen(peaks, volume.shape, voxel_size)
    if len(atoms):
        positions = positions[cKDTree(atoms.positions).query(positions)[0] > clearance]
    return AtomModel(positions)


def noise_limit(noise_intensity, quantile) -> float:
    """The integrated intensity a peak must exceed to be told from noise: the ``quantile`` of
    the ``noise_intensity`` of peaks away from the particle (noise alone exceeds it in a
    fraction ``1 - quantile`` of its peaks)."""
    return float(np.quantile(noise_intensity, quantile))


def _reassign(profiles, label, active, locked, neighbours, max_iterations, progress, stage):
    """Nearest-average re-assignment among ``active`` classes until no atom changes."""
    n_classes = len(active)
    for iteration in range(max_iterations):
        report(progress, min(0.99, iteration / max_iterations), f"{stage}: iteration {iteration + 1}")
        means = class_means(profiles, label, n_classes, neighbours)
        dist = np.where(active[None], profile_distances(profiles, means), np.inf)
        new = np.where(locked, label, np.argmin(dist, axis=1))
        changed = int(np.count_nonzero(new != label))
        label = new
        if changed == 0:
            break
    return label


def classify_atoms(reconstruction: Reconstruction, atoms: AtomModel, elements, *, box=5, window=None,
                   local_radius=10.0, ambiguity_threshold=0.8, max_iterations=30, noise_clearance=5.0,
                   noise_quantile=0.99, seed=0, progress=None) -> AtomModel:
    """Species of traced atoms from their local volume profiles, with confidence and doubts.

    reconstruction : the volume and voxel size (Å) the atoms were traced in.
    atoms : positions (x, y, z Å); atoms whose feature ``locked`` is True keep their species
        ("" = a non-atom) and still shape the class averages; atoms whose feature ``placed`` is
        True (placed by hand) are atoms: never the non-atom class.
    elements : element symbols lightest first, e.g. ``("Fe", "Pt")`` or ``"Fe,Pt"``.
    box : edge (voxels) of the cube of each atom's profile and integrated intensity.
    window : width (Å) of the Gaussian weight on the profiles (a matched filter, see
        :func:`local_profiles`); None = :func:`atom_window` (the width of the brightest atoms'
        mean profile); 0 = unweighted.
    local_radius : radius (Å) of the neighbourhood of the local brightness scale; 0 = global only.
    ambiguity_threshold : atoms whose confidence is below it are flagged ``ambiguous``.
    max_iterations : cap on each re-assignment loop.
    noise_clearance, noise_quantile : local maxima of the volume farther than ``noise_clearance``
        Å from every atom are noise peaks (:func:`noise_peaks`). With at least 100 of them, a
        free peak whose integrated intensity is below their ``noise_quantile`` (:func:`noise_limit`)
        is a non-atom, whatever the intensity mixture and the profiles say: the non-atom class is
        measured where there is nothing but noise, not only guessed from the atoms' histogram,
        which one element at low dose cannot split. When that would leave more than 3/4 of the
        free peaks non-atoms, no atoms stand out of the noise and the mixture and the profiles
        decide alone.
        0 = the intensity mixture and the profiles alone.
    seed : for the random starts of the intensity mixture model.
    progress : ``progress(fraction, message)``; raise :class:`~napari_aet.progress.Cancelled` to stop.

    Returns a copy of ``atoms`` with ``species`` set ("" for non-atoms) and features
    ``intensity`` (box-integrated), ``class_index`` (0 = non-atom, i = ``elements[i-1]``),
    ``non_atom``, ``confidence`` (0..1) and ``ambiguous``.
    """
    elements = check_elements(elements)
    if not isinstance(reconstruction, Reconstruction):
        raise InputError("classify_atoms needs a Reconstruction (volume and voxel size); got "
                         f"{type(reconstruction).__name__}")
    if len(atoms) == 0:
        raise InputError("no atoms to classify: trace atoms first")
    report(progress, 0.0, "measuring atom profiles")
    if window is None:
        window = atom_window(reconstruction.volume, atoms, reconstruction.voxel_size)
    profiles = local_profiles(reconstruction.volume, atoms, reconstruction.voxel_size, box=box, window=window)
    intensity = profiles.sum(axis=1, dtype=np.float64)
    locked = atoms.features["locked"].astype(bool)
    species_index = {"": 0, **{e: i + 1 for i, e in enumerate(elements)}}
    unknown = set(atoms.species[locked].tolist()) - set(species_index)
    if unknown:
        raise InputError(f"locked atoms carry species {sorted(unknown)} not among the elements {elements}")
    locked_class = np.array([species_index[s] for s in atoms.species[locked]], dtype=np.int64)

    report(progress, 0.05, "initial classes from the intensity histogram")
    free = ~locked
    label = np.zeros(len(atoms), dtype=np.int64)
    label[locked] = locked_class
    has_non_atoms = np.any(locked_class == 0)
    if np.count_nonzero(free):
        label[free], found_non_atoms = _initial_classes(intensity[free], elements,
                                                               np.random.default_rng(seed))
        has_non_atoms |= found_non_atoms
    noise = (noise_peaks(reconstruction.volume, atoms, reconstruction.voxel_size, clearance=noise_clearance)
             if noise_quantile else AtomModel(np.zeros((0, 3))))
    below_noise = np.zeros(len(atoms), bool)
    if len(noise) >= _MIN_NOISE_PEAKS:
        limit = noise_limit(integrated_intensities(reconstruction.volume, noise, reconstruction.voxel_size, box=box,
                                                   window=window), noise_quantile)
        below_noise = free & (intensity <= limit)
        if np.count_nonzero(below_noise | (free & (label == 0))) > _MAX_NOISE_SHARE * np.count_nonzero(free):
            below_noise[:] = False  # no atoms stand out of this noise: the mixture and profiles decide alone
        label[below_noise] = 0
        has_non_atoms |= np.any(below_noise)
    active = np.ones(len(elements) + 1, dtype=bool)
    active[0] = has_non_atoms
    settled = locked | below_noise  # no profile makes a peak as faint as noise an atom

    report(progress, 0.15, "re-classifying by profile")
    label = _reassign(profiles, label, active, settled, None, max_iterations, sub_progress(progress, 0.15, 0.45),
                      "global re-classification")
    neighbours = None
    if local_radius > 0:
        report(progress, 0.45, "re-classifying against local class averages")
        neighbours = cKDTree(atoms.positions).sparse_distance_matrix(
            cKDTree(atoms.positions), local_radius, output_type="coo_matrix")
        neighbours = sparse.csr_matrix((np.ones(neighbours.nnz, np.float32), (neighbours.row, neighbours.col)),
                                       shape=(len(atoms),) * 2)
        neighbours.setdiag(0)
        neighbours.eliminate_zeros()
        label = _reassign(profiles, label, active, settled, neighbours, max_iterations,
                          sub_progress(progress, 0.45, 0.9), "local re-classification")
    placed = ~locked & atoms.features.get("placed", np.zeros(len(atoms), bool)).astype(bool) & (label == 0)
    if np.any(placed):  # a person placed these: atoms, of the element whose average profile is nearest
        means = class_means(profiles, label, len(elements) + 1, neighbours)[placed]
        label[placed] = 1 + np.argmin(profile_distances(profiles[placed], means)[:, 1:], axis=1)
    report(progress, 0.9, "confidence")
    confidence = np.where(locked, 1.0, confidence_margin(profiles, label, active, neighbours))
    species = np.array([""] + list(elements), dtype=object)[label]
    report(progress, 1.0, "classified")
    return AtomModel(atoms.positions, species, {
        **atoms.features, "intensity": intensity, "class_index": label, "non_atom": label == 0,
        "confidence": confidence, "ambiguous": ~locked & (confidence < ambiguity_threshold)})


#: ADF-STEM contrast exponent used to predict the intensity ratio of two elements (Z**1.6-1.8).
ADF_EXPONENT = 1.7
#: Elements whose predicted ADF intensities differ by less than this factor cannot be told apart.
SEPARABLE_RATIO = 1.15


def species_warnings(atoms: AtomModel, elements, *, exponent=ADF_EXPONENT, tolerance=2.0) -> list[str]:
    """What classified ``atoms`` say against the element list, as sentences (empty: nothing).

    * an element no atom was given;
    * two elements neighbouring in Z whose ADF intensities (∝ Z**exponent) differ by less than
      :data:`SEPARABLE_RATIO`: intensities cannot tell them apart (e.g. Pt and Au, 2%);
    * two neighbouring classes whose measured median intensity ratio is off the predicted one by
      more than a factor ``tolerance`` (e.g. Fe,Pt,Au on an FePt particle, where noise peaks
      become Fe, Fe becomes Pt and Pt becomes Au).
    """
    elements = check_elements(elements)
    intensity, species = np.asarray(atoms.features["intensity"], float), atoms.species
    medians = {e: float(np.median(intensity[species == e])) for e in elements if np.any(species == e)}
    out = [f"no atom was classified as {e}: check that the sample holds {e}" for e in elements if e not in medians]
    for light, heavy in zip(elements, elements[1:]):
        expected = (ATOMIC_NUMBERS[heavy] / ATOMIC_NUMBERS[light]) ** exponent
        if expected < SEPARABLE_RATIO:
            out.append(f"{light} and {heavy} differ by only {100 * (expected - 1):.0f}% in ADF intensity "
                       f"(Z^{exponent:g}): their intensities cannot tell them apart")
        if light in medians and heavy in medians and medians[light] > 0:  # alike or not: a clear contradiction
            measured = medians[heavy] / medians[light]
            if not expected / tolerance <= measured <= expected * tolerance:
                out.append(f"the atoms classified {heavy} are {measured:.1f}x as bright as those classified "
                           f"{light}, where ADF contrast predicts about {expected:.1f}x: the element list "
                           "may not match the sample")
    return out
