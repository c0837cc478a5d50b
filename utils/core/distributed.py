"""Glue between our runs and `accelerate launch` (DDP, DeepSpeed ZeRO-2/3, FSDP2); no distribution of our own.
What accelerate / transformers / TRL do not do for us, each called from one place:

- `cpu_launch_defaults` (rlhf_args/base.py): CPU runs with several processes (CI, laptops). accelerate
  1.15's `PartialState` picks the process-group backend from the device it finds; with no CUDA device it
  finds none and reports a world size of 1 although torchrun started 2 processes. The Trainer then fills
  DeepSpeed's "auto" batch sizes for 1 process and DeepSpeed, which counts 2, refuses the config
  ("train_batch_size is not equal to micro_batch_per_gpu * gradient_acc_step * world_size 2 != 2 * 1 * 2");
  under DDP each process would silently train alone. Setting `ddp_backend="gloo"` (and, for DDP, `use_cpu`)
  before TrainingArguments sets up its devices fixes both. On a GPU machine nothing changes. No upstream report
  found (searched "accelerate PartialState CPU torchrun world size 1 gloo", 2026-12-02); drop when accelerate picks
  gloo for CPU processes itself.
- `shared_datasets` (main_train.build_trainer): `precompute_ref_log_probs` with several processes.
- `prepare_final_save` (main_train.save_outputs): the final model saved whole under FSDP and ZeRO-3.
- `exit_process` (main_train `__main__`): the process group destroyed, then a launched process ends without
  the interpreter's teardown.
"""

from __future__ import annotations

import os
import sys


def _env_true(name: str) -> bool:
    return os.environ.get(name, "false").lower() in ("1", "true", "yes")


def launched() -> bool:
    """True inside a process started by `accelerate launch` / torchrun (one or several processes)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def launched_many() -> bool:
    """True in one of several processes (`RANK` names this one)."""
    return launched() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def first_process() -> bool:
    """True in the one process (rank 0) that prints and writes what every process would say alike."""
    return os.environ.get("RANK", "0") == "0"


def engine() -> str:
    """What `accelerate launch` set up for this process: deepspeed, fsdp, ddp, or single."""
    if _env_true("ACCELERATE_USE_DEEPSPEED"):
        return "deepspeed"
    if _env_true("ACCELERATE_USE_FSDP"):
        return "fsdp"
    return "ddp" if launched() else "single"


def process_defaults() -> None:
    """The process environment a training run sets before its configs are built (main_train: once, not by a
    config object)."""
    import torch

    # deepspeed 0.19.8 (real_accelerator.py) warns whenever its detection falls back to CPU, on purpose: no upstream
    # report found (searched "DeepSpeed Setting accelerator to CPU DS_ACCELERATOR", 2026-12-02); drop if it goes.
    if not torch.cuda.is_available():  # DeepSpeed would log "Setting accelerator to CPU" in every run otherwise
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def cpu_launch_defaults(args) -> None:
    """Called by OurDefaults.__post_init__ before TrainingArguments sets up devices (see the module docstring): the
    config's own fields only."""
    import torch

    if not launched() or torch.cuda.is_available():
        return
    # accelerate 1.15: no upstream report found (searched "accelerate FSDP on CPU not supported", 2026-12-02); drop
    # when accelerate runs FSDP on CPU processes.
    if engine() == "fsdp":  # a ValueError here becomes main_train's one-paragraph config error
        raise ValueError("FSDP through accelerate needs GPUs: accelerate 1.15 has no FSDP on CPU processes. On CPU, "
                        "use script/zero3.yaml (DeepSpeed ZeRO-3 with DS_ACCELERATOR=cpu) or script/ddp.yaml.")
    if args.deepspeed and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # transformers' own DeepSpeed path (--deepspeed, no accelerate config) does not pass a backend on: the
        # world size would be 1 and DeepSpeed would refuse the batch sizes.
        raise ValueError("--deepspeed CONFIG.json under torchrun needs GPUs; on CPU launch DeepSpeed through "
                         "accelerate: accelerate launch --config_file script/zero3.yaml (or zero2.yaml) main_train.py "
                         "..., i.e. ZERO=3 bash script/rlhf_run.sh ...")
    if args.ddp_backend is None:
        args.ddp_backend = "gloo"
    if engine() == "ddp" and not args.deepspeed:
        args.use_cpu = True  # accelerate's MULTI_CPU state: DDP over gloo


