"""The bundled segmenters on validation cases of every labelled source of the data pack.

Floors sit well under the model cards' figures (so the test is about regressions, not noise):
the default ``refined`` keeps the pixel model's lung accuracy on each collection with zero
topological errors, and a black band under the film (as on Montgomery films) does not move it.
"""

from collections import defaultdict

import numpy as np
import pytest

from anatomix.anatomy import dice
from anatomix.data.cases import labelled_cases, split_cases
from anatomix.evaluation import topology_errors
from anatomix.io import read_mask, read_radiograph
from anatomix.io.record import Radiograph


@pytest.fixture(scope="module")
def val_cases(data_root):
    per = defaultdict(list)
    for c in split_cases(labelled_cases(data_root))[1]:
        per[c.source].append(c)
    return {s: cs[:6] for s, cs in per.items()}


@pytest.fixture(scope="module")
def refined():
    from anatomix.models import load_segmenter

    return load_segmenter()


def test_default_is_refined_and_accurate_on_every_source(val_cases, refined):
    assert refined.family == "refined"
    assert set(val_cases) == {"jsrt", "montgomery", "shenzhen"}
    for source, cases in val_cases.items():
        lungs, hearts = [], []
        for case in cases:
            seg = refined.predict([read_radiograph(case.image)])[0]
            assert not any(topology_errors(seg).values()), case.case_id
            lungs += [dice(seg.masks[k], read_mask(case.masks[k])) for k in ("lungR", "lungL")]
            if "heart" in case.masks:
                hearts.append(dice(seg.masks["heart"], read_mask(case.masks["heart"])))
        assert np.mean(lungs) > 0.92, source  # first six cases per source: JSRT 0.975, Montgomery 0.980, Shenzhen 0.936
        if hearts:
            assert np.mean(hearts) > 0.91


def test_a_black_band_under_the_film_changes_little(val_cases, refined):
    case = val_cases["jsrt"][0]
    r = read_radiograph(case.image)
    band = Radiograph(np.pad(r.pixels, ((0, 160), (0, 0))))
    a, b = refined.predict([r])[0], refined.predict([band])[0]
    assert np.abs(a.landmarks - b.landmarks).max() < 2.0  # px, same frame: the band is below
    assert dice(a.masks["lungR"], b.masks["lungR"][: r.shape[0]]) > 0.98
