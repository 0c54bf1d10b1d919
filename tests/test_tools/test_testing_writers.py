# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""The mini-dataset writers produce what the real OpenMMLab dataset classes
read, deterministically, with pixels that agree with the annotations."""
import filecmp
import json
import os
import os.path as osp
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mm_efficientconv import testing
from mm_efficientconv.testing._common import class_colour
from mm_efficientconv.testing.cifar import CIFAR10_CLASSES, CIFAR100_CLASSES
from mm_efficientconv.testing.coco import COCO_CATEGORIES
from mm_efficientconv.testing.voc import voc_palette


def _same_tree(a, b):
    files_a = sorted(osp.relpath(osp.join(d, f), a) for d, _, fs in os.walk(a) for f in fs)
    files_b = sorted(osp.relpath(osp.join(d, f), b) for d, _, fs in os.walk(b) for f in fs)
    assert files_a == files_b and files_a
    return all(filecmp.cmp(osp.join(a, f), osp.join(b, f), shallow=False) for f in files_a)


ALL_WRITERS = [
    testing.write_coco, testing.write_cityscapes, testing.write_voc12aug, testing.write_cifar10,
    testing.write_cifar100, testing.write_imagenet, testing.write_stanford_dogs
]


@pytest.mark.parametrize('writer', ALL_WRITERS, ids=lambda w: w.__name__)
def test_deterministic_with_seed(writer, tmp_path):
    writer(str(tmp_path / 'a'), seed=3)
    writer(str(tmp_path / 'b'), seed=3)
    writer(str(tmp_path / 'c'), seed=4)
    assert _same_tree(tmp_path / 'a', tmp_path / 'b')
    assert not _same_tree(tmp_path / 'a', tmp_path / 'c')


@pytest.mark.parametrize('writer, kwargs, match', [
    (testing.write_coco, dict(image_size=(4, 100)), 'image_size'),
    (testing.write_coco, dict(image_size='big'), 'image_size'),
    (testing.write_coco, dict(num_classes=81), 'num_classes'),
    (testing.write_coco, dict(num_images=0), 'num_images'),
    (testing.write_cityscapes, dict(num_classes=20), 'num_classes'),
    (testing.write_voc12aug, dict(num_classes=22), 'num_classes'),
    (testing.write_cifar10, dict(image_size=64), 'image_size'),
    (testing.write_cifar10, dict(num_images=4), 'num_images'),
    (testing.write_cifar100, dict(num_classes=101), 'num_classes'),
    (testing.write_imagenet, dict(num_classes=1001), 'num_classes'),
    (testing.write_stanford_dogs, dict(num_classes=5, num_images=4), 'num_images'),
])
def test_invalid_arguments(writer, kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        writer(str(tmp_path), **kwargs)


def _box_colour(img_rgb, box):
    x, y, w, h = (int(round(v)) for v in box)
    # the centre of the box: later boxes may cover the borders of earlier ones
    return img_rgb[y + h // 2, x + w // 2].astype(int)


# ----------------------------------------------------------------------------- COCO
def test_coco_json_layout(tmp_path):
    info = testing.write_coco(str(tmp_path), num_images=3, image_size=(64, 48), num_classes=5,
                              num_val_images=2)
    for split, count in (('train', 3), ('val', 2)):
        with open(info['ann_files'][split]) as f:
            coco = json.load(f)
        assert len(coco['images']) == count
        assert [c['id'] for c in coco['categories']] == [c[0] for c in COCO_CATEGORIES]
        assert len(coco['categories']) == 80
        assert {a['image_id'] for a in coco['annotations']} == {i['id'] for i in coco['images']}
        valid_ids = {c[0] for c in COCO_CATEGORIES[:5]}
        for ann in coco['annotations']:
            x, y, w, h = ann['bbox']
            assert ann['category_id'] in valid_ids and ann['iscrowd'] == 0
            assert 0 <= x and 0 <= y and x + w <= 64 and y + h <= 48 and w > 0 and h > 0
            assert ann['area'] == w * h
        for img in coco['images']:
            path = osp.join(info['data_root'], f'{split}2017', img['file_name'])
            with Image.open(path) as image:
                assert image.size == (64, 48)


def test_coco_read_by_mmdet_and_perfect_predictions_score_map_1(tmp_path):
    from mmcv.transforms import LoadImageFromFile
    from mmdet.datasets import CocoDataset
    from mmdet.datasets.transforms import LoadAnnotations
    from mmdet.evaluation import CocoMetric

    info = testing.write_coco(str(tmp_path), num_images=2, num_val_images=3, num_classes=4)
    train = CocoDataset(
        data_root=info['data_root'], **info['splits']['train'],
        pipeline=[LoadImageFromFile(), LoadAnnotations(with_bbox=True)])
    assert len(train) == 2
    item = train[0]
    assert item['img'].shape == (96, 128, 3)
    assert len(item['gt_bboxes']) >= 1
    # the pixels carry the class colour at the box centres (mmcv loads BGR)
    img_rgb = item['img'][..., ::-1]
    last = item['gt_bboxes'].tensor[-1].tolist()
    colour = _box_colour(img_rgb, (last[0], last[1], last[2] - last[0], last[3] - last[1]))
    expected = np.array(class_colour(int(item['gt_bboxes_labels'][-1])))
    assert np.abs(colour - expected).max() < 30

    val = CocoDataset(
        data_root=info['data_root'], **info['splits']['val'], test_mode=True,
        pipeline=[LoadImageFromFile(), LoadAnnotations(with_bbox=True)])
    metric = CocoMetric(ann_file=info['ann_files']['val'], metric='bbox')
    metric.dataset_meta = val.metainfo
    samples = []
    for i in range(len(val)):
        item = val[i]
        boxes = item['gt_bboxes'].tensor
        samples.append(
            dict(img_id=item['img_id'], ori_shape=item['ori_shape'],
                 pred_instances=dict(bboxes=boxes, scores=torch.ones(len(boxes)),
                                     labels=torch.as_tensor(item['gt_bboxes_labels']))))
    metric.process({}, samples)
    result = metric.evaluate(size=len(val))
    assert result['coco/bbox_mAP'] == pytest.approx(1.0)


def test_coco_classes_match_mmdet():
    from mmdet.datasets import CocoDataset
    assert testing.COCO_CLASSES == tuple(CocoDataset.METAINFO['classes'])


# ----------------------------------------------------------------------------- segmentation
def _iou_of_perfect_prediction(dataset):
    from mmseg.evaluation import IoUMetric
    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = dataset.metainfo
    samples = []
    for i in range(len(dataset)):
        gt = torch.from_numpy(dataset[i]['gt_seg_map'].astype(np.int64))[None]
        samples.append(dict(pred_sem_seg=dict(data=gt), gt_sem_seg=dict(data=gt)))
    metric.process({}, samples)
    return metric.evaluate(size=len(dataset))['mIoU']


def test_cityscapes_read_by_mmseg(tmp_path):
    from mmcv.transforms import LoadImageFromFile
    from mmseg.datasets import CityscapesDataset
    from mmseg.datasets.transforms import LoadAnnotations

    info = testing.write_cityscapes(str(tmp_path), num_images=3, image_size=(64, 32),
                                    num_val_images=2)
    for split, count in (('train', 3), ('val', 2)):
        ds = CityscapesDataset(
            data_root=info['data_root'], **info['splits'][split],
            pipeline=[LoadImageFromFile(), LoadAnnotations()])
        assert len(ds) == count
        item = ds[0]
        assert item['img'].shape == (32, 64, 3)
        seg = item['gt_seg_map']
        assert seg.shape == (32, 64)
        assert set(np.unique(seg)) <= set(range(19)) | {255}
        assert (seg[-1] == 255).all()  # the ignored strip
        # pixels of the labelled regions carry their class colour
        ys, xs = np.nonzero(seg == 0)
        img_rgb = item['img'][..., ::-1].astype(int)
        assert np.abs(img_rgb[ys, xs].mean(0) - class_colour(0)).max() < 15
        assert _iou_of_perfect_prediction(ds) == pytest.approx(100.0)
    # labelIds are the raw ids of the train ids
    train_ids = sorted(
        osp.join(d, f) for d, _, fs in os.walk(osp.join(tmp_path, 'gtFine', 'train'))
        for f in fs if f.endswith('labelTrainIds.png'))
    tid = np.array(Image.open(train_ids[0]))
    lid = np.array(Image.open(train_ids[0].replace('labelTrainIds', 'labelIds')))
    assert (lid[tid == 0] == 7).all() and (lid[tid == 255] == 0).all()


def test_voc12aug_read_by_mmseg(tmp_path):
    from mmcv.transforms import LoadImageFromFile
    from mmseg.datasets import PascalVOCDataset
    from mmseg.datasets.transforms import LoadAnnotations

    info = testing.write_voc12aug(str(tmp_path), num_images=3, image_size=(48, 40),
                                  num_val_images=2, num_aug_images=2)
    sizes = dict(train=3, aug=5, val=2)
    for split, count in sizes.items():
        ds = PascalVOCDataset(
            data_root=info['data_root'], **info['splits'][split],
            pipeline=[LoadImageFromFile(), LoadAnnotations()])
        assert len(ds) == count
        seg = ds[0]['gt_seg_map']
        assert seg.shape == (40, 48)
        assert set(np.unique(seg)) <= set(range(21)) | {255}
        assert _iou_of_perfect_prediction(ds) == pytest.approx(100.0)
    # the VOC masks are palette PNGs whose indices are the class ids
    png = Image.open(osp.join(tmp_path, 'SegmentationClass', '2007_000000.png'))
    assert png.mode == 'P'
    assert png.getpalette()[:6] == [*voc_palette()[0], *voc_palette()[1]]
    aug = np.array(Image.open(osp.join(tmp_path, 'SegmentationClassAug', '2007_000000.png')))
    voc = np.array(png)
    with Image.open(osp.join(tmp_path, 'SegmentationClassAug', '2007_000000.png')) as image:
        assert image.mode == 'L'
    np.testing.assert_array_equal(aug[voc != 255], voc[voc != 255])
    # aug.txt: train + SBD ids, never val ids
    lists = {
        name: Path(tmp_path, 'ImageSets', 'Segmentation', f'{name}.txt').read_text().split()
        for name in ('train', 'val', 'aug', 'trainval')
    }
    assert set(lists['train']) <= set(lists['aug'])
    assert not set(lists['val']) & set(lists['aug'])
    assert lists['trainval'] == lists['train'] + lists['val']


def test_voc_palette_is_the_standard_one():
    from mmseg.datasets import PascalVOCDataset
    assert [list(c) for c in voc_palette(21)] == PascalVOCDataset.METAINFO['palette']


# ----------------------------------------------------------------------------- classification
@pytest.mark.parametrize('cifar100', [False, True])
def test_cifar_read_by_mmpretrain(cifar100, tmp_path):
    from mmpretrain.datasets import CIFAR10, CIFAR100
    writer = testing.write_cifar100 if cifar100 else testing.write_cifar10
    cls = CIFAR100 if cifar100 else CIFAR10
    info = writer(str(tmp_path), num_images=7, num_val_images=3, num_classes=6)
    # the official md5 check rejects synthetic files; without download it is an error
    with pytest.raises((RuntimeError, AssertionError)):
        cls(data_root=info['data_root'], split='train', download=False)
    with testing.cifar_integrity_check_disabled():
        train = cls(data_root=info['data_root'], split='train', download=False)
        test = cls(data_root=info['data_root'], **info['splits']['val'], download=False)
    assert len(train) == 7 and len(test) == 3
    item = train[0]
    assert item['img'].shape == (32, 32, 3) and item['img'].dtype == np.uint8
    assert 0 <= item['gt_label'] < 6
    # the dominant colour of the image is the class colour
    centre = item['img'][8:24, 8:24].reshape(-1, 3).astype(int)
    dist = np.abs(centre - np.array(class_colour(item['gt_label']))).max(1)
    assert (dist < 20).mean() > 0.3
    # the check is restored afterwards
    with pytest.raises((RuntimeError, AssertionError)):
        cls(data_root=info['data_root'], split='test', download=False)


def test_cifar_pickles_have_the_official_keys(tmp_path):
    testing.write_cifar10(str(tmp_path), num_images=5)
    testing.write_cifar100(str(tmp_path))
    root10 = osp.join(tmp_path, 'cifar-10-batches-py')
    assert sorted(os.listdir(root10)) == sorted(
        [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch', 'batches.meta'])
    with open(osp.join(root10, 'data_batch_1'), 'rb') as f:
        batch = pickle.load(f, encoding='latin1')
    assert set(batch) == {'batch_label', 'labels', 'data', 'filenames'}
    assert batch['data'].shape == (1, 3072) and batch['data'].dtype == np.uint8
    with open(osp.join(root10, 'batches.meta'), 'rb') as f:
        assert pickle.load(f, encoding='latin1')['label_names'] == list(CIFAR10_CLASSES)
    root100 = osp.join(tmp_path, 'cifar-100-python')
    with open(osp.join(root100, 'train'), 'rb') as f:
        assert set(pickle.load(f, encoding='latin1')) == {
            'filenames', 'batch_label', 'fine_labels', 'coarse_labels', 'data'}
    with open(osp.join(root100, 'meta'), 'rb') as f:
        meta = pickle.load(f, encoding='latin1')
    assert meta['fine_label_names'] == list(CIFAR100_CLASSES)
    assert len(meta['coarse_label_names']) == 20


def test_cifar_class_names_match_mmpretrain():
    from mmpretrain.datasets.categories import CIFAR10_CATEGORIES, CIFAR100_CATEGORIES
    assert CIFAR10_CLASSES == tuple(CIFAR10_CATEGORIES)
    assert CIFAR100_CLASSES == tuple(CIFAR100_CATEGORIES)


def test_imagenet_read_by_mmpretrain(tmp_path):
    from mmcv.transforms import LoadImageFromFile
    from mmpretrain.datasets import ImageNet

    info = testing.write_imagenet(str(tmp_path), num_images=5, num_classes=3, num_val_images=2,
                                  image_size=(40, 32))
    train = ImageNet(data_root=info['data_root'], split='train', pipeline=[LoadImageFromFile()])
    val = ImageNet(data_root=info['data_root'], split='val', pipeline=[LoadImageFromFile()])
    assert len(train) == 5 and len(val) == 2
    assert len(train.CLASSES) == 1000
    assert [train.get_data_info(i)['gt_label'] for i in range(5)] == [0, 1, 2, 0, 1]
    item = train[1]
    assert item['img'].shape == (32, 40, 3)
    assert osp.basename(osp.dirname(item['img_path'])) == info['wnids'][1]
    assert info['wnids'][:2] == ['n01440764', 'n01443537']
    assert val[0]['img_path'].endswith('ILSVRC2012_val_00000001.JPEG')


def test_stanford_dogs_read_by_mmpretrain_custom_dataset(tmp_path):
    from mmcv.transforms import LoadImageFromFile
    from mmpretrain.datasets import CustomDataset

    info = testing.write_stanford_dogs(str(tmp_path), num_images=5, num_classes=3,
                                       num_val_images=3)
    for split, count in (('train', 5), ('val', 3), ('train_ann', 5), ('val_ann', 3)):
        ds = CustomDataset(data_root=info['data_root'], **info['splits'][split],
                           pipeline=[LoadImageFromFile()])
        assert len(ds) == count
        for i in range(count):
            data = ds.get_data_info(i)
            assert info['classes'][data['gt_label']] == osp.basename(
                osp.dirname(data['img_path']))
        if not info['splits'][split]['ann_file']:
            assert ds.CLASSES == info['classes']
        item = ds[0]
        assert item['img'].shape == (64, 80, 3)
    assert info['classes'][0] == 'n02085620-Chihuahua'
    assert list(info['classes']) == sorted(info['classes'])
