# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""The digit-scene writer: real on-disk formats read by mmdet / mmseg, labels
that agree with the pixels, determinism, and split hygiene (no held-out scene
holds a digit image seen in training)."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mm_efficientconv.datasets.digit_scenes import (DIGIT_CLASSES, IGNORE_INDEX, MANIFEST,
                                                    SEG_CLASSES, compose_scene, seg_palette,
                                                    split_digits, write_digit_scenes)

SMALL = dict(num_train=12, num_val=6, canvas_size=96, digits_per_image=(2, 4), digit_size=(16, 36))


@pytest.fixture(scope='module')
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp('scenes') / 'digit_scenes'
    info = write_digit_scenes(str(root), **SMALL)
    return root, info


def _coco(root, split):
    return json.loads((root / 'annotations' / f'instances_{split}.json').read_text())


def _label(root, name):
    return np.asarray(Image.open(root / 'SegmentationClass' / f'{name}.png'))


def test_layout_and_coco_json(scenes):
    root, info = scenes
    assert info['written'] and info['data_root'] == str(root)
    for split, num in (('train', 12), ('val', 6)):
        coco = _coco(root, split)
        assert [c['name'] for c in coco['categories']] == list(DIGIT_CLASSES)
        assert [c['id'] for c in coco['categories']] == list(range(1, 11))
        assert len(coco['images']) == num
        names = (root / 'ImageSets' / 'Segmentation' / f'{split}.txt').read_text().split()
        assert [im['file_name'] for im in coco['images']] == [n + '.jpg' for n in names]
        for im in coco['images']:
            assert (root / 'JPEGImages' / im['file_name']).is_file()
            assert (im['width'], im['height']) == (96, 96)
        per_image = {}
        for ann in coco['annotations']:
            per_image.setdefault(ann['image_id'], []).append(ann)
            x, y, w, h = ann['bbox']
            assert 0 <= x and 0 <= y and x + w <= 96 and y + h <= 96 and w > 0 and h > 0
            assert ann['iscrowd'] == 0 and ann['area'] > 0
        # every scene holds 2 to 4 digits (a digit without a free place may be dropped)
        assert set(per_image) == {im['id'] for im in coco['images']}
        assert all(1 <= len(v) <= 4 for v in per_image.values())


def test_labels_agree_with_pixels(scenes):
    """Each box is the extent of its digit's ink in the label map; ink pixels
    are darker than the background; the label PNG is indexed colour with the
    VOC palette and values 0..10 or 255."""
    root, _ = scenes
    coco = _coco(root, 'train')
    images = {im['id']: im['file_name'][:-4] for im in coco['images']}
    for ann in coco['annotations']:
        name = images[ann['image_id']]
        label = _label(root, name)
        x, y, w, h = (int(v) for v in ann['bbox'])
        ink = label == ann['category_id']  # category id d + 1 == segmentation class d + 1
        box = np.zeros_like(ink)
        box[y:y + h, x:x + w] = True
        mine = ink & box
        assert mine.any()
        ys, xs = np.nonzero(mine)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
        assert ann['area'] == mine.sum()
    for name in images.values():
        png = Image.open(root / 'SegmentationClass' / f'{name}.png')
        assert png.mode == 'P'
        assert png.getpalette()[:33] == [c for rgb in seg_palette() for c in rgb]
        label = np.asarray(png)
        assert set(np.unique(label)) <= set(range(len(SEG_CLASSES)))  # no ignore band by default
        img = np.asarray(Image.open(root / 'JPEGImages' / f'{name}.jpg')).astype(float).mean(-1)
        ink, bg = (label >= 1) & (label <= 10), label == 0
        assert img[ink].mean() < img[bg].mean() - 60


def test_ignore_edges_marks_only_the_soft_edge(scenes, tmp_path):
    """``ignore_edges=True``: the same images and boxes; 255 only where the
    default labels say background, next to ink; everything else equal."""
    root, _ = scenes
    other = tmp_path / 'edges'
    write_digit_scenes(str(other), ignore_edges=True, **SMALL)
    assert _coco(other, 'train')['annotations'] == _coco(root, 'train')['annotations']
    names = (root / 'ImageSets' / 'Segmentation' / 'train.txt').read_text().split()
    ignored = 0
    for name in names:
        assert (other / 'JPEGImages' / f'{name}.jpg').read_bytes() == \
            (root / 'JPEGImages' / f'{name}.jpg').read_bytes()
        plain, edges = _label(root, name), _label(other, name)
        band = edges == IGNORE_INDEX
        ignored += band.sum()
        assert (plain[band] == 0).all()
        np.testing.assert_array_equal(edges[~band], plain[~band])
        ink = (plain >= 1) & (plain <= 10)
        near_ink = np.zeros_like(ink)
        # the soft edge lies within one upsampled digit pixel (<= 36 / 8 px) of the ink
        for dy in range(-5, 6):
            for dx in range(-5, 6):
                near_ink |= np.roll(np.roll(ink, dy, 0), dx, 1)
        assert not (band & ~near_ink).any()
    assert ignored > 0


