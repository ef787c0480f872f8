"""Several training processes (ranks) on torch.distributed: who this process is, how a step's
batches are dealt out, and `tmd train --nproc N`'s own launcher.

One optimizer step trains the same `batch_size x grad_accum` examples whatever the number of ranks:
the step's micro-batches are dealt round-robin (rank r trains micro-batches r, r+N, ...), so
`--nproc 2` halves each rank's accumulation. When a step has fewer micro-batches than ranks (e.g.
grad_accum 1), its examples are dealt one by one instead. DistributedDataParallel then sums the
ranks' gradients (each rank's loss is scaled by the number of ranks, undoing DDP's mean), which
is the single-process step's gradient up to the order of the additions.

Under `torchrun` every rank runs `tmd train` itself and this module reads RANK, WORLD_SIZE and
LOCAL_RANK from the environment; `--nproc N` starts N local ranks with a file rendezvous instead.
"""

from __future__ import annotations

import os
import signal
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from tmd_local.core.errors import TmdError

# A rank waits this long for the others at a collective (rank 0 writing a checkpoint or the
# outputs, a slow neighbour) before giving up.
TIMEOUT = timedelta(minutes=60)
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def current() -> Ranks:
    """This process's place: from an initialised process group, else a single process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return Ranks()
    env = os.environ
    local_world = int(env.get("LOCAL_WORLD_SIZE", dist.get_world_size()))
    return Ranks(dist.get_rank(), dist.get_world_size(), int(env.get("LOCAL_RANK", 0)), local_world)


def under_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_ENV) and int(os.environ["WORLD_SIZE"]) > 1


def check_nproc(nproc: int, device: str) -> None:
    """A sensible --nproc for this machine, before anything is started: one line otherwise."""
    import torch

    if under_torchrun() and nproc != 1:
        raise TmdError(f"--nproc {nproc}: this process was started by torchrun "
                       f"(WORLD_SIZE={os.environ['WORLD_SIZE']}); give the ranks to torchrun, not --nproc")
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TmdError("--device cuda: no CUDA device is available here")
        gpus = torch.cuda.device_count()
        if nproc > gpus:
            raise TmdError(f"--nproc {nproc}: expected at most {gpus}, one rank per CUDA device")
        return
    cores = available_cores()
    if nproc > cores:
        raise TmdError(f"--nproc {nproc}: expected at most {cores} on CPU (one rank per available core)")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def init(device_type: str, init_method: str = "env://", rank: int | None = None,
         world: int | None = None) -> Ranks:
    """Join the process group (gloo on CPU, nccl on CUDA) and return this rank's place."""
    import torch
    import torch.distributed as dist

    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    kwargs = {} if rank is None else {"rank": rank, "world_size": world}
    dist.init_process_group(backend, init_method=init_method, timeout=TIMEOUT, **kwargs)
    return current()


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_share(window: list[list[int]], ranks: Ranks) -> list[tuple[int, list[int]]]:
    """The micro-batches this rank trains of a step's window, each as (its index in the window,
    its example indices); the index seeds the micro-batch's dropout, whichever rank trains it."""
    if len(window) >= ranks.world:
        return list(enumerate(window))[ranks.rank::ranks.world]
    examples = [i for batch in window for i in batch]
    mine = examples[ranks.rank::ranks.world]
    return [(ranks.rank, mine)] if mine else []


def passes_per_rank(window: list[list[int]], world: int) -> int:
    """Forward/backward passes every rank makes in a step: DDP needs the same number on each, so a
    rank with less to do makes a pass whose loss counts zero."""
    if len(window) >= world:
        return -(-len(window) // world)
    return 1


def all_sum(values: list[float]) -> list[float]:
    """The element-wise sum over ranks (float64, so token counts stay exact)."""
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor)
    return tensor.tolist()


def _collective_device() -> str:
    """nccl reduces CUDA tensors only."""
    import torch
    import torch.distributed as dist

    return f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"


