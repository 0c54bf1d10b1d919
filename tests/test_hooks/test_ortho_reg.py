# Copyright (c) mm_efficientconv contributors. All rights reserved.
import copy
import math
import os.path as osp
import socket
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from mmengine.registry import DATASETS, MODELS, init_default_scope

import mm_efficientconv  # noqa: F401  (registers the layers and hooks)
from mm_efficientconv.hooks.ortho_reg import OrthoRegHook, regularised_modules

NUM_CLASSES = 3
SIZE = 16


pytestmark = pytest.mark.usefixtures('one_thread')


def classifier(conv_cfg=dict(type='BSConvS'), perturb_projections=True):
    """A tiny classifier; BSConv-S projections start orthonormal (regulariser
    ~0), so by default they are perturbed to give the penalty a value worth
    checking."""
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
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
    if perturb_projections:
        with torch.no_grad():
            for _, m in regularised_modules(model):
                m.pw1.weight.add_(0.2 * torch.randn_like(m.pw1.weight))
    return model


def batch(n=4, seed=0):
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, 3, SIZE, SIZE, generator=g)
    samples = [DataSample().set_gt_label(int(i) % NUM_CLASSES) for i in range(n)]
    return inputs, samples


def naive_penalty(model, reduction='sum'):
    """||W_B W_B^T - I||_F (paper, Sec. 3) of every BSConv-S projection,
    written from the formula."""
    values = []
    for m in model.modules():
        if type(m).__name__ == 'BSConvS' and not m.plain:
            w = m.pw1.weight.detach().double().reshape(m.pw1.weight.shape[0], -1)
            gram = w @ w.t()
            values.append(torch.sqrt(((gram - torch.eye(gram.shape[0], dtype=gram.dtype))**2
                                      ).sum()).item())
    assert values, 'the test model has no BSConv-S projection'
    return sum(values) / (len(values) if reduction == 'mean' else 1)


def install(model, **kwargs):
    hook = OrthoRegHook(**kwargs)
    runner = SimpleNamespace(model=model)
    hook.before_train(runner)
    return hook, runner


@pytest.mark.parametrize('kwargs', [
    dict(alpha=-0.1), dict(alpha=float('nan')), dict(alpha=float('inf')), dict(alpha='0.1'),
    dict(alpha=True), dict(reduction='max'), dict(reduction=None)
])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError, match='OrthoRegHook'):
        OrthoRegHook(**kwargs)


@pytest.mark.parametrize('reduction', ['sum', 'mean'])
def test_loss_ortho_in_parse_losses_and_total(reduction):
    model = classifier()
    alpha = 0.1
    install(model, alpha=alpha, reduction=reduction)
    model.train()
    inputs, samples = batch()
    losses = model(inputs, samples, mode='loss')
    assert 'loss' in losses  # mmpretrain's head loss is named 'loss'
    total, log_vars = model.parse_losses(losses)
    assert set(log_vars) >= {'loss', 'loss_cls', 'loss_ortho'}
    # the head loss is renamed, and the logged 'loss' is the total
    torch.testing.assert_close(log_vars['loss_cls'], losses['loss'])
    expected = alpha * naive_penalty(model, reduction)
    assert log_vars['loss_ortho'].item() == pytest.approx(expected, rel=1e-5)
    assert log_vars['loss_ortho'].dtype == torch.float32
    torch.testing.assert_close(total, log_vars['loss_cls'] + log_vars['loss_ortho'])
    torch.testing.assert_close(log_vars['loss'], total)
    # the penalty is part of the back-propagated total
    model.zero_grad()
    total.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if 'pw1' in n}
    model.zero_grad()
    losses = model(inputs, samples, mode='loss')
    (losses['loss'] + alpha * sum_reg(model, reduction)).backward()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, dict(model.named_parameters())[name].grad)


def sum_reg(model, reduction):
    values = [m.reg_loss() for _, m in regularised_modules(model)]
    return sum(values) / (len(values) if reduction == 'mean' else 1)


def test_mean_is_sum_over_layer_count():
    model = classifier()
    install(model, alpha=1.0, reduction='sum')
    n = len(regularised_modules(model))
    assert n > 1
    inputs, samples = batch()
    _, s = model.parse_losses(model(inputs, samples, mode='loss'))
    model2 = classifier()
    install(model2, alpha=1.0, reduction='mean')
    _, m = model2.parse_losses(model2(inputs, samples, mode='loss'))
    assert m['loss_ortho'].item() == pytest.approx(s['loss_ortho'].item() / n, rel=1e-6)