def test_split_hygiene(scenes):
    root, _ = scenes
    manifest = json.loads((root / MANIFEST).read_text())
    train_pool, val_pool = set(manifest['pools']['train']), set(manifest['pools']['val'])
    assert not train_pool & val_pool and len(train_pool | val_pool) == 1797
    used = {split: {a['digit_index'] for a in _coco(root, split)['annotations']}
            for split in ('train', 'val')}
    assert used['train'] <= train_pool and used['val'] <= val_pool
    assert not used['train'] & used['val']
    # the digits are scikit-learn's: the class of each annotation is the digit's target
    from sklearn.datasets import load_digits
    target = load_digits().target
    for split in ('train', 'val'):
        for ann in _coco(root, split)['annotations']:
            assert ann['category_id'] == target[ann['digit_index']] + 1


def test_split_is_stratified_and_seeded():
    from sklearn.datasets import load_digits
    target = load_digits().target
    pools = split_digits(0.25, seed=0)
    for cls in range(10):
        n = int((target == cls).sum())
        assert int((target[pools['val']] == cls).sum()) == round(0.25 * n)
    again = split_digits(0.25, seed=0)
    other = split_digits(0.25, seed=1)
    assert np.array_equal(pools['val'], again['val'])
    assert not np.array_equal(pools['val'], other['val'])


def _digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob('*')) if p.is_file()}


def test_deterministic_and_reused(scenes, tmp_path):
    root, _ = scenes
    again = write_digit_scenes(str(tmp_path / 'again'), **SMALL)
    assert again['written']
    assert _digest(tmp_path / 'again') == _digest(root)
    # the same arguments: nothing is rewritten
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / 'again').rglob('*')}
    assert not write_digit_scenes(str(tmp_path / 'again'), **SMALL)['written']
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / 'again').rglob('*')} == before
    # another seed gives other scenes
    other = write_digit_scenes(str(tmp_path / 'other'), seed=1, **SMALL)
    assert _digest(tmp_path / 'other') != _digest(root) and other['written']


def test_never_overwrites_without_permission(tmp_path):
    root = tmp_path / 'scenes'
    write_digit_scenes(str(root), **SMALL)
    with pytest.raises(FileExistsError, match='overwrite=True'):
        write_digit_scenes(str(root), **dict(SMALL, num_val=7))
    info = write_digit_scenes(str(root), overwrite=True, **dict(SMALL, num_val=7))
    assert info['written'] and len(_coco(root, 'val')['images']) == 7
    foreign = tmp_path / 'foreign'
    foreign.mkdir()
    (foreign / 'keep.txt').write_text('mine')
    with pytest.raises(FileExistsError, match='other files'):
        write_digit_scenes(str(foreign), **SMALL)
    assert (foreign / 'keep.txt').read_text() == 'mine'
    # nothing half-written is left beside the roots
    assert sorted(p.name for p in tmp_path.iterdir()) == ['foreign', 'scenes']


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_train=0), 'num_train'),
    (dict(canvas_size=16), 'canvas_size'),
    (dict(digits_per_image=(3, 2)), 'digits_per_image'),
    (dict(digit_size=(4, 20)), 'digit_size'),
    (dict(digit_size=(20, 200)), 'digit_size'),
    (dict(test_fraction=1.0), 'test_fraction'),
    (dict(jpeg_quality=0), 'jpeg_quality'),
    (dict(ignore_edges=1), 'ignore_edges'),
])
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        write_digit_scenes(str(tmp_path / 'x'), **kwargs)
    assert not (tmp_path / 'x').exists()


def test_compose_scene_boxes_do_not_overlap():
    from sklearn.datasets import load_digits
    digits = load_digits()
    rng = np.random.default_rng(0)
    pool = np.arange(len(digits.target))
    for _ in range(20):
        img, seg, objects = compose_scene(rng, digits.images, digits.target, pool, 96, (4, 4),
                                          (16, 36))
        assert img.shape == (96, 96, 3) and img.dtype == np.uint8 and seg.shape == (96, 96)
        boxes = [o['box'] for o in objects]
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def test_read_by_mmdet_coco_dataset(scenes, mmdet_scope):
    from mmdet.datasets import CocoDataset
    root, info = scenes
    ds = CocoDataset(
        data_root=str(root), metainfo=dict(classes=DIGIT_CLASSES), test_mode=True,
        pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
                  dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',
                                                        'img_shape'))],
        **info['det']['val'])
    coco = _coco(root, 'val')
    assert len(ds) == len(coco['images'])
    sample = ds[0]
    assert tuple(sample['inputs'].shape) == (3, 96, 96)
    anns = [a for a in coco['annotations'] if a['image_id'] == coco['images'][0]['id']]
    gt = sample['data_samples'].gt_instances
    assert sorted(gt.labels.tolist()) == sorted(a['category_id'] - 1 for a in anns)


def test_read_by_mmseg_dataset(scenes, mmseg_scope):
    from mmseg.datasets import BaseSegDataset
    root, info = scenes
    ds = BaseSegDataset(
        data_root=str(root), metainfo=dict(classes=SEG_CLASSES, palette=seg_palette()),
        pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                  dict(type='PackSegInputs')],
        **info['seg']['train'])
    assert len(ds) == 12
    sample = ds[0]
    seg = sample['data_samples'].gt_sem_seg.data[0].numpy()
    assert np.array_equal(seg, _label(root, 'train_000000'))
    assert (seg >= 1).any() and (seg == 0).any()
