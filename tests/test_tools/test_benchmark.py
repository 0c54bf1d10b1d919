# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""tools/analysis/benchmark.py: one ``--smoke`` run as a subprocess (every
suite, tiny shapes) checked for the report's structure, plus in-process tests
of the measuring helpers and of the reference DO-Conv it times against.

Timings themselves are never asserted (they are machine- and load-dependent);
only that they are positive and that ``met`` agrees with ``targets``.
"""
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / 'tools' / 'analysis' / 'benchmark.py'

KEYS = {
    'doconv_eval_over_conv': 1.02,
    'doconv_train_over_conv': 1.05,
    'doconv_train_over_reference': 1.02,
    'folded_over_plain': 1.02,
    'mixconv_over_timm': 1.0,
    'mixnet_s_over_timm': 0.85,
    'bsconvu_over_reference': 1.02,
}


def load_tool():
    spec = importlib.util.spec_from_file_location('mmeff_benchmark_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def tool():
    return load_tool()


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
    """One ``--smoke`` run of every suite, like a user would start it."""
    out = tmp_path_factory.mktemp('bench') / 'smoke.json'
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(REPO), env.get('PYTHONPATH', '')])
    start = time.time()
    proc = subprocess.run(
        [sys.executable, str(TOOL), '--smoke', '--threads', '1', '--out', str(out)],
        capture_output=True, text=True, env=env, cwd=str(REPO), timeout=300)
    elapsed = time.time() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads(out.read_text()), elapsed, proc.stderr


def test_smoke_report_has_every_key(smoke):
    _, report, _, _ = smoke
    for key in KEYS:
        value = report[key]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, value)
    assert report['targets'] == KEYS
    assert set(report['met']) == set(KEYS)
    for key, target in KEYS.items():
        assert report['met'][key] is (report[key] <= target), key
    assert report['profile'] == 'smoke'


def test_smoke_report_machine_and_cases(smoke):
    _, report, _, stderr = smoke
    machine = report['machine']
    assert machine['threads'] == 1
    assert machine['device'] == 'cpu'
    assert machine['torch'] == torch.__version__
    assert machine['cpu']
    families = {c['family'] for c in report['cases']}
    assert families == {'doconv', 'mixconv', 'bsconvu', 'resnet50', 'mixnet_s', 'mobilenet_v1'}
    modes = {(c['family'], c['mode']) for c in report['cases']}
    for family in ('doconv', 'mixconv', 'bsconvu'):
        assert {(family, m) for m in ('train', 'forward', 'eval')} <= modes
    assert ('doconv', 'eval') in modes and ('resnet50', 'eval') in modes
    for case in report['cases']:
        assert case['repeats'] >= 3 and case['inner'] >= 1
        for name, res in case['results'].items():
            assert len(res['raw_ms']) == case['repeats'], (case['case'], name)
            assert all(t > 0 for t in res['raw_ms'])
            assert res['median_ms'] > 0
        for pair, (cand, base) in case['pairs'].items():
            assert cand in case['results'] and base in case['results']
            assert case['ratios'][pair] > 0
    # the measured candidates compute what their baselines compute
    for case in report['cases']:
        for name, diff in case.get('max_abs_diff', {}).items():
            assert diff < 1e-3, (case['case'], name, diff)
    # peak memory is measured where the profile says so (train, eval, deploy)
    train = [c for c in report['cases'] if c['mode'] == 'train']
    assert all(r['peak_mem_mb'] > 0 for c in train for r in c['results'].values())
    assert all('peak_mem_mb' not in r for c in report['cases'] if c['mode'] == 'forward'
               for r in c['results'].values())
    assert report['memory_method']
    assert report['settings']['malloc'].startswith(('keep-freed', 'default'))
    models = {row['model'] for row in report['channels_last']}
    assert {'ResNet-50 stock', 'ResNet-50 folded', 'MixNet-S ours', 'MixNet-S timm',
            'MobileNetV1 dsc', 'MobileNetV1 bsconvu'} <= models
    assert all(row['cl_over_nchw'] > 0 for row in report['channels_last'])
    assert {c['mode'] for c in report['mixconv_fused_vs_split']} == {'train', 'eval'}
    assert set(report['suite_seconds']) == {'doconv', 'mixconv', 'bsconvu', 'resnet', 'mixnet',
                                            'mobilenet'}
    assert 'wrote' in stderr


def test_smoke_writes_markdown_and_png(smoke):
    out, report, _, _ = smoke
    md = out.with_suffix('.md').read_text()
    for key in KEYS:
        assert f'`{key}`' in md
    assert '## Channels-last / NCHW' in md and '## MixConv fused / split' in md
    png = out.with_suffix('.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 1000
    # atomic writes leave no temporary files behind
    assert sorted(p.name for p in out.parent.iterdir()) == ['smoke.json', 'smoke.md', 'smoke.png']


def test_smoke_is_fast(smoke):
    _, report, elapsed, _ = smoke
    # the budget of the smoke mode (interpreter start and imports included)
    assert elapsed < 120, elapsed
    assert report['elapsed_s'] < elapsed


# ------------------------------------------------------------- in-process
def test_reference_doconv_matches_ours(tool):
    """The re-implemented reference (per-forward einsum with a frozen identity
    Parameter) computes what DOConv computes from the same W and D'."""
    from mm_efficientconv.layers.doconv import DOConv
    torch.manual_seed(0)
    ours = DOConv(6, 5, 3, stride=2, padding=1, bias=False)
    with torch.no_grad():
        ours.D.normal_(0, 0.1)
    ref = tool.ReferenceDOConv(6, 5, 3, stride=2, padding=1)
    with torch.no_grad():
        ref.W.copy_(ours.W)
        ref.D.copy_(ours.D)
    assert not ref.d_diag.requires_grad
    # the reference's identity is a Parameter: counted, unlike ours (a buffer)
    assert sum(p.numel() for p in ref.parameters()) > sum(p.numel() for p in ours.parameters())
    x = torch.randn(2, 6, 9, 9)
    torch.testing.assert_close(ref(x), ours(x), rtol=1e-5, atol=1e-5)
    # a naive composition from the paper: W'[o, c, s] = sum_d (D' + I)[c, s, d] W[o, c, d]
    full = ours.D + torch.eye(9)
    naive = torch.zeros(5, 6, 9)
    for o in range(5):
        for c in range(6):
            naive[o, c] = full[c] @ ours.W[o, c]
    y = nn.functional.conv2d(x, naive.reshape(5, 6, 3, 3), None, 2, 1)
    torch.testing.assert_close(ours(x), y, rtol=1e-5, atol=1e-5)