def test_plain_mode_layers_do_not_count():
    # 1x1 convs and the first stem conv of a BSConvS ResNet are plain-mode BSConvS
    model = classifier()
    every = [m for m in model.modules() if type(m).__name__ == 'BSConvS']
    active = regularised_modules(model)
    assert any(m.plain for m in every)
    assert 0 < len(active) < len(every)


def test_eval_losses_untouched_and_restore():
    model = classifier()
    inputs, samples = batch()
    model.eval()
    with torch.no_grad():
        losses = model(inputs, samples, mode='loss')
    reference = type(model).parse_losses(model, losses)
    hook, runner = install(model)
    total, log_vars = model.parse_losses(losses)
    assert list(log_vars) == list(reference[1]) and 'loss_ortho' not in log_vars
    torch.testing.assert_close(total, reference[0])
    hook.after_train(runner)
    assert 'parse_losses' not in vars(model)
    model.train()
    _, log_vars = model.parse_losses(losses)
    assert 'loss_ortho' not in log_vars


def test_installed_once_and_deepcopy_follows_the_copy():
    model = classifier()
    hook, runner = install(model, alpha=0.5)
    wrapper = model.parse_losses
    hook.before_train(runner)
    assert model.parse_losses is wrapper
    clone = copy.deepcopy(model)
    assert clone.parse_losses.model is clone
    with torch.no_grad():
        for m in clone.modules():
            if hasattr(m, 'pw1'):
                m.pw1.weight.mul_(2)
    inputs, samples = batch()
    _, a = model.parse_losses(model(inputs, samples, mode='loss'))
    _, b = clone.parse_losses(clone(inputs, samples, mode='loss'))
    assert a['loss_ortho'].item() != pytest.approx(b['loss_ortho'].item())
    assert b['loss_ortho'].item() == pytest.approx(0.5 * naive_penalty(clone), rel=1e-5)


def test_no_regulariser_raises():
    model = classifier(conv_cfg=None)
    with pytest.raises(RuntimeError, match=r'OrthoRegHook.*reg_loss.*BSConvS'):
        install(model)


