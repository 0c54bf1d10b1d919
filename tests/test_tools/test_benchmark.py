# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""mm_efficientconv.benchmark and its CLI tools/analysis/benchmark.py: one
``--smoke`` run of the CLI as a subprocess (every suite, tiny shapes) checked
for the report's structure, plus in-process tests of the library's measuring
helpers, training steps and reference DO-Conv.

Timings themselves are never asserted (they are machine- and load-dependent);
only that they are positive and that ``met`` agrees with ``targets``.
"""
import copy
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import time

import pytest
import torch
import torch.nn as nn

from mm_efficientconv import benchmark
from mm_efficientconv.benchmark import harness, profiles, report, train_suites
from mm_efficientconv.benchmark.layer_suites import ReferenceDOConv

pytestmark = pytest.mark.usefixtures('one_thread')

KEYS = {
    'doconv_eval_over_conv': 1.02,
    'doconv_train_over_conv': 1.05,
    'doconv_train_over_reference': 1.02,
    'folded_over_plain': 1.02,
    'mixconv_over_timm': 1.0,
    'mixnet_s_over_timm': 0.85,
    'bsconvu_over_reference': 1.02,
    'resnet_doconv_train_over_plain': 1.03,
    'resnet_doconv_train_mem_over_plain': 1.10,
    'mixnet_s_train_over_timm': 0.90,
    'mobilenet_v2_bsconvs_train_over_plain': 1.05,
}
REPORTED = {'doconv_eval_unscoped_over_conv'}
SUITES = {'doconv', 'mixconv', 'bsconvu', 'resnet', 'mixnet', 'mobilenet', 'resnet_train',
          'mixnet_train', 'mobilenet_v2_train'}


@pytest.fixture(scope='module')
def smoke(tmp_path_factory, repo_root):
    """One ``--smoke`` run of every suite through the CLI, like a user would
    start it."""
    out = tmp_path_factory.mktemp('bench') / 'smoke.json'
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(repo_root), env.get('PYTHONPATH', '')])
    start = time.time()
    proc = subprocess.run(
        [sys.executable, str(repo_root / 'tools' / 'analysis' / 'benchmark.py'), '--smoke',
         '--threads', '1', '--out', str(out)],
        capture_output=True, text=True, env=env, cwd=str(repo_root), timeout=300)
    elapsed = time.time() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads(out.read_text()), elapsed, proc.stderr


def test_smoke_report_has_every_key(smoke):
    _, rep, _, _ = smoke
    for key in list(KEYS) + list(REPORTED):
        value = rep[key]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, value)
    assert rep['targets'] == KEYS
    assert set(rep['reported']) == REPORTED
    assert set(rep['met']) == set(KEYS)
    for key, target in KEYS.items():
        assert rep['met'][key] is (rep[key] <= target), key
    for key, detail in rep['key_details'].items():  # time keys: an interval around the figure
        if detail['measure'] == 'time':
            low, high = detail['interval']
            assert low <= rep[key] <= high, key
        else:
            assert 'interval' not in detail, key
    assert rep['profile'] == 'smoke'


def test_smoke_report_machine_and_cases(smoke):
    _, rep, _, stderr = smoke
    machine = rep['machine']
    assert machine['threads'] == 1
    assert machine['device'] == 'cpu'
    assert machine['torch'] == torch.__version__
    assert machine['cpu']
    families = {c['family'] for c in rep['cases']}
    assert families == {'doconv', 'mixconv', 'bsconvu', 'resnet50', 'mixnet_s', 'mobilenet_v1',
                        'resnet_train', 'mobilenet_v2'}
    modes = {(c['family'], c['mode']) for c in rep['cases']}
    for family in ('doconv', 'mixconv', 'bsconvu'):
        assert {(family, m) for m in ('train', 'forward', 'eval')} <= modes
    assert {('resnet50', 'eval'), ('resnet_train', 'train_step'), ('mixnet_s', 'train_step'),
            ('mobilenet_v2', 'train_step')} <= modes
    for case in rep['cases']:
        assert case['repeats'] >= 3 and case['inner'] >= 1
        for name, res in case['results'].items():
            assert len(res['raw_ms']) == case['repeats'], (case['case'], name)
            assert all(t > 0 for t in res['raw_ms'])
            assert res['median_ms'] > 0
        for pair, (cand, base) in case['pairs'].items():
            assert cand in case['results'] and base in case['results']
            assert case['ratios'][pair] > 0
    # the measured candidates compute what their baselines compute
    for case in rep['cases']:
        for name, diff in case.get('max_abs_diff', {}).items():
            assert diff < 1e-3, (case['case'], name, diff)
    # peak memory is measured where the profile says so (train, eval, deploy, train_step)
    train = [c for c in rep['cases'] if c['mode'] in ('train', 'train_step')]
    assert all(r['peak_mem_mb'] > 0 for c in train for r in c['results'].values())
    assert all('peak_mem_mb' not in r for c in rep['cases'] if c['mode'] == 'forward'
               for r in c['results'].values())
    assert rep['memory_method']
    assert rep['settings']['malloc'].startswith(('keep-freed', 'default'))
    models = {row['model'] for row in rep['channels_last']}
    assert {'ResNet-50 stock', 'ResNet-50 folded', 'MixNet-S ours', 'MixNet-S timm',
            'MobileNetV1 dsc', 'MobileNetV1 bsconvu'} <= models
    assert all(row['cl_over_nchw'] > 0 for row in rep['channels_last'])
    assert {c['mode'] for c in rep['mixconv_fused_vs_split']} == {'train', 'eval'}
    assert set(rep['suite_seconds']) == SUITES
    assert 'wrote' in stderr


def test_smoke_training_steps(smoke):
    """Whole-network steps: finite losses (loss_ortho where it belongs), the
    memory decomposition, the best-format choice of the MixNet pair."""
    _, rep, _, _ = smoke
    steps = {c['family']: c for c in rep['cases'] if c['mode'] == 'train_step'}
    for case in steps.values():
        assert case['finite_losses']
        for name, res in case['results'].items():
            assert res['persistent_mb'] > 0 and res['peak_mem_mb'] > 0
            assert res['train_mem_mb'] == pytest.approx(res['persistent_mb'] + res['peak_mem_mb'])
            assert math.isfinite(case['losses'][name]['loss'])
    assert 'loss_ortho' in steps['mobilenet_v2']['losses']['bsconvs']
    assert 'loss_ortho' not in steps['mobilenet_v2']['losses']['plain']
    resnet = steps['resnet_train']
    res = resnet['results']
    assert rep['resnet_doconv_train_mem_over_plain'] == pytest.approx(
        res['doconv']['train_mem_mb'] / res['plain']['train_mem_mb'])
    mixnet = steps['mixnet_s']
    assert set(mixnet['results']) == {'ours@nchw', 'ours@cl', 'timm@nchw', 'timm@cl'}
    cand, base = mixnet['pairs']['ours best/timm best']
    assert cand.startswith('ours@') and base.startswith('timm@')


def test_smoke_writes_markdown_and_png(smoke):
    out, rep, _, _ = smoke
    md = out.with_suffix('.md').read_text()
    for key in list(KEYS) + list(REPORTED):
        assert f'`{key}`' in md
    assert '## Channels-last / NCHW' in md and '## MixConv fused / split' in md
    assert '## Training steps: memory and losses' in md
    png = out.with_suffix('.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 1000
    # atomic writes leave no temporary files behind
    assert sorted(p.name for p in out.parent.iterdir()) == ['smoke.json', 'smoke.md', 'smoke.png']


def test_smoke_reports_its_duration(smoke):
    # no wall-clock bound: on a shared machine it measures the neighbours (the smoke run takes
    # about a minute of CPU time here)
    _, rep, elapsed, _ = smoke
    assert 0 < rep['elapsed_s'] < elapsed
    assert sum(rep['suite_seconds'].values()) <= rep['elapsed_s'] + 1


# ------------------------------------------------------------- in-process
def test_reference_doconv_matches_ours():
    """The re-implemented reference (per-forward einsum with a frozen identity
    Parameter) computes what DOConv computes from the same W and D'."""
    from mm_efficientconv.layers.doconv import DOConv
    torch.manual_seed(0)
    ours = DOConv(6, 5, 3, stride=2, padding=1, bias=False)
    with torch.no_grad():
        ours.D.normal_(0, 0.1)
    ref = ReferenceDOConv(6, 5, 3, stride=2, padding=1)
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


