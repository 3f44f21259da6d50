import numpy as np
import pytest

from napari_aet.elements import MIN_DISTANCE_FRACTION, RADII, close_pairs, min_distance_table, parse_min_distance
from napari_aet.model import ATOMIC_NUMBERS, InputError


def test_every_element_has_a_radius_and_pairs_a_fraction_of_their_sum():
    assert set(RADII) == set(ATOMIC_NUMBERS) and all(0.2 < r < 3.0 for r in RADII.values())
    table = min_distance_table("Fe,Pt")
    assert table[0, 1] == table[1, 0] == pytest.approx(MIN_DISTANCE_FRACTION * (RADII["Fe"] + RADII["Pt"]))
    # below the shortest distances of the elements' crystals: bcc Fe 2.48, Si 2.35, fcc Pt 2.77, bcc Ta 2.86 Å
    for element, shortest in (("Fe", 2.48), ("Si", 2.35), ("Pt", 2.77), ("Ta", 2.86), ("Pd", 2.75)):
        assert 0.7 * shortest < min_distance_table(element)[0, 0] < 0.9 * shortest, element


def test_user_overrides_one_number_or_some_pairs():
    assert np.all(min_distance_table(("Fe", "Pt"), 2.5) == 2.5)
    table = min_distance_table("Fe,Pt", {"Pt-Fe": 2.4, ("Pt",): 2.6, "Au": 9.0})
    default = min_distance_table("Fe,Pt")
    assert table[0, 1] == table[1, 0] == 2.4 and table[1, 1] == 2.6 and table[0, 0] == default[0, 0]
    with pytest.raises(InputError, match="positive"):
        min_distance_table("Fe,Pt", -1)
    with pytest.raises(InputError, match="number of Å"):
        min_distance_table("Fe,Pt", {"Fe-Pt": "far"})
    with pytest.raises(InputError, match="unknown element"):
        min_distance_table("Fe,Pt", {"Fe-Xx": 2.0})
    with pytest.raises(InputError, match="not a pair"):
        min_distance_table("Fe,Pt", {"Fe-Pt-Fe": 2.0})


def test_an_override_written_as_text_is_one_number_or_pairs():
    assert parse_min_distance(" 2.2 ") == 2.2
    assert parse_min_distance("Pt-Fe=2.4, Pt=2.6") == {"Pt-Fe": 2.4, "Pt-Pt": 2.6}
    table = min_distance_table("Fe,Pt", parse_min_distance("Pt-Fe=2.4,Pt=2.6"))
    assert table[0, 1] == 2.4 and table[1, 1] == 2.6 and table[0, 0] == min_distance_table("Fe")[0, 0]
    for text, message in (("far", "a number, or pairs"), ("0", "positive"), ("Fe-Pt=", "Fe-Pt must be a number"),
                          ("Fe-Pt=2.3,Pt", "expected PAIR=Å"), ("Fe-Xx=2", "unknown element"),
                          ("22", "22 Å: no two neighbouring atoms are that far apart")):
        with pytest.raises(InputError, match=message):
            parse_min_distance(text)


def test_close_pairs_match_a_brute_force_search():
    rng = np.random.default_rng(0)
    positions = rng.uniform(0, 12, size=(300, 3))
    species = rng.integers(0, 2, 300)
    table = np.array([[1.5, 2.0], [2.0, 2.5]])
    distance = np.linalg.norm(positions[:, None] - positions[None], axis=2)
    expected = (distance < table[species[:, None], species[None]]) & np.triu(np.ones((300, 300), bool), 1)
    pairs = close_pairs(positions, species, table)
    assert set(map(tuple, pairs)) == set(zip(*np.nonzero(expected)))
    others = positions[:40] + 0.3
    cross = close_pairs(positions, species, table, others, species[:40])
    distance_to = np.linalg.norm(positions[:, None] - others[None], axis=2)
    expected = distance_to < table[species[:, None], species[None, :40]]
    assert set(map(tuple, cross)) == set(zip(*np.nonzero(expected)))
