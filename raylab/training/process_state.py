"""A worker process as clean as a fresh one, at the start of every trial. Ray-free.

`runner.py` lets Ray Tune reuse a worker process for the next trial with the same resources
(`TuneConfig(reuse_actors=True)`): interpreter start, `import torch` and a CUDA context are paid
once per process instead of once per trial. Tune then resets only its own session (trial id,
directories, log files, iteration counters; `FunctionTrainable.reset_config` in Ray 2.60) and runs
the function in a new thread. Everything PyTorch and NumPy keep per process stays as the previous
trial left it, so `reset_process_state` puts it back, in one place, at every trial's start.

What a trial may leave behind, and where it is undone:
- global random generators (Python, NumPy, torch on every device): seeded by `training.run_trial`
  from the trial's seed (`seed_everything`), or restored from its checkpoint;
- process-wide torch and NumPy settings (default dtype and device, autograd and anomaly modes,
  deterministic algorithms and their fill of uninitialized memory, matmul precision and reductions,
  the preferred BLAS and linear-algebra libraries (cuBLAS or cuBLASLt; cuSOLVER or MAGMA behind
  `matrix_exp` and `eigh`, which expRNN and nnRNN use), the scaled-dot-product-attention backends,
  cuDNN, oneDNN, NNPACK, the quantized engine, einsum's contraction order, the attention fast path,
  warning and sparse-invariant modes, NumPy error handling): `FRESH_SETTINGS` below, read when this
  module is first imported, before any trial runs, and written back;
- environment variables: as the first trial of this process found them (after Ray and Tune set
  theirs), put back at every later trial's start. What a library read from a variable when it was
  set (cuBLAS reads CUBLAS_WORKSPACE_CONFIG once per handle) cannot be undone this way; a sweep
  whose cells or tasks are user code gets no process reuse at all (`runner.run_configs`), because
  state kept in a user module (a module-level cache) is beyond any list;
- threads: set from the trial's CPUs (`torch.set_num_threads`); denormals flushed: off;
- GPU memory: the previous trial's cached blocks released, peak statistics reset, and the cap set
  again to this trial's share (a whole GPU: no cap);
- cached data: only what is provably identical stays (`raylab.tasks.data`: decoded files are keyed by
  path, size and modification time, and checksummed files are verified).
Ray Tune never reuses the process of a trial that raised: a failed trial's retry starts fresh.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

# Flags under torch.backends, read and written as attributes. The fp32_precision ones are PyTorch's
# current TF32/bf16 switches; the legacy allow_tf32 and float32_matmul_precision are views onto them.
BACKEND_FLAGS = (
    "fp32_precision",  # before the per-backend ones, which it would otherwise overwrite
    "cuda.matmul.fp32_precision",
    "cuda.matmul.allow_fp16_reduced_precision_reduction",
    "cuda.matmul.allow_bf16_reduced_precision_reduction",
    "cudnn.enabled",
    "cudnn.benchmark",
    "cudnn.deterministic",
    "cudnn.fp32_precision",
    "cudnn.conv.fp32_precision",
    "cudnn.rnn.fp32_precision",
    "mkldnn.enabled",
    "mkldnn.fp32_precision",
    "mkldnn.matmul.fp32_precision",
    "mkldnn.conv.fp32_precision",
    "mkldnn.rnn.fp32_precision",
    "mkldnn.deterministic",
    "cuda.matmul.allow_fp16_accumulation",
    "quantized.engine",
    # einsum's contraction order, when opt_einsum is installed (PyTorch ignores the switches otherwise)
    *(("opt_einsum.enabled", "opt_einsum.strategy") if torch.backends.opt_einsum.is_available() else ()),
)


def backend_flag(path: str) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
    """(read, write) of `torch.backends.<path>`."""
    *parents, name = path.split(".")

    def owner() -> Any:
        node: Any = torch.backends
        for part in parents:
            node = getattr(node, part)
        return node

    return (lambda: getattr(owner(), name)), (lambda value: setattr(owner(), name, value))


# name -> (read, write) of every process-wide setting a trial could change. Explicit, so that a
# reviewer sees what is reset; a setting missing here survives from one trial to the next.
SETTINGS: dict[str, tuple[Callable[[], Any], Callable[[Any], Any]]] = {
    "default_dtype": (torch.get_default_dtype, torch.set_default_dtype),
    # None, not "cpu": an explicit default device puts a function mode in front of every torch call
    "default_device": (torch.get_default_device, lambda device: torch.set_default_device(None if device.type == "cpu" else device)),
    "grad_enabled": (torch.is_grad_enabled, torch.set_grad_enabled),  # per thread: the trial's own
    "anomaly_detection": (
        lambda: (torch.is_anomaly_enabled(), torch.is_anomaly_check_nan_enabled()),
        lambda value: torch.autograd.set_detect_anomaly(*value),
    ),
    "deterministic_algorithms": (
        lambda: (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()),
        lambda value: torch.use_deterministic_algorithms(value[0], warn_only=value[1]),
    ),
    "autograd_multithreading": (torch.autograd.is_multithreading_enabled, torch.autograd.set_multithreading_enabled),
    "deterministic_fill_uninitialized_memory": (
        lambda: torch.utils.deterministic.fill_uninitialized_memory,
        lambda value: setattr(torch.utils.deterministic, "fill_uninitialized_memory", value),
    ),
    # Flags of PyTorch's global context that are read through functions, not attributes. The getters
    # touch no device: reading them on a CPU-only machine does not initialise CUDA.
    "cuda.preferred_linalg_library": (torch.backends.cuda.preferred_linalg_library, torch.backends.cuda.preferred_linalg_library),
    "cuda.preferred_blas_library": (torch.backends.cuda.preferred_blas_library, torch.backends.cuda.preferred_blas_library),
    "cuda.flash_sdp": (torch.backends.cuda.flash_sdp_enabled, torch.backends.cuda.enable_flash_sdp),
    "cuda.mem_efficient_sdp": (torch.backends.cuda.mem_efficient_sdp_enabled, torch.backends.cuda.enable_mem_efficient_sdp),
    "cuda.math_sdp": (torch.backends.cuda.math_sdp_enabled, torch.backends.cuda.enable_math_sdp),
    "cuda.cudnn_sdp": (torch.backends.cuda.cudnn_sdp_enabled, torch.backends.cuda.enable_cudnn_sdp),
    "cuda.math_sdp_fp16_bf16_reduction": (torch.backends.cuda.fp16_bf16_reduction_math_sdp_allowed, torch.backends.cuda.allow_fp16_bf16_reduction_math_sdp),
    "mha_fastpath": (torch.backends.mha.get_fastpath_enabled, torch.backends.mha.set_fastpath_enabled),
    "nnpack": (torch._C._get_nnpack_enabled, torch.backends.nnpack.set_flags),  # no public getter
    "warn_always": (torch.is_warn_always_enabled, torch.set_warn_always),
    "sparse_invariants": (
        torch.sparse.check_sparse_tensor_invariants.is_enabled,
        lambda value: torch.sparse.check_sparse_tensor_invariants.enable() if value else torch.sparse.check_sparse_tensor_invariants.disable(),
    ),
    "numpy_errors": (np.geterr, lambda value: np.seterr(**value)),
    **{f"backends.{path}": backend_flag(path) for path in BACKEND_FLAGS},
}


def read_settings() -> dict[str, Any]:
    return {name: read() for name, (read, _) in SETTINGS.items()}


FRESH_SETTINGS = read_settings()  # this process before any trial ran (the trainable imports us first)
# The environment of this process's first trial, taken when it starts: not at import, because Tune
# sets variables of its own between loading the trainable and starting a trial (TUNE_ORIG_WORKING_DIR).
FRESH_ENVIRONMENT: dict[str, str] | None = None


def restore_environment() -> list[str]:
    """Put os.environ back as the first trial found it (the first call takes the snapshot); return
    `environ.<NAME>` for each variable set, changed or removed since."""
    global FRESH_ENVIRONMENT
    if FRESH_ENVIRONMENT is None:
        FRESH_ENVIRONMENT = dict(os.environ)
        return []
    changed = sorted(name for name in {*os.environ, *FRESH_ENVIRONMENT} if os.environ.get(name) != FRESH_ENVIRONMENT.get(name))
    for name in changed:
        if name in FRESH_ENVIRONMENT:
            os.environ[name] = FRESH_ENVIRONMENT[name]
        else:
            del os.environ[name]
    return [f"environ.{name}" for name in changed]


def reset_process_state(num_threads: int, gpu_share: float = 0.0) -> list[str]:
    """Undo whatever an earlier trial in this process changed; return the names of the settings reset.

    Call at the start of every trial, in the thread that runs it, before the trial seeds and builds
    anything. `num_threads` is the trial's CPUs; `gpu_share` its GPUs (a fraction caps memory).
    """
    changed = [name for name, value in read_settings().items() if value != FRESH_SETTINGS[name]]
    for name in changed:
        SETTINGS[name][1](FRESH_SETTINGS[name])
    changed += restore_environment()
    torch.set_num_threads(max(1, num_threads))
    torch.set_flush_denormal(False)  # no getter: always written (False is PyTorch's default)
    gc.collect()  # the previous trial's model, optimizer and data, before the GPU cache is emptied
    # What survives is the process's long-lived state (modules, data caches). Freezing it keeps the
    # next trial's collection to the objects created since: a full pass over torch, Tune and
    # torch._dynamo takes about 0.1 s on 2 cores, which every reused trial paid (docs/throughput.md).
    gc.freeze()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    if torch.cuda.is_available() and gpu_share > 0:
        # Ray's GPU fractions are logical only: cap this process's memory to its share (1: no cap).
        torch.cuda.set_per_process_memory_fraction(gpu_share if gpu_share < 1 else 1.0)
    return changed