def test_interleaved_round_robin_and_paired_ratios(monkeypatch):
    """Order and statistics with a deterministic clock: each call of a fake
    step "lasts" its scripted duration (no real timing, so no load effects)."""
    # the first duration is the sizing round's
    order, durations = [], {'base': iter([1, 2, 3, 2, 2, 2]), 'cand': iter([1, 4, 6, 5, 4, 9])}

    class Fake:

        def __init__(self, name):
            self.name = name

        def clear(self):
            pass

        def __call__(self):
            order.append(self.name)

    def fake_sample(fn, inner, device):
        for _ in range(inner):
            fn()
        return next(durations[fn.name]) / 1000

    monkeypatch.setattr(harness, 'sample', fake_sample)
    cfg = dict(warmup=2, min_sample_ms=0.0, case_budget_s=0.0, min_repeats=5, max_repeats=5)
    steps = {'base': Fake('base'), 'cand': Fake('cand')}
    res = harness.interleaved(steps, {'cand/base': ('cand', 'base')}, cfg, torch.device('cpu'))
    # equal warm-up and one sizing round, then interleaved samples whose order
    # alternates every round (no candidate always first)
    assert order[:6] == ['base', 'cand'] * 3
    assert order[6:] == ['base', 'cand', 'cand', 'base', 'base', 'cand', 'cand', 'base', 'base',
                         'cand']
    assert res['repeats'] == 5 and res['inner'] == 1
    assert res['results']['cand']['raw_ms'] == pytest.approx([4, 6, 5, 4, 9])
    assert res['results']['base']['raw_ms'] == pytest.approx([2, 3, 2, 2, 2])
    # the reported ratio is the median of the per-round ratios (2, 2, 2.5, 2, 4.5)
    assert res['ratios']['cand/base'] == pytest.approx(2.0)
    assert res['ratios_of_medians']['cand/base'] == pytest.approx(5 / 2)
    assert res['ratios_of_minima']['cand/base'] == pytest.approx(4 / 2)
    assert res['results']['cand']['median_ms'] == pytest.approx(5.0)
    assert res['pairs'] == {'cand/base': ['cand', 'base']}
    # three candidates: the order rotates by one each round
    monkeypatch.undo()
    order.clear()
    steps['third'] = Fake('third')
    harness.interleaved(steps, {}, dict(cfg, warmup=0, min_repeats=3, max_repeats=3),
                        torch.device('cpu'))
    assert order[3:] == ['base', 'cand', 'third', 'cand', 'third', 'base', 'third', 'base',
                         'cand']