class _Toy(nn.Module):
    """Any module with reg_loss() takes part (the protocol, not the class)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, 2.0]))

    def reg_loss(self):
        return (self.w**2).sum()


def test_protocol_and_bad_reg_loss():
    model = classifier()
    model.toy = _Toy()
    install(model, alpha=1.0)
    inputs, samples = batch()
    _, log_vars = model.parse_losses(model(inputs, samples, mode='loss'))
    assert log_vars['loss_ortho'].item() == pytest.approx(naive_penalty(model) + 5.0, rel=1e-5)

    model = classifier()
    model.toy = _Toy()
    model.toy.reg_loss = lambda: torch.ones(2)
    install(model)
    with pytest.raises(TypeError, match='scalar'):
        model.parse_losses(model(inputs, samples, mode='loss'))


def test_fp32_under_autocast():
    """Under AMP the forward runs in autocast; the penalty must stay fp32 even if
    parse_losses were called inside the autocast region."""
    model = classifier()
    install(model, alpha=0.1)
    inputs, samples = batch()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        losses = model(inputs, samples, mode='loss')
        _, log_vars = model.parse_losses(losses)
    assert log_vars['loss_ortho'].dtype == torch.float32
    assert log_vars['loss_ortho'].item() == pytest.approx(0.1 * naive_penalty(model), rel=1e-6)


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_under_mm_distributed_data_parallel():
    """MMDistributedDataParallel.train_step calls module.parse_losses (one
    process, gloo)."""
    import torch.distributed as dist
    from mmengine.model import MMDistributedDataParallel
    from mmengine.optim import OptimWrapper
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{_free_port()}', rank=0,
                            world_size=1)
    try:
        model = classifier()
        ddp = MMDistributedDataParallel(module=model, device_ids=None)
        install(ddp, alpha=0.1)
        assert 'parse_losses' in vars(model)
        optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.0))
        inputs, samples = batch()
        log_vars = ddp.train_step(dict(inputs=list((inputs * 50 + 128).clamp(0, 255).byte()),
                                       data_samples=samples), optim_wrapper=optim)
        assert log_vars['loss_ortho'].item() == pytest.approx(0.1 * naive_penalty(model),
                                                              rel=1e-5)
        torch.testing.assert_close(log_vars['loss'],
                                   log_vars['loss_cls'] + log_vars['loss_ortho'])
    finally:
        dist.destroy_process_group()


@DATASETS.register_module(name='OrthoRegTestDataset', force=True)
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


def test_runner_logs_loss_ortho(tmp_path):
    from mmengine.runner import Runner
    model = classifier()
    runner = Runner(
        model=model,
        work_dir=str(tmp_path),
        experiment_name=f'ortho_runner_{tmp_path.name}',
        train_dataloader=dict(
            batch_size=4, num_workers=0, dataset=dict(type='OrthoRegTestDataset'),
            sampler=dict(type='DefaultSampler', shuffle=False)),
        train_cfg=dict(by_epoch=False, max_iters=3),
        # lr 0: the weights stay put, so every logged penalty is the current one
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.0)),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1),
                           checkpoint=dict(type='CheckpointHook', interval=100)),
        custom_hooks=[dict(type='OrthoRegHook', alpha=0.01)],
        default_scope='mmpretrain',
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        log_level='INFO')
    runner.train()
    hub = runner.message_hub
    ortho = hub.get_scalar('train/loss_ortho')
    assert len(ortho.data[0]) == 3
    for value in ortho.data[0]:
        assert value == pytest.approx(0.01 * naive_penalty(model), rel=1e-5)
    cls = hub.get_scalar('train/loss_cls').current()
    assert hub.get_scalar('train/loss').current() == pytest.approx(cls + ortho.current(),
                                                                   rel=1e-5)
    with open(osp.join(runner.log_dir, f'{runner.timestamp}.log')) as f:
        log = f.read()
    assert 'loss_ortho:' in log and 'loss_cls:' in log
    assert 'parse_losses' not in vars(model)  # restored by after_train


def test_penalty_decreases_when_only_regulariser_trains():
    """Sanity check of the direction: minimising loss_ortho alone drives each
    projection towards orthonormal rows."""
    model = classifier()
    install(model, alpha=1.0)
    params = [m.pw1.weight for _, m in regularised_modules(model)]
    opt = torch.optim.SGD(params, lr=0.05)
    start = naive_penalty(model)
    for _ in range(30):
        opt.zero_grad()
        sum_reg(model, 'sum').backward()
        opt.step()
    assert naive_penalty(model) < 0.5 * start
    assert math.isfinite(naive_penalty(model))


@pytest.mark.parametrize('backbone', [dict(type='BSConvSMobileNetV2', widen_factor=0.5),
                                      dict(type='BSConvSMobileNetV3', arch='small')])
def test_bsconvs_backbones_start_with_a_meaningful_regulariser(backbone, mmpretrain_scope):
    """The projection convs start orthonormal (the regulariser's optimum)
    after the backbone's init, instead of ~10 per block with mmpretrain's
    Kaiming init (which dwarfed loss_cls); a Pretrained init_cfg is kept."""
    torch.manual_seed(0)
    model = MODELS.build(backbone)
    model.init_weights()
    assert model.reg_loss().item() < 1e-3
    rows = [conv.weight.flatten(1) for conv in model.projection_convs()]
    assert all(torch.allclose(w @ w.t(), torch.eye(w.shape[0]), atol=1e-5) for w in rows)
    torch.manual_seed(0)
    pretrained = MODELS.build(dict(backbone, init_cfg=dict(type='Pretrained',
                                                           checkpoint='/nonexistent.pth')))
    before = [c.weight.detach().clone() for c in pretrained.projection_convs()]
    from mm_efficientconv.backbones.mobilenet_v2_bsconvs import init_projections_orthonormal
    init_projections_orthonormal(pretrained)  # a no-op for Pretrained init_cfg
    assert all(torch.equal(a, c.weight) for a, c in zip(before, pretrained.projection_convs()))


def test_bsconvs_layer_starts_with_orthonormal_projection():
    model = classifier(perturb_projections=False)
    layers = [m for _, m in regularised_modules(model)]
    assert layers and all(m.reg_loss().item() < 1e-3 for m in layers)
