"""DDP (repro.ddp, `repro finetune --ddp N`): the batch partition, and one training step on two gloo processes
equal to the same step in one process (the rank-weighted loss and the gathered evaluation). Offline, CPU."""

import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from ddp_worker import build
from repro import ddp
from repro.ddp import Dist, RankBatches, share

WORKER = ROOT / "tests" / "ddp_worker.py"


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_the_ranks_shares_partition_each_batch(world):
    for size in range(world, 12):
        batch = list(range(100, 100 + size))
        parts = [share(batch, Dist(rank, world)) for rank in range(world)]
        assert sum(parts, []) == batch
        assert max(map(len, parts)) - min(map(len, parts)) <= 1 and all(parts)


def test_every_rank_draws_the_same_global_batches_and_a_too_small_last_one_is_dropped():
    world = 3
    samplers = [RankBatches(10, 4, torch.Generator().manual_seed(0), Dist(rank, world)) for rank in range(world)]
    steps = [list(s) for s in samplers]
    assert [len(s) for s in samplers] == [len(x) for x in steps] == [2, 2, 2]  # 4 + 4 + 2: the 2 is dropped
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0)).tolist()
    for step in range(2):
        assert sum((steps[rank][step] for rank in range(world)), []) == order[4 * step:4 * step + 4]
    assert ddp.from_env() == ddp.SINGLE or ddp.from_env().world > 1


def _run(command, out, timeout=300):
    done = subprocess.run(command + [str(WORKER), str(out)], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    from safetensors.torch import load_file

    return load_file(out)


def test_a_step_on_two_ranks_equals_the_step_in_one_process(tmp_path):
    single = _run([sys.executable], tmp_path / "one.safetensors")
    pair = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"],
                tmp_path / "two.safetensors")
    assert int(single.pop("world")) == 1 and int(pair.pop("world")) == 2
    # the same 7 images in one batch (shares of 4 and 3): the same mean loss, gradient, update and predictions
    assert float(pair.pop("train_loss")) == pytest.approx(float(single.pop("train_loss")), rel=1e-6)
    assert single.keys() == pair.keys()
    for key in single:
        assert torch.allclose(single[key], pair[key], atol=1e-6), key
    torch.manual_seed(0)  # train_config's init: the step did move the weights, so the comparison means something
    initial = build().state_dict()
    assert not torch.allclose(initial["4.weight"], single["4.weight"], atol=1e-3)