def test_interleaved_round_robin_and_paired_ratios(tool):
    order = []

    class Fake:

        def __init__(self, name, seconds):
            self.name, self.seconds = name, seconds

        def clear(self):
            pass

        def __call__(self):
            order.append(self.name)
            end = time.perf_counter() + self.seconds
            while time.perf_counter() < end:
                pass

    cfg = dict(warmup=2, min_sample_ms=0.0, case_budget_s=0.0, min_repeats=5, max_repeats=5)
    steps = {'base': Fake('base', 0.002), 'cand': Fake('cand', 0.004)}
    res = tool.interleaved(steps, {'cand/base': ('cand', 'base')}, cfg, torch.device('cpu'))
    # equal warm-up and one sizing round, then interleaved samples whose order
    # alternates every round (no candidate always first)
    assert order[:6] == ['base', 'cand'] * 3
    assert order[6:] == ['base', 'cand', 'cand', 'base', 'base', 'cand', 'cand', 'base', 'base',
                         'cand']
    assert res['repeats'] == 5 and res['inner'] == 1
    assert len(res['results']['cand']['raw_ms']) == 5
    assert 1.3 < res['ratios']['cand/base'] < 3.5
    assert res['pairs'] == {'cand/base': ['cand', 'base']}
    paired = sorted(a / b for a, b in zip(res['results']['cand']['raw_ms'],
                                          res['results']['base']['raw_ms']))
    assert res['ratios']['cand/base'] == pytest.approx(paired[2])
    # three candidates: the order rotates by one each round
    order.clear()
    steps['third'] = Fake('third', 0.001)
    tool.interleaved(steps, {}, dict(cfg, warmup=0, min_repeats=3, max_repeats=3),
                     torch.device('cpu'))
    assert order[3:] == ['base', 'cand', 'third', 'cand', 'third', 'base', 'third', 'base',
                         'cand']


def test_peak_memory_counts_what_a_step_allocates(tool):
    x = torch.randn(64, 1024, requires_grad=True)  # 256 KiB
    lin = nn.Linear(1024, 1024, bias=False)
    step = tool.make_step(lin, x, 'train')
    peak = tool.peak_memory_mb(step, torch.device('cpu'))
    # at least the output, its gradient and the weight gradient (4 MiB) are live
    assert peak is not None and 4.0 <= peak < 64.0
    assert lin.weight.grad is None  # cleared again


def test_make_step_modes(tool):
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(1, 3, 8, 8)
    train = tool.make_step(conv, x, 'train')
    train()
    assert conv.training and conv.weight.grad is not None
    train.clear()
    assert conv.weight.grad is None
    evaluation = tool.make_step(conv, x, 'eval')
    evaluation()
    assert not conv.training and conv.weight.grad is None


def test_profiles_and_subsets(tool):
    assert tool.TARGETS == KEYS
    quick = tool.PROFILES['quick']
    assert 1 <= quick['layer_batch'] <= 8 and quick['min_repeats'] >= 5
    assert len(tool._cases(tool.DOCONV_SHAPES, tool.PROFILES['smoke'])) == 1
    assert len(tool._cases(tool.MIXCONV_SHAPES, tool.PROFILES['full'])) == len(tool.MIXCONV_SHAPES)
    assert 0 < len(tool._cases(tool.MIXCONV_SHAPES, quick)) <= len(tool.MIXCONV_SHAPES)
    assert tool.geomean([2.0, 0.5]) == pytest.approx(1.0)


def test_atomic_write(tool, tmp_path):
    path = tmp_path / 'sub' / 'x.md'
    tool._atomic_write(str(path), b'one')
    tool._atomic_write(str(path), b'two')
    assert path.read_bytes() == b'two'
    assert [p.name for p in path.parent.iterdir()] == ['x.md']


def test_cuda_request_without_gpu(tool, tmp_path):
    if torch.cuda.is_available():
        pytest.skip('a GPU is present')
    with pytest.raises(SystemExit, match='no CUDA device'):
        tool.main(['--smoke', '--device', 'cuda', '--out', str(tmp_path / 'x.json')])
    assert not (tmp_path / 'x.json').exists()
