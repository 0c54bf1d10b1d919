# Copyright (c) mm_efficientconv contributors. All rights reserved.
import os.path as osp
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from mmengine.registry import DATASETS, MODELS, init_default_scope

import mm_efficientconv  # noqa: F401  (registers the layers and hooks)
from mm_efficientconv.deploy import count_deployable
from mm_efficientconv.hooks.deploy import ConvDeployHook

NUM_CLASSES = 3
SIZE = 16


pytestmark = pytest.mark.usefixtures('one_thread')  # tiny models on a busy machine


def classifier(conv_cfg=dict(type='DOConv'), seed=0):
    init_default_scope('mmpretrain')
    torch.manual_seed(seed)
    model = MODELS.build(
        dict(
            type='ImageClassifier',
            data_preprocessor=dict(
                type='ClsDataPreprocessor', num_classes=NUM_CLASSES, mean=[127.5] * 3,
                std=[127.5] * 3),
            backbone=dict(type='ResNet_CIFAR', depth=18, stem_channels=8, base_channels=8,
                          conv_cfg=conv_cfg),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=NUM_CLASSES, in_channels=64)))
    model.init_weights()
    return model


def perturb(model, seed=1):
    """Random D and BN statistics so that folding is not the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(1 + 0.2 * torch.rand(m.running_var.shape, generator=g))
    return model


def probe(model, seed=2):
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(x, mode='tensor')


def num_doconv(model):
    return sum(type(m).__name__ == 'DOConv' for m in model.modules())


@pytest.mark.parametrize('kwargs', [dict(fold_on_test=1), dict(save_deploy_ckpt='yes'),
                                    dict(fuse_conv_bn=None)])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError, match='ConvDeployHook'):
        ConvDeployHook(**kwargs)


@pytest.mark.parametrize('fuse', [False, True])
def test_before_test_folds(fuse):
    model = perturb(classifier())
    expected = probe(model)
    assert count_deployable(model) > 0 and num_doconv(model) > 0
    runner = SimpleNamespace(model=model)
    ConvDeployHook(fuse_conv_bn=fuse).before_test(runner)
    assert runner.model is model
    assert num_doconv(model) == 0 and count_deployable(model) == 0
    num_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert (num_bn == 0) if fuse else (num_bn > 0)
    torch.testing.assert_close(probe(model), expected, rtol=1e-4, atol=1e-5)


def test_before_test_disabled():
    model = classifier()
    ConvDeployHook(fold_on_test=False).before_test(SimpleNamespace(model=model))
    assert num_doconv(model) > 0


@DATASETS.register_module(name='DeployHookTestDataset', force=True)
class _TinyDataset(torch.utils.data.Dataset):
    metainfo = dict(classes=tuple(f'c{i}' for i in range(NUM_CLASSES)))

    def __init__(self, num=8):
        g = torch.Generator().manual_seed(1)
        self.images = torch.randint(0, 256, (num, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from mmpretrain.structures import DataSample
        return dict(inputs=self.images[i], data_samples=DataSample().set_gt_label(i % NUM_CLASSES))


def _loader():
    return dict(batch_size=4, num_workers=0, dataset=dict(type='DeployHookTestDataset'),
                sampler=dict(type='DefaultSampler', shuffle=False))


def test_runner_train_then_test(tmp_path):
    from mmengine.runner import Runner
    model = classifier()
    runner = Runner(
        model=model,
        work_dir=str(tmp_path),
        experiment_name=f'deploy_train_test_{tmp_path.name}',
        train_dataloader=_loader(),
        val_dataloader=_loader(),
        test_dataloader=_loader(),
        val_evaluator=dict(type='Accuracy', topk=(1, )),
        test_evaluator=dict(type='Accuracy', topk=(1, )),
        train_cfg=dict(by_epoch=False, max_iters=4, val_interval=2),
        val_cfg=dict(),
        test_cfg=dict(),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1),
                           checkpoint=dict(type='CheckpointHook', interval=4, by_epoch=False)),
        custom_hooks=[dict(type='ConvDeployHook')],
        default_scope='mmpretrain',
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        log_level='WARNING')
    runner.train()

    # validation ran (twice) and neither folded the model nor changed its weights
    assert runner.message_hub.get_info('last_ckpt') == osp.join(str(tmp_path), 'iter_4.pth')
    assert num_doconv(runner.model) > 0
    saved = torch.load(tmp_path / 'iter_4.pth', map_location='cpu',
                       weights_only=False)['state_dict']
    for key, value in runner.model.state_dict().items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0, msg=key)
    runner.model.eval()
    expected = probe(runner.model)

    # after_train wrote a folded checkpoint next to the last one
    path = tmp_path / 'iter_4_deploy.pth'
    assert path.is_file()
    deploy = torch.load(path, map_location='cpu', weights_only=True)
    assert deploy['meta']['deploy'] is True
    assert deploy['meta']['folded_modules'] == count_deployable(classifier())
    assert deploy['meta']['source_checkpoint'] == str(tmp_path / 'iter_4.pth')
    assert deploy['meta']['dataset_meta']['classes'] == ('c0', 'c1', 'c2')
    stock = classifier(conv_cfg=None, seed=5)  # no plugin: mmpretrain's own convs
    stock.load_state_dict(deploy['state_dict'], strict=True)
    assert set(deploy['state_dict']) == set(stock.state_dict())
    torch.testing.assert_close(probe(stock), expected, rtol=1e-4, atol=1e-5)

    # Runner.test(): checkpoint loaded, then before_test folds
    metrics = runner.test()
    assert 'accuracy/top1' in metrics
    assert num_doconv(runner.model) == 0
    torch.testing.assert_close(probe(runner.model), expected, rtol=1e-4, atol=1e-5)


def test_after_train_without_checkpoint_uses_model(tmp_path):
    from mmengine.runner import Runner
    model = classifier()
    runner = Runner(
        model=model,
        work_dir=str(tmp_path),
        experiment_name=f'deploy_no_ckpt_{tmp_path.name}',
        train_dataloader=_loader(),
        train_cfg=dict(by_epoch=False, max_iters=2),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        default_hooks=dict(checkpoint=None),
        custom_hooks=[dict(type='ConvDeployHook')],
        default_scope='mmpretrain',
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        log_level='WARNING')
    runner.train()
    path = tmp_path / 'iter_2_deploy.pth'
    deploy = torch.load(path, map_location='cpu', weights_only=True)
    assert deploy['meta']['source_checkpoint'] == 'in-memory model at the end of training'
    stock = classifier(conv_cfg=None, seed=5)
    stock.load_state_dict(deploy['state_dict'], strict=True)
    torch.testing.assert_close(probe(stock), probe(runner.model), rtol=1e-4, atol=1e-5)
    assert num_doconv(runner.model) > 0