def test_best_format_ratio_pairs_the_faster_formats():
    res = dict(results={'a@nchw': dict(median_ms=3.0, min_ms=2.9, raw_ms=[3.0, 3.1, 2.9]),
                        'a@cl': dict(median_ms=2.0, min_ms=1.9, raw_ms=[2.0, 1.9, 2.2]),
                        'b@nchw': dict(median_ms=4.0, min_ms=3.9, raw_ms=[4.0, 4.4, 3.9]),
                        'b@cl': dict(median_ms=5.0, min_ms=4.9, raw_ms=[5.0, 5.1, 4.9])},
               ratios={}, ratios_of_medians={}, ratios_of_minima={}, pairs={})
    best = harness.add_best_format_ratio(res, ('a', 'b'), 'a best/b best')
    assert best == {'a': 'a@cl', 'b': 'b@nchw'}
    assert res['pairs']['a best/b best'] == ['a@cl', 'b@nchw']
    assert res['ratios']['a best/b best'] == pytest.approx(sorted([0.5, 1.9 / 4.4, 2.2 / 3.9])[1])


def test_peak_memory_counts_what_a_step_allocates():
    x = torch.randn(64, 1024, requires_grad=True)  # 256 KiB
    lin = nn.Linear(1024, 1024, bias=False)
    step = harness.make_step(lin, x, 'train')
    peak = harness.peak_memory_mb(step, torch.device('cpu'))
    # at least the output, its gradient and the weight gradient (4 MiB) are live
    assert peak is not None and 4.0 <= peak < 64.0
    assert lin.weight.grad is None  # cleared again


def test_peak_memory_sees_a_freed_temporary():
    """A 16 MiB temporary freed before the call returns still sets the peak."""

    def run():
        tmp = torch.ones(4, 1024, 1024)  # 16 MiB, freed when run() returns
        tmp.sum()

    peak = harness.peak_memory_mb(harness.Step(run), torch.device('cpu'))
    assert peak is not None and 16.0 <= peak < 20.0


