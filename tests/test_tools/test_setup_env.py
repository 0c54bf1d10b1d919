# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""``tools/setup/setup_env.sh``: the disk-space check that runs before the
steps that write gigabytes (pip otherwise fails half-way through the torch
install with ``[Errno 28] No space left on device``).

The script installs the whole stack, so the test runs its ``die`` and
``need_space`` functions alone, cut out of the script as it ships.
"""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / 'tools' / 'setup' / 'setup_env.sh'


def _functions() -> str:
    text = SCRIPT.read_text()
    die = re.search(r'^die\(\) \{.*\}$', text, re.M)
    need = re.search(r'^need_space\(\) \{.*?^\}$', text, re.M | re.S)
    assert die and need, 'die / need_space not found in setup_env.sh'
    return die.group(0) + '\n' + need.group(0) + '\n'


def _need_space(directory: Path, mib: int) -> subprocess.CompletedProcess:
    script = _functions() + f'need_space "{directory}" {mib} "installing the thing"\necho passed\n'
    return subprocess.run(['bash', '-c', script], capture_output=True, text=True, timeout=30)


def test_enough_space_passes(tmp_path):
    res = _need_space(tmp_path, 1)
    assert res.returncode == 0 and res.stdout.strip() == 'passed', res.stderr


def test_too_little_space_stops_with_what_where_and_how_much(tmp_path):
    free_mib = shutil.disk_usage(tmp_path).free // 2**20
    need = free_mib + 10 * 1024
    res = _need_space(tmp_path, need)
    assert res.returncode == 1 and 'passed' not in res.stdout
    msg = res.stderr
    assert 'installing the thing' in msg and str(tmp_path) in msg
    assert f'about {(need + 1023) // 1024} GiB free' in msg
    assert re.search(r'only \d+ MiB are free', msg), msg


@pytest.mark.parametrize('step', ['installing torch', 'compiling mmcv'])
def test_the_big_steps_check_first(step):
    text = SCRIPT.read_text()
    assert re.search(rf'need_space "[^"]+" \d+ "{step}', text), step
