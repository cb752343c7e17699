"""detectron2's ``launch`` that also runs several CPU processes with gloo (detectron2 v0.6 assumes
one CUDA device per process and NCCL); the distributed tests use it on CPU."""
from typing import Optional

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.utils import comm


def launch(main_func, num_processes: int = 1, num_machines: int = 1, machine_rank: int = 0,
           dist_url: Optional[str] = None, args=(), backend: Optional[str] = None, timeout_s: int = 1800):
    """Run ``main_func(*args)`` in ``num_processes`` processes per machine.

    With CUDA, one process per GPU and NCCL (like detectron2's ``launch``). Without CUDA (or
    with ``backend="gloo"``), CPU processes that communicate with gloo, which is what the
    distributed tests use.
    """
    world_size = num_machines * num_processes
    if world_size <= 1:
        return main_func(*args)
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl" and num_processes > torch.cuda.device_count():
        raise ValueError(f"{num_processes} processes per machine but only {torch.cuda.device_count()} GPUs")
    if dist_url is None or dist_url == "auto":
        if num_machines != 1:
            raise ValueError("dist_url=auto is only supported for one machine")
        from detectron2.engine.launch import _find_free_port

        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    mp.start_processes(
        _worker, nprocs=num_processes,
        args=(main_func, world_size, num_processes, machine_rank, dist_url, args, backend, timeout_s),
        daemon=False, start_method="spawn",
    )


def _worker(local_rank, main_func, world_size, num_per_machine, machine_rank, dist_url, args, backend, timeout_s):
    import datetime

    global_rank = machine_rank * num_per_machine + local_rank
    dist.init_process_group(backend=backend, init_method=dist_url, world_size=world_size, rank=global_rank,
                            timeout=datetime.timedelta(seconds=timeout_s))
    num_machines = world_size // num_per_machine
    for i in range(num_machines):  # per-machine process group, as detectron2's comm expects
        ranks = list(range(i * num_per_machine, (i + 1) * num_per_machine))
        pg = dist.new_group(ranks)
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = pg
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()