def test_make_step_modes():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(1, 3, 8, 8)
    train = harness.make_step(conv, x, 'train')
    train()
    assert conv.training and conv.weight.grad is not None
    train.clear()
    assert conv.weight.grad is None
    evaluation = harness.make_step(conv, x, 'eval')
    evaluation()
    assert not conv.training and conv.weight.grad is None
    with pytest.raises(ValueError, match="mode must be 'train'"):
        harness.make_step(conv, x, 'inference')


def test_train_step_updates_and_accounts_memory():
    """One mmengine train_step of a DO-Conv ResNet-18 classifier: the
    optimiser moves the weights, gradients are cleared, the persistent state
    counts parameters, buffers and SGD momentum."""
    device = torch.device('cpu')
    model = train_suites.build_classifier(train_suites.resnet_cfgs(18)['doconv'], device)
    batch = train_suites.make_batch(2, 32, device)
    wrapper = train_suites.make_optim_wrapper(model)
    step = train_suites.TrainStep(model, batch, wrapper)
    stem = model.backbone.conv1
    before = stem.W.detach().clone()
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    step()
    assert not torch.equal(stem.W, before)
    assert all(p.grad is None for p in model.parameters())
    assert set(step.last_losses) == {'loss'} and math.isfinite(step.last_losses['loss'])
    # momentum buffers exist for every parameter after the first step
    assert step.persistent_mb() == pytest.approx((2 * params + buffers) / 2**20, rel=1e-6)
    with pytest.raises(ValueError, match="amp must be None, 'float16' or 'bfloat16'"):
        train_suites.make_optim_wrapper(model, 'fp16')


def test_resnet_pair_computes_the_same_function():
    """A plain ResNet-18 classifier's weights load into its DO-Conv twin
    (W = weight, D' = 0), which then computes the same logits."""
    device = torch.device('cpu')
    cfgs = train_suites.resnet_cfgs(18)
    assert cfgs['doconv']['backbone']['conv_cfg'] == dict(type='DOConv')
    plain = train_suites.build_classifier(cfgs['plain'], device).eval()
    doconv = train_suites.build_classifier(cfgs['doconv'], device).eval()
    doconv.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(doconv(x, mode='tensor'), plain(x, mode='tensor'),
                                   rtol=1e-4, atol=1e-4)


def test_headline_ratios_time_and_memory():
    cases = [
        dict(family='resnet_train', mode='train_step', case='a', ratios={'doconv/plain': 1.02},
             ratios_of_minima={'doconv/plain': 1.01}, ratios_of_medians={'doconv/plain': 1.03},
             memory_ratios={'doconv/plain': 1.05}),
        dict(family='doconv', mode='eval', case='x', ratios={'doconv/conv': 2.0},
             ratios_of_minima={'doconv/conv': 2.0}, ratios_of_medians={'doconv/conv': 2.0}),
        dict(family='doconv', mode='eval', case='y', ratios={'doconv/conv': 0.5},
             ratios_of_minima={'doconv/conv': 0.5}, ratios_of_medians={'doconv/conv': 0.5}),
    ]
    keys, details = report.headline_ratios(cases)
    assert keys == {'resnet_doconv_train_over_plain': pytest.approx(1.02),
                    'resnet_doconv_train_mem_over_plain': pytest.approx(1.05),
                    'doconv_eval_over_conv': pytest.approx(1.0)}
    assert details['resnet_doconv_train_mem_over_plain']['measure'] == 'peak training memory'
    assert details['doconv_eval_over_conv']['per_case'] == {'x': 2.0, 'y': 0.5}
    assert not any('interval' in d for d in details.values())  # no rounds kept in these cases


def test_headline_ratios_interval_from_the_rounds():
    rounds = dict(doconv=[110.0, 100.0, 130.0, 105.0, 99.0], plain=[100.0] * 5)
    case = dict(family='resnet_train', mode='train_step', case='a',
                ratios={'doconv/plain': 1.05}, ratios_of_minima={'doconv/plain': 0.99},
                ratios_of_medians={'doconv/plain': 1.05}, memory_ratios={'doconv/plain': 1.1},
                pairs={'doconv/plain': ['doconv', 'plain']},
                results={n: dict(raw_ms=v) for n, v in rounds.items()})
    _, details = report.headline_ratios([case])
    low, high = details['resnet_doconv_train_over_plain']['interval']
    assert 0.99 <= low <= 1.05 <= high <= 1.3
    assert 'interval' not in details['resnet_doconv_train_mem_over_plain']  # memory: no rounds