def shared_datasets(config, train, evals):
    """File-backed copies of in-memory datasets, for `precompute_ref_log_probs` with several processes.

    TRL 1.16 (DPO, KTO `_precompute_ref_logps`) writes the reference log-probs on rank 0 next to the dataset's
    cache files and every rank reads them back. Ours live in each process's private scratch folder
    (utils/data/loading.py), so rank 1 would look in its own and fail with "FileNotFoundError: ... cache-<hash>.arrow".
    Saving the datasets once under `output_dir` (a directory every process sees, as checkpoints need anyway) gives
    them files all ranks share. Not huggingface/trl#6291 (fixed by huggingface/trl#6348, in 1.16); for per-process
    cache folders no upstream report found (searched "precompute_ref_log_probs FileNotFoundError rank cache",
    2026-12-02). Drop when TRL hands every rank the log-probs another way than each dataset's own cache folder.
    """
    if not getattr(config, "precompute_ref_log_probs", False) or config.world_size <= 1:
        return train, evals
    from accelerate import PartialState
    from datasets import Dataset, load_from_disk

    state = PartialState()

    def share(ds, name):
        if not isinstance(ds, Dataset):
            return ds
        path = os.path.join(config.output_dir, ".dataset_cache", name)
        if state.is_main_process:
            ds.save_to_disk(path)
        state.wait_for_everyone()
        return load_from_disk(path)

    if isinstance(evals, dict):
        evals = {k: share(v, f"eval_{k}") for k, v in evals.items()}
    else:
        evals = share(evals, "eval")
    return share(train, "train"), evals


def prepare_final_save(trainer) -> None:
    """Make `trainer.save_model` write a whole model (or adapter + score head) that `from_pretrained` loads,
    whatever the user's accelerate config says about checkpoints:

    - FSDP with SHARDED_STATE_DICT (fast checkpoints, our fsdp2.yaml): transformers' save_model then writes
      no model at all; the final save switches to FULL_STATE_DICT.
    - ZeRO-3 without `stage3_gather_16bit_weights_on_model_save`: full fine-tuning would leave only a
      DeepSpeed checkpoint (zero_to_fp32.py to recover); the final save gathers the weights instead.
    Must run on every process (the gathers are collective), as save_model does.
    """
    if getattr(trainer, "is_fsdp_enabled", False):
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    engine_ = getattr(trainer, "deepspeed", None)
    if getattr(trainer, "is_deepspeed_enabled", False) and engine_ is not None and engine_.zero_optimization_stage() == 3:
        engine_._config.zero_config.gather_16bit_weights_on_model_save = True


def end_processes() -> None:
    """Destroy the process group before the interpreter exits (a process of a 2-process ZeRO-3 run on CPU once
    aborted at exit with "terminate called without an active exception": gloo's threads were still alive
    while Python tore down; torch asks for destroy_process_group() before exit). Called once per process, by
    main_train's `__main__` only, so that in-process callers of main() keep their process group. torch 2.13 does not
    do it at exit; pytorch/pytorch#179291 proposed that (closed unmerged). Drop when torch destroys groups at exit."""
    if "torch" not in sys.modules:  # a mistake reported before torch was imported: no process group to end
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def exit_process(code: int) -> None:
    """End a launched process without the interpreter's C++ teardown. 2-process CPU runs that had written
    everything still aborted there now and then ("terminate called without an active exception", exit -6), after
    destroy_process_group(), and the launcher then reported the whole run as failed: PPO in `full` mode under ZeRO-3
    (several DeepSpeed engines alive; 2026-12-02), and plain DDP stopping on a non-finite loss (once in a full test
    run, 2026-12-03; not reproduced in 12 runs alone or under load). gloo's worker threads can still hold work
    objects whose tensors need the interpreter (pytorch/pytorch#179291, closed unmerged). Everything is written and
    flushed by now; `atexit` handlers (experiment trackers, logging) still run, only the C++ teardown is skipped.
    A single process exits normally. torch 2.13, deepspeed 0.19.8; drop when launched runs exit cleanly."""
    end_processes()
    if engine() == "single":
        sys.exit(code)
    import atexit

    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def agreed_max(value: int) -> int:
    """The largest of every process's `value` (itself without a process group). Every process must call it."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    import torch

    flag = torch.tensor([value], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item())
