# Copyright (c) mm_efficientconv contributors. All rights reserved.
import math

import numpy as np
import pytest
from mmengine.registry import TRANSFORMS, DefaultScope

import mm_efficientconv.datasets.transforms  # noqa: F401  (registers RandomGamma)
from mm_efficientconv.datasets.transforms import RandomGamma


def naive_gamma(img, gamma):
    """Per pixel, straight from the definition."""
    out = np.empty_like(img)
    for idx, v in np.ndenumerate(img):
        out[idx] = int(round(255.0 * (v / 255.0)**gamma))
    return out


def test_registered_in_root_and_visible_from_codebases():
    assert TRANSFORMS.get('RandomGamma') is RandomGamma
    for scope in ('mmpretrain', 'mmdet', 'mmseg'):
        with DefaultScope.overwrite_default_scope(scope):
            t = TRANSFORMS.build(dict(type='RandomGamma', gamma_range=(0.5, 2.0)))
        assert isinstance(t, RandomGamma)
        assert t.gamma_range == (0.5, 2.0)


@pytest.mark.parametrize('gamma', [0.5, 0.8, 1.0, 1.7])
def test_uint8_matches_definition(gamma):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    t = RandomGamma(gamma_range=(gamma, gamma))
    out = t(dict(img=img.copy()))
    assert out['img'].dtype == np.uint8
    assert out['gamma'] == pytest.approx(gamma)
    np.testing.assert_array_equal(out['img'], naive_gamma(img, gamma))
    if gamma == 1.0:
        np.testing.assert_array_equal(out['img'], img)


def test_float_image_keeps_dtype_and_values():
    img = np.linspace(0, 255, 24, dtype=np.float32).reshape(2, 4, 3)
    out = RandomGamma(gamma_range=(2.0, 2.0))(dict(img=img.copy()))['img']
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, 255.0 * (img / 255.0)**2.0, rtol=1e-5, atol=1e-4)


def test_gamma_is_log_uniform_in_range():
    np.random.seed(0)
    t = RandomGamma(gamma_range=(0.5, 2.0))
    img = np.full((2, 2, 3), 128, dtype=np.uint8)
    gammas = np.array([t(dict(img=img.copy()))['gamma'] for _ in range(4000)])
    assert gammas.min() >= 0.5 and gammas.max() <= 2.0
    # log-uniform: symmetric in log space around log(1) = 0, flat histogram
    logs = np.log(gammas)
    assert abs(np.median(logs)) < 0.05
    hist, _ = np.histogram(logs, bins=4, range=(math.log(0.5), math.log(2.0)))
    assert hist.min() > 0.85 * hist.max()
    # darkening (gamma > 1) and brightening both happen
    assert (gammas > 1).mean() == pytest.approx(0.5, abs=0.05)


def test_seeded_runs_repeat():
    img = np.random.default_rng(1).integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    t = RandomGamma()
    np.random.seed(3)
    a = [t(dict(img=img.copy()))['img'] for _ in range(3)]
    np.random.seed(3)
    b = [t(dict(img=img.copy()))['img'] for _ in range(3)]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_prob():
    img = np.random.default_rng(2).integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    skipped = RandomGamma(gamma_range=(2.0, 2.0), prob=0.0)(dict(img=img.copy()))
    np.testing.assert_array_equal(skipped['img'], img)
    assert skipped['gamma'] == 1.0
    np.random.seed(0)
    t = RandomGamma(gamma_range=(2.0, 2.0), prob=0.3)
    applied = [t(dict(img=img.copy()))['gamma'] != 1.0 for _ in range(2000)]
    assert np.mean(applied) == pytest.approx(0.3, abs=0.04)


@pytest.mark.parametrize('kwargs', [
    dict(gamma_range=(0.0, 1.0)),
    dict(gamma_range=(1.5, 1.0)),
    dict(gamma_range=(-1, 2)),
    dict(gamma_range=1.2),
    dict(gamma_range=(0.5, 1.0, 2.0)),
    dict(prob=1.5),
    dict(prob=-0.1),
])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError, match='gamma_range|prob'):
        RandomGamma(**kwargs)


def test_repr():
    assert repr(RandomGamma((0.7, 1.4), prob=0.5)) == \
        'RandomGamma(gamma_range=(0.7, 1.4), prob=0.5)'