def test_bootstrap_interval():
    assert harness.bootstrap_interval([[1.1] * 7]) == (pytest.approx(1.1), pytest.approx(1.1))
    spread = [0.9, 1.0, 1.05, 1.1, 1.2, 1.0, 1.3, 0.95, 1.02]
    low, high = harness.bootstrap_interval([spread])
    assert low < 1.02 < high and min(spread) <= low and high <= max(spread)
    assert harness.bootstrap_interval([spread]) == (low, high)  # fixed seed
    narrow = harness.bootstrap_interval([spread], level=0.5)
    assert low <= narrow[0] <= narrow[1] <= high
    # several cases: the interval of the geometric mean of the medians
    two = harness.bootstrap_interval([[2.0] * 5, [0.5] * 5])
    assert two == (pytest.approx(1.0), pytest.approx(1.0))
    for bad in (dict(per_case=[]), dict(per_case=[[]]), dict(per_case=[[1.0]], level=1.0),
                dict(per_case=[[1.0]], resamples=0)):
        with pytest.raises(ValueError, match='level'):
            harness.bootstrap_interval(**bad)


def test_round_ratios():
    res = dict(pairs={'a/b': ['a', 'b']}, results=dict(a=dict(raw_ms=[2.0, 3.0]),
                                                      b=dict(raw_ms=[1.0, 2.0])))
    assert harness.round_ratios(res, 'a/b') == [2.0, 1.5]
    assert harness.round_ratios(res, 'c/b') is None
    assert harness.round_ratios(dict(res, results=dict(a={}, b={})), 'a/b') is None


def test_profiles_targets_and_subsets():
    assert benchmark.TARGETS == KEYS
    assert set(profiles.DESCRIPTIONS) == set(KEYS) | REPORTED
    assert set(profiles.KEY_SOURCES) == set(profiles.DESCRIPTIONS)
    assert profiles.targets_for('cuda') == {
        'resnet_doconv_train_over_plain': 1.05, 'mixnet_s_train_over_timm': 1.0,
        'mixnet_s_over_timm': 0.85, 'folded_over_plain': 1.02}
    quick = profiles.profile_config('quick')
    assert 1 <= quick['layer_batch'] <= 8 and quick['min_repeats'] >= 5
    cuda = profiles.profile_config('quick', 'cuda')
    assert cuda['train_resnet'] == 50 and cuda['train_batch'] >= 64 and cuda['train_amp']
    assert cuda['train_channels_last']
    with pytest.raises(ValueError, match='profile must be one of'):
        profiles.profile_config('fast')
    assert len(profiles.cases_of(profiles.DOCONV_SHAPES, profiles.PROFILES['smoke'])) == 1
    assert len(profiles.cases_of(profiles.MIXCONV_SHAPES, profiles.PROFILES['full'])) == len(
        profiles.MIXCONV_SHAPES)
    assert 0 < len(profiles.cases_of(profiles.MIXCONV_SHAPES, quick)) <= len(
        profiles.MIXCONV_SHAPES)
    assert harness.geomean([2.0, 0.5]) == pytest.approx(1.0)


def test_resnet_pair_runs_at_its_own_batch_and_rounds(monkeypatch):
    quick, cuda = profiles.profile_config('quick'), profiles.profile_config('quick', 'cuda')
    assert quick['resnet_train_batch'] > quick['train_batch']
    assert cuda['resnet_train_batch'] is None and cuda['resnet_train_repeats'] is None
    smoke = dict(profiles.PROFILES['smoke'], resnet_train_batch=3, resnet_train_repeats=2)
    case, = train_suites.bench_resnet_train(smoke, torch.device('cpu'))['cases']
    assert case['shape'][0] == 3 and case['repeats'] == 2
    # --train-batch sets every training suite's batch, the ResNet pair's own included
    monkeypatch.setitem(profiles.PROFILES, 'smoke', smoke)
    case, = benchmark.run_benchmark('smoke', only=['resnet_train'], train_batch=1)['cases']
    assert case['shape'][0] == 1 and case['repeats'] == 2