def all_gather_floats(value: float) -> list[float]:
    """Every rank's value, in rank order."""
    import torch
    import torch.distributed as dist

    device = _collective_device()
    values = [torch.zeros(1, dtype=torch.float64, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(values, torch.tensor([value], dtype=torch.float64, device=device))
    return [v.item() for v in values]


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


# --- `tmd train --nproc N`: N local ranks --------------------------------------------------

def launch(nproc: int, target, *args) -> None:
    """Run `target(*args)` in `nproc` fresh processes that form one process group, and wait.

    A rank's TmdError comes back as this process's TmdError (rank 0's message first). When a rank
    dies (a kill, an out-of-memory), the others fail at their next collective; then this raises
    one line saying which rank ended how: the checkpoints rank 0 wrote are kept and the same
    command resumes from the latest. SIGTERM here is passed on to the ranks, which checkpoint
    together and stop; Ctrl-C reaches them from the terminal directly."""
    import multiprocessing.connection as connection

    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    errors = ctx.SimpleQueue()
    with tempfile.TemporaryDirectory(prefix="tmd-ranks-") as tmp:
        rendezvous = f"file://{Path(tmp) / 'store'}"
        procs = [ctx.Process(target=_rank_entry, args=(r, nproc, rendezvous, errors, target, args))
                 for r in range(nproc)]
        for p in procs:
            p.start()
        previous = _pass_signals_to(procs)
        try:
            pending = {p.sentinel: p for p in procs}
            while pending:
                for sentinel in connection.wait(list(pending)):
                    pending.pop(sentinel).join()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    _raise_for_failures(nproc, procs, errors)


def _raise_for_failures(nproc: int, procs, errors) -> None:
    """One line for the run's failure, if any. A rank killed by a signal comes first: the other
    ranks' errors are then only its echo (a collective that lost its peer)."""
    reports = {}
    while not errors.empty():
        rank, message, trace = errors.get()
        reports.setdefault(rank, (message, trace))
    killed = [(r, p.exitcode) for r, p in enumerate(procs) if p.exitcode is not None and p.exitcode < 0]
    if killed:
        rank, code = killed[0]
        raise TmdError(f"train --nproc {nproc}: rank {rank} was killed by {signal.Signals(-code).name}; "
                       "the other ranks stopped too. The latest checkpoint is kept: the same command "
                       "resumes from it")
    if reports:
        message, trace = reports[min(reports)]
        if trace:  # not a TmdError: a bug or a library failure, whose traceback is worth seeing
            import sys
            print(trace, file=sys.stderr)
        raise TmdError(message)
    failed = [(r, p.exitcode) for r, p in enumerate(procs) if p.exitcode != 0]
    if failed:
        rank, code = failed[0]
        raise TmdError(f"train --nproc {nproc}: rank {rank} exited with status {code}; "
                       "the same command resumes from the latest checkpoint")


def _pass_signals_to(procs) -> dict:
    """SIGTERM to the launcher goes on to every rank once; SIGINT is ignored here, as a terminal's
    Ctrl-C reaches the ranks (same process group) by itself."""
    def forward(signum, frame):
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signum)

    previous = {}
    for sig, handler in ((signal.SIGTERM, forward), (signal.SIGINT, signal.SIG_IGN)):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: leave signals alone
            pass
    return previous


def _rank_entry(rank: int, world: int, rendezvous: str, errors, target, args) -> None:
    import sys
    import traceback

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_WORLD_SIZE=str(world))
    _name_process(f"tmd-rank-{rank}")
    try:
        target(rank, world, rendezvous, *args)
    except TmdError as e:
        errors.put((rank, str(e), ""))
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # reported by the launcher, in one line unless it is the first cause
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        errors.put((rank, f"rank {rank}: {type(e).__name__}: {first}", traceback.format_exc()))
        sys.exit(1)


def _name_process(name: str) -> None:
    """The name `ps`/`top` show for this process (Linux), so a rank can be told from another."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass
