"""EMA quantizer under torch.distributed (2 gloo processes on CPU): replicas must stay identical."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from movq.quantizers import EMAVectorQuantizer


def _plain_quantizer() -> EMAVectorQuantizer:
    torch.manual_seed(1)
    return EMAVectorQuantizer(8, 3, decay=0.7, dead_code_threshold=0.0)


def _rank_batch(rank: int) -> torch.Tensor:
    return torch.randn(1 + rank, 3, 4, 4, generator=torch.Generator().manual_seed(7 + rank))


def _worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)  # same module init on both replicas
        q = EMAVectorQuantizer(16, 3, decay=0.9, dead_code_threshold=2.0, kmeans_init=True, kmeans_iters=5)
        q.train()
        torch.manual_seed(100 + rank)  # different data and different local RNG (restart samples)
        for step in range(8):
            scale = 1.0 + rank + step  # the replicas see differently distributed batches
            q(scale * torch.randn(2 + rank, 3, 4, 4))
        torch.save({k: v.clone() for k, v in q.state_dict().items()}, os.path.join(out_dir, f"rank{rank}.pt"))
        plain = _plain_quantizer().train()
        plain(_rank_batch(rank))
        torch.save(plain.state_dict(), os.path.join(out_dir, f"plain{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_ema_replicas_stay_identical(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert set(states[0]) == set(states[1])
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    assert bool(states[0]["initialized"])
    # one synchronised step equals one single-process step on the concatenated batch
    single = _plain_quantizer().train()
    single(torch.cat([_rank_batch(0), _rank_batch(1)]))
    for rank in range(2):
        plain = torch.load(tmp_path / f"plain{rank}.pt")
        for key, value in single.state_dict().items():
            torch.testing.assert_close(plain[key], value, msg=key)