def test_training_rounds_fill_their_time_budget():
    smoke = dict(profiles.PROFILES['smoke'], train_repeats=2, train_max_repeats=4)
    cpu = torch.device('cpu')
    for budget, rounds in ((0.0, 2), (1e6, 4)):
        cfg = dict(smoke, train_budget_s=budget)
        case, = train_suites.bench_mobilenet_v2_train(cfg, cpu)['cases']
        assert case['repeats'] == rounds
    # the ResNet pair's own budget wins where set, 0 included
    own = dict(smoke, train_budget_s=1e6, resnet_train_budget_s=0.0)
    case, = train_suites.bench_resnet_train(own, cpu)['cases']
    assert case['repeats'] == 2
    quick = profiles.profile_config('quick')
    assert quick['train_max_repeats'] > quick['train_repeats'] and quick['train_budget_s'] > 0


def test_atomic_write(tmp_path):
    path = tmp_path / 'sub' / 'x.md'
    report.atomic_write(str(path), b'one')
    report.atomic_write(str(path), b'two')
    assert path.read_bytes() == b'two'
    assert [p.name for p in path.parent.iterdir()] == ['x.md']


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match='only: unknown suites'):
        benchmark.run_benchmark('smoke', only=['resnet', 'nope'])
    with pytest.raises(ValueError, match='train_batch must be a positive int'):
        benchmark.run_benchmark('smoke', only=['resnet_train'], train_batch=0)


def test_cuda_request_without_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip('a GPU is present')
    with pytest.raises(SystemExit, match='no CUDA device'):
        benchmark.run_benchmark('smoke', device='cuda')
    assert not list(tmp_path.iterdir())


def test_keep_going_records_a_failing_suite(monkeypatch):
    """``keep_going``: a suite that raises is recorded and the others still
    run (their keys reported); without it the error propagates."""
    from mm_efficientconv.benchmark import runner

    def broken(cfg, dev):
        raise RuntimeError('planted failure')

    monkeypatch.setitem(runner.SUITES, 'mixnet', broken)
    report = runner.run_benchmark('smoke', only=['mixnet', 'bsconvu'], keep_going=True)
    assert list(report['suite_errors']) == ['mixnet']
    assert 'planted failure' in report['suite_errors']['mixnet']
    assert 'bsconvu_over_reference' in report and 'mixnet_s_over_timm' not in report
    with pytest.raises(RuntimeError, match='planted failure'):
        runner.run_benchmark('smoke', only=['mixnet'])


def _slower(rep: dict, family: str, name: str, factor: float) -> dict:
    """A copy of report ``rep`` whose step ``name`` of the ``family`` cases
    took ``factor`` times as long in every round (a second, different run)."""
    rep = copy.deepcopy(rep)
    for case in rep['cases']:
        if case['family'] == family and name in case['results']:
            case['results'][name]['raw_ms'] = [t * factor for t in case['results'][name]['raw_ms']]
    return rep


def test_combine_reports_pools_the_rounds(smoke):
    """Each case's rounds are concatenated and its ratios recomputed from all
    of them; memory figures are the median over the runs; keys and ``met``
    follow from the pooled cases; each run keeps its own keys."""
    _, first, _, _ = smoke
    second = _slower(first, 'resnet_train', 'doconv', 1.5)
    for case in second['cases']:
        if 'memory_ratios' in case:
            case['memory_ratios'] = {k: v + 0.5 for k, v in case['memory_ratios'].items()}
    second['resnet_doconv_train_over_plain'] = 1.7  # as that run would have reported it
    combined = report.combine_reports([first, second], sources=['a.json', 'b.json'])

    def resnet(rep):
        return next(c for c in rep['cases'] if c['family'] == 'resnet_train')

    a, b, c = resnet(first), resnet(second), resnet(combined)
    per_round = [d / p for rep in (a, b) for d, p in zip(rep['results']['doconv']['raw_ms'],
                                                         rep['results']['plain']['raw_ms'])]
    assert len(per_round) == a['repeats'] + b['repeats'] == c['repeats']
    assert c['ratios']['doconv/plain'] == pytest.approx(statistics.median(per_round))
    assert c['results']['doconv']['min_ms'] == min(a['results']['doconv']['min_ms'],
                                                   b['results']['doconv']['min_ms'])
    assert c['memory_ratios']['doconv/plain'] == pytest.approx(a['memory_ratios']['doconv/plain']
                                                               + 0.25)
    assert c['runs'] == 2
    # keys, intervals and verdicts of the pooled cases, exactly as for a single run
    expected = report.summarise(combined['cases'], 'cpu')
    for key in KEYS:
        assert combined[key] == pytest.approx(expected[key])
        assert combined['met'][key] == (combined[key] <= combined['targets'][key])
    assert combined['key_details']['resnet_doconv_train_over_plain']['interval']
    # each run on its own, and the first run's figures are untouched
    assert [r['source'] for r in combined['runs']] == ['a.json', 'b.json']
    assert combined['runs'][1]['keys']['resnet_doconv_train_over_plain'] == 1.7
    assert resnet(first)['results']['doconv']['raw_ms'] == a['results']['doconv']['raw_ms']
    assert combined['elapsed_s'] == pytest.approx(first['elapsed_s'] + second['elapsed_s'])
    md = report.to_markdown(combined)
    assert '## Runs' in md and '2 runs combined' in md and '`b.json`' in md


