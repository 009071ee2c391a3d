"""movq.distributed: one-process context and no-op helpers; 2 gloo processes for gather order, flags, ownership."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from movq.distributed import (
    DistContext,
    all_reduce_sum,
    any_flag,
    barrier,
    broadcast,
    gather_objects,
    setup,
    teardown,
)

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def no_torchrun_env(monkeypatch):
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)


def test_single_process_context(no_torchrun_env):
    ctx = setup("cpu")
    assert ctx == DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), owns_group=False)
    assert ctx.is_main and not ctx.enabled
    assert not dist.is_initialized()


def test_world_size_one_from_torchrun_joins_no_group(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    ctx = setup("cpu")
    assert (ctx.world_size, ctx.owns_group, ctx.enabled) == (1, False, False)
    assert not dist.is_initialized()


def test_unknown_device_is_a_value_error(no_torchrun_env):
    with pytest.raises(ValueError, match="unknown device"):
        setup("tpu:7")


def test_helpers_are_no_ops_without_a_group(no_torchrun_env):
    ctx = setup("cpu")
    obj = {"a": [1, 2]}
    assert gather_objects(obj, ctx) == [obj]
    assert any_flag(True, ctx) is True and any_flag(False, ctx) is False
    barrier(ctx)
    t = torch.tensor([1.0, 2.0])
    assert all_reduce_sum(t) is t and t.tolist() == [1.0, 2.0]
    assert broadcast(t) is t and t.tolist() == [1.0, 2.0]
    teardown(ctx)  # nothing to destroy


def test_adopted_one_process_group_is_not_destroyed(no_torchrun_env, tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        ctx = setup("cpu")
        assert (ctx.rank, ctx.world_size, ctx.owns_group, ctx.enabled) == (0, 1, False, False)
        teardown(ctx)
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    for name in TORCHRUN_VARS:
        os.environ.pop(name, None)
    result: dict = {}
    # 1. a group someone else initialised is adopted, and survives our teardown
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    adopted = setup("cpu")
    teardown(adopted)
    result["adopted"] = [adopted.rank, adopted.world_size, adopted.local_rank, adopted.owns_group]
    result["adopted_alive"] = dist.is_initialized()
    dist.destroy_process_group()
    # 2. torchrun's environment: setup joins the group and owns it
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    ctx = setup("cpu")
    result["owned"] = [ctx.rank, ctx.world_size, ctx.local_rank, ctx.owns_group, ctx.enabled, ctx.is_main]
    if rank == 0:
        time.sleep(0.5)  # rank 1 reaches the gather first: the order must still be by rank
    result["gathered"] = gather_objects({"rank": rank, "payload": "x" * (rank + 1)}, ctx)
    barrier(ctx)
    result["any_one"] = any_flag(rank == 1, ctx)
    result["any_none"] = any_flag(False, ctx)
    result["sum"] = all_reduce_sum(torch.tensor([rank + 1.0, 10.0 * rank])).tolist()
    result["broadcast"] = broadcast(torch.tensor([rank + 5.0])).tolist()
    teardown(ctx)
    result["owned_alive"] = dist.is_initialized()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_gloo_processes(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rank, r in enumerate(results):
        assert r["adopted"] == [rank, 2, rank, False] and r["adopted_alive"] is True
        assert r["owned"] == [rank, 2, rank, True, True, rank == 0] and r["owned_alive"] is False
        assert r["gathered"] == [{"rank": 0, "payload": "x"}, {"rank": 1, "payload": "xx"}]
        assert r["any_one"] is True and r["any_none"] is False
        assert r["sum"] == [3.0, 10.0]
        assert r["broadcast"] == [5.0]
