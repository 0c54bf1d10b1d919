# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""KernelCacheHook opens the ``cached_kernels()`` scope around validation and
test loops (and nowhere else)."""
import pytest
import torch
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.registry import HOOKS

import mm_efficientconv  # noqa: F401  (registers the hook)
from mm_efficientconv.hooks import KernelCacheHook
from mm_efficientconv.layers import DOConv, kernel_cache

pytestmark = pytest.mark.usefixtures('one_thread')


class _Model(BaseModel):

    def __init__(self):
        super().__init__()
        self.conv = DOConv(3, 4, 3, padding=1)
        self.compositions = 0
        self.scope_seen = []
        compose = self.conv._forward_kernel  # what DOConv.forward composes with

        def counted():
            self.compositions += 1
            return compose()

        self.conv._forward_kernel = counted

    def forward(self, inputs, data_samples=None, mode='tensor'):
        self.scope_seen.append(kernel_cache.kernel_cache_active())
        out = self.conv(inputs if torch.is_tensor(inputs) else torch.stack(inputs))
        if mode == 'loss':
            return dict(loss=out.square().mean())
        return [dict(value=v) for v in out.mean(dim=(1, 2, 3))]


class _Metric(BaseMetric):
    default_prefix = 'toy'

    def process(self, data_batch, data_samples):
        self.results.extend(float(s['value']) for s in data_samples)

    def compute_metrics(self, results):
        return dict(mean=sum(results) / len(results))


def _loader(n=6):
    data = [dict(inputs=torch.randn(3, 8, 8)) for _ in range(n)]
    return dict(dataset=data, batch_size=2, sampler=dict(type='DefaultSampler', shuffle=False),
                collate_fn=dict(type='default_collate'))


def test_registered_in_the_root_registry():
    hook = HOOKS.build(dict(type='KernelCacheHook'))
    assert isinstance(hook, KernelCacheHook)


def test_hook_methods_open_and_close_the_scope():
    hook = KernelCacheHook()
    for before, after in ((hook.before_val_epoch, hook.after_val_epoch),
                          (hook.before_test_epoch, hook.after_test_epoch)):
        before(None)
        assert kernel_cache.kernel_cache_active()
        before(None)  # re-entering does not nest a second scope
        after(None)
        assert not kernel_cache.kernel_cache_active()
    hook.before_val_epoch(None)
    hook.after_run(None)  # a loop that raised: closed at the end of the run
    assert not kernel_cache.kernel_cache_active()


@pytest.mark.parametrize('loop', ['val', 'test'])
def test_runner_loops_compose_once(loop, tmp_path):
    from mmengine.runner import Runner
    model = _Model()
    runner = Runner(
        model=model, work_dir=str(tmp_path), default_scope='mmengine',
        **{f'{loop}_dataloader': _loader(), f'{loop}_cfg': dict(),
           f'{loop}_evaluator': [_Metric()]},
        custom_hooks=[dict(type='KernelCacheHook')], default_hooks=dict(logger=None),
        log_level='WARNING')
    getattr(runner, loop)()
    assert model.scope_seen == [True] * 3
    assert model.compositions == 1  # three batches, one composed kernel
    assert not kernel_cache.kernel_cache_active() and not kernel_cache._entries
    with torch.no_grad():  # outside the loop: composed at every forward again
        model.conv(torch.randn(1, 3, 4, 4))
        model.conv(torch.randn(1, 3, 4, 4))
    assert model.compositions == 3