def test_combine_reports_chooses_the_faster_format_again(smoke):
    """A best-format ratio is re-chosen on the pooled medians: a format that
    is faster over both runs wins even if it lost in the first."""
    _, first, _, _ = smoke
    case = next(c for c in first['cases']
                if c['family'] == 'mixnet_s' and c['mode'] == 'train_step')
    assert case['best_format_pair'] == 'ours best/timm best'
    chosen = case['best_format']['ours']
    other = 'ours@nchw' if chosen == 'ours@cl' else 'ours@cl'
    runs = [_slower(first, 'mixnet_s', other, 0.01) for _ in range(2)]
    combined = report.combine_reports([first] + runs)
    pooled = next(c for c in combined['cases']
                  if c['family'] == 'mixnet_s' and c['mode'] == 'train_step')
    assert pooled['best_format']['ours'] == other
    assert pooled['pairs']['ours best/timm best'][0] == other


def test_combine_reports_refuses_what_does_not_match(smoke):
    _, first, _, _ = smoke
    with pytest.raises(ValueError, match='two or more reports'):
        report.combine_reports([first])
    other = copy.deepcopy(first)
    other['profile'] = 'quick'
    with pytest.raises(ValueError, match=r"reports\[1\] has profile 'quick'"):
        report.combine_reports([first, other])
    other = copy.deepcopy(first)
    other['machine']['threads'] += 1
    with pytest.raises(ValueError, match=r'reports\[1\] has threads .* one machine'):
        report.combine_reports([first, other])
    other = copy.deepcopy(first)
    other['cases'] = [c for c in other['cases'] if c['family'] != 'bsconvu']
    with pytest.raises(ValueError, match=r'reports\[1\] does not have the cases.*bsconvu'):
        report.combine_reports([first, other])
    with pytest.raises(ValueError, match=r'reports\[1\] is not a benchmark report'):
        report.combine_reports([first, {'profile': 'smoke'}])
    with pytest.raises(ValueError, match='sources: one per report'):
        report.combine_reports([first, first], sources=['a.json'])


def test_combine_cli(smoke, tmp_path, repo_root):
    """``--combine`` writes the combined report, refuses to overwrite an input
    and takes no run options."""
    path, _, _, _ = smoke
    spec = importlib.util.spec_from_file_location(
        'mmeff_benchmark_cli', repo_root / 'tools' / 'analysis' / 'benchmark.py')
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = tmp_path / 'both.json'
    combined = cli.main(['--combine', str(path), str(path), '--out', str(out)])
    assert json.loads(out.read_text())['runs'] == combined['runs']
    assert (tmp_path / 'both.md').exists() and (tmp_path / 'both.png').exists()
    before = path.read_bytes()
    with pytest.raises(SystemExit):
        cli.parse_args(['--combine', str(out), str(path), '--out', str(path)])
    assert path.read_bytes() == before
    with pytest.raises(SystemExit):
        cli.parse_args(['--combine', str(path), str(path), '--only', 'resnet', '--out',
                        str(tmp_path / 'x.json')])
    # unreadable or mismatched inputs: the message names the files, nothing is written
    (tmp_path / 'bad.json').write_text('{')
    with pytest.raises(SystemExit, match='cannot read .*bad.json'):
        cli.main(['--combine', str(path), str(tmp_path / 'bad.json'), '--out',
                  str(tmp_path / 'y.json')])
    with pytest.raises(SystemExit, match=r'--combine .*smoke.json.*two or more'):
        cli.main(['--combine', str(path), '--out', str(tmp_path / 'y.json')])
    assert not (tmp_path / 'y.json').exists() and not (tmp_path / 'y.md').exists()
