"""Detectron2's ``launch``, made to work where the installed (pb1-detectron2) version does not.

That version's worker asserts CUDA and initialises NCCL. This module keeps its behaviour on GPU
machines (it calls it) and adds two paths, as newer Detectron2 releases do:

- no CUDA: the same ``mp.spawn`` of ``num_gpus_per_machine`` processes per machine, over gloo;
- started by ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE in the environment):
  this process is one worker; the process group is initialised from ``env://`` (NCCL with CUDA,
  else gloo) and nothing is spawned.
"""
import logging
import os
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as d2_launch
from detectron2.engine.launch import DEFAULT_TIMEOUT, _find_free_port
from detectron2.utils import comm

logger = logging.getLogger(__name__)

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


def launched_by_torchrun() -> bool:
    return all(v in os.environ for v in _TORCHRUN_VARS)


def _setup_local_group(world_size: int, local_size: int, machine_rank: int) -> None:
    # Detectron2's comm.get_local_rank() needs the per-machine group; every rank must create all of them.
    if comm._LOCAL_PROCESS_GROUP is not None:
        raise RuntimeError("the local process group already exists: launch() was called twice")
    for i in range(world_size // local_size):
        group = dist.new_group(list(range(i * local_size, (i + 1) * local_size)))
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group


def _init_and_run(main_func, args, *, backend: str, init_method: str, world_size: int, rank: int,
                  local_rank: int, local_size: int, timeout: timedelta):
    try:
        dist.init_process_group(backend=backend, init_method=init_method, world_size=world_size, rank=rank,
                                timeout=timeout)
    except Exception:
        logger.error(f"process group init failed: backend {backend}, URL {init_method}, rank {rank}/{world_size}")
        raise
    _setup_local_group(world_size, local_size, rank // local_size)
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    comm.synchronize()
    try:
        return main_func(*args)
    finally:
        dist.destroy_process_group()


def _cpu_worker(local_rank, main_func, world_size, local_size, machine_rank, dist_url, args, timeout):
    _init_and_run(main_func, args, backend="gloo", init_method=dist_url, world_size=world_size,
                  rank=machine_rank * local_size + local_rank, local_rank=local_rank, local_size=local_size,
                  timeout=timeout)


def launch(main_func, num_gpus_per_machine: int, num_machines: int = 1, machine_rank: int = 0,
           dist_url=None, args=(), timeout: timedelta = DEFAULT_TIMEOUT):
    """Same arguments as ``detectron2.engine.launch``; ``num_gpus_per_machine`` counts processes
    (one per GPU, or CPU processes on a machine without CUDA). Under torchrun the arguments
    ``num_gpus_per_machine``, ``num_machines``, ``machine_rank`` and ``dist_url`` are ignored."""
    if launched_by_torchrun():
        world_size, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
        local_rank, local_size = int(os.environ["LOCAL_RANK"]), int(os.environ["LOCAL_WORLD_SIZE"])
        if world_size == 1:
            return main_func(*args)
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        logger.info(f"torchrun worker {rank}/{world_size} (local {local_rank}/{local_size}), backend {backend}")
        return _init_and_run(main_func, args, backend=backend, init_method="env://", world_size=world_size,
                             rank=rank, local_rank=local_rank, local_size=local_size, timeout=timeout)
    world_size = num_machines * num_gpus_per_machine
    if torch.cuda.is_available() or world_size == 1:
        return d2_launch(main_func, num_gpus_per_machine, num_machines=num_machines, machine_rank=machine_rank,
                         dist_url=dist_url, args=args, timeout=timeout)
    if dist_url in (None, "auto"):
        if num_machines != 1:
            raise ValueError("--dist-url auto works only on one machine; give tcp://HOST:PORT of machine 0")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    mp.spawn(_cpu_worker, nprocs=num_gpus_per_machine, daemon=False,
             args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout))
