"""SklearnDigitsDataset: the demo's real data."""
import numpy as np
import pytest
from mmengine.registry import DefaultScope

from mm_efficientconv.datasets import SklearnDigitsDataset


@pytest.fixture(autouse=True)
def _mmpretrain_scope():
    """Components resolve in mmpretrain's scope, as in an mmpretrain config."""
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        yield


def test_split_is_stratified_disjoint_and_complete():
    train = SklearnDigitsDataset(split='train', image_size=16)
    test = SklearnDigitsDataset(split='test', image_size=16)
    assert len(train) + len(test) == 1797
    assert abs(len(test) - 0.2 * 1797) <= 10
    train_labels = np.array([train.get_data_info(i)['gt_label'] for i in range(len(train))])
    test_labels = np.array([test.get_data_info(i)['gt_label'] for i in range(len(test))])
    assert set(train_labels) == set(test_labels) == set(range(10))
    # no image of the held-out split appears in the training split
    train_imgs = {train.get_data_info(i)['img'].tobytes() for i in range(len(train))}
    overlap = sum(test.get_data_info(i)['img'].tobytes() in train_imgs for i in range(len(test)))
    assert overlap <= 2  # a couple of digits in load_digits are exact duplicates


def test_items_are_packed_images():
    ds = SklearnDigitsDataset(split='test', image_size=32)
    item = ds[0]
    assert tuple(item['inputs'].shape) == (3, 32, 32)
    assert item['inputs'].dtype.is_floating_point is False
    assert int(item['data_samples'].gt_label) == ds.get_data_info(0)['gt_label']


def test_seeded_split_is_deterministic():
    a = SklearnDigitsDataset(split='test', seed=3, image_size=8)
    b = SklearnDigitsDataset(split='test', seed=3, image_size=8)
    c = SklearnDigitsDataset(split='test', seed=4, image_size=8)
    same = all(np.array_equal(a.get_data_info(i)['img'], b.get_data_info(i)['img']) for i in range(len(a)))
    assert same
    assert not all(np.array_equal(a.get_data_info(i)['img'], c.get_data_info(i)['img'])
                   for i in range(min(len(a), len(c))))


def test_bad_split():
    with pytest.raises(ValueError, match='split'):
        SklearnDigitsDataset(split='val')
