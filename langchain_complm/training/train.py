"""Fine-tune a small causal LM into a Sub-query Generator (or, with :func:`fine_tune` on other
chats, into anything else: :mod:`~langchain_complm.training.experts` trains domain experts).

Each training pair becomes one chat: a short system prompt
(:data:`~langchain_complm.prompts.TRAINED_DECOMPOSE_SYSTEM`), the query
as the user turn and the compact plan JSON as the assistant turn, rendered with the
tokenizer's own chat template (the one :class:`~langchain_complm.models.ChatLocalHuggingFace`
uses at inference). The loss is on the assistant tokens only (the end-of-turn token
included). LoRA (peft) by default, a full fine-tune with ``lora_r=0``.

The output folder holds the adapter (or the full model), the tokenizer and
``complm_generator.json`` (base model, data, steps, seed, losses). While training, the
latest checkpoint (trainable weights, optimizer, scheduler, step) is kept in
``<out>/checkpoint``; ``resume=True`` continues from it with the same data order. A
checkpoint is written to a new folder, flushed to disk and swapped in by renames, so a crash
while saving leaves a complete one to resume from; resuming reads only tensors and plain
values (``torch.load(weights_only=True)``), never code.

:func:`langchain_complm.models.trained.load_trained_generator` turns such a folder (or a Hub
repo holding one) into a :class:`~langchain_complm.decompose.generator.SubQueryGenerator`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import random
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from langchain_complm.models.embedded import EMBEDDED_CHAT_MODEL
from langchain_complm.models.trained import (
    METADATA_FILE,
    SHAPE_ROUTER_FILE,
    ensure_chat_template,
    read_metadata,
    resolve_base,
    trained_model_folder,
)
from langchain_complm.prompts import TRAINED_DECOMPOSE_SYSTEM
from langchain_complm.training.data import (
    SPLIT_SEED,
    TrainingPair,
    build_training_pairs,
    chat_messages,
    load_pairs,
    pair_statistics,
    split_seed_of,
)

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
DEFAULT_TARGET_MODULES = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)


@dataclass
class TrainConfig:
    """Settings of one fine-tuning run (all saved in the metadata)."""

    base: str = EMBEDDED_CHAT_MODEL
    """Base model: hub id, local folder, or :data:`EMBEDDED_CHAT_MODEL`."""
    out: str = "runs/subquery-generator"
    n_train: int = 3000
    """Training pairs (the first ``n_train`` of :func:`~.data.iter_training_pairs`)."""
    data_path: str | None = None
    """Read pairs from this JSONL instead of building them (``n_train`` still caps them)."""
    data_dir: str | None = None
    """Benchmark data location for building pairs (see ``build_dataset``)."""
    mix: dict[str, float] | None = None
    """Share of each kind of built pair (default :data:`~.data.DEFAULT_MIX`)."""
    seed: int = 0
    split_seed: int = SPLIT_SEED
    """The benchmark builder's split built pairs draw their sources from (``seed`` draws
    the pairs): keep the default, the split every evaluation set is disjoint from."""
    epochs: float = 1.0
    batch_size: int = 8
    """Sequences per optimizer step (accumulated over micro-batches)."""
    micro_batch_size: int = 1
    lr: float | None = None
    """Peak learning rate; default 2e-4 with LoRA, 2e-5 for a full fine-tune."""
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    lora_r: int = 16
    """LoRA rank; 0 for a full fine-tune."""
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    max_seq_len: int = 1024
    """Longer examples are skipped (counted in the metadata)."""
    init_from: str | None = None
    """Start from this trained LoRA adapter (a training output folder, a Hub repo holding one,
    or ``embedded:subquery-generator``) instead of a fresh one: continued fine-tuning keeps
    what it learned. Its rank must be ``lora_r``."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (default: ``epochs`` over the data)."""
    stop_at_step: int | None = None
    """End this run early, at this step of its schedule, and save the model as at the end:
    the learning-rate schedule and data order stay those of the whole run (``max_steps`` or
    ``epochs``), so a later run without it resumes from the checkpoint and goes on to the end."""
    save_every: int = 50
    """Write a resumable checkpoint every N steps (and at the end)."""
    device: str | None = None
    """Default CUDA when available, else CPU."""
    threads: int | None = None
    """torch CPU threads (default: torch's choice)."""
    progress: bool = True
    """Show a progress bar (stderr)."""

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else (2e-4 if self.lora_r > 0 else 2e-5)


@dataclass
class TrainResult:
    """What a run produced."""

    out: Path
    steps: int
    losses: list[float] = field(default_factory=list)
    """Mean training loss of every optimizer step (of this run and the resumed one)."""
    metadata: dict[str, Any] = field(default_factory=dict)


# --- base model and data ----------------------------------------------------------------------


Chat = list[dict[str, str]]
"""One training conversation (role/content dicts) ending with the assistant turn to learn."""


def encode_pair(tokenizer: Any, pair: TrainingPair) -> tuple[list[int], list[int]]:
    """(input ids, labels) of one generator pair; see :func:`encode_chat`."""
    return encode_chat(tokenizer, chat_messages(pair.query, pair.target))


def encode_chat(tokenizer: Any, chat: Chat) -> tuple[list[int], list[int]]:
    """(input ids, labels) of one chat: labels are -100 except on the last (assistant) turn.

    The prompt is tokenized exactly as at inference (the chat template with the generation
    prompt); the completion is what the template adds after it, ending with the end-of-turn
    token (the EOS token is appended when the template writes none).
    """
    prompt = tokenizer.apply_chat_template(chat[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(chat, tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("the chat template does not extend the prompt with the answer")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos is not None and eos not in completion_ids:
        completion_ids = [*completion_ids, eos]
    return prompt_ids + completion_ids, [-100] * len(prompt_ids) + completion_ids


def _load_pairs(config: TrainConfig) -> list[TrainingPair]:
    if config.data_path:
        return load_pairs(config.data_path)[: config.n_train]
    return build_training_pairs(
        config.n_train,
        config.seed,
        split_seed=config.split_seed,
        data_dir=config.data_dir,
        mix=config.mix,
    )


# --- training ---------------------------------------------------------------------------------


def train_generator(
    config: TrainConfig,
    *,
    pairs: Sequence[TrainingPair] | None = None,
    resume: bool = False,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Fine-tune ``config.base`` on training pairs and save the generator in ``config.out``.

    Args:
        config: the run's settings.
        pairs: training pairs to use instead of building them from ``config``.
        resume: continue from ``<out>/checkpoint`` when it exists (same config and data).
        on_step: called with (step, loss) after every optimizer step.
    """
    if config.init_from and not config.data_path and pairs is None:
        # Built pairs from another split would hold the evaluation questions of the split
        # the adapter was trained on, and the continued model would be scored on them.
        start = split_seed_of(read_metadata(config.init_from))
        if start != config.split_seed:
            raise ValueError(
                f"init_from {config.init_from!r} was trained on split seed {start}, this run "
                f"draws from split seed {config.split_seed}: the continued model would have "
                "seen evaluation questions of both; use the same split_seed (seed may differ)"
            )
    pairs = list(pairs) if pairs is not None else _load_pairs(config)
    if not pairs:
        raise ValueError("no training pairs")
    metadata = {
        "format": "complm-subquery-generator",
        "version": 1,
        "system_prompt": TRAINED_DECOMPOSE_SYSTEM,
        "data": {
            "pairs": len(pairs),
            "seed": config.seed,
            "split_seed": config.split_seed,
            **({"mix": config.mix} if config.mix and not config.data_path else {}),
            "source": config.data_path
            or "build_training_pairs (multiexpertqa-all train + templates)",
            "statistics": pair_statistics(pairs),
        },
    }
    chats = [chat_messages(p.query, p.target) for p in pairs]
    return fine_tune(
        config, chats, metadata=metadata, resume=resume, on_step=on_step, label="train-generator"
    )


def fine_tune(
    config: TrainConfig,
    chats: Sequence[Chat],
    *,
    metadata: dict[str, Any],
    resume: bool = False,
    on_step: Callable[[int, float], None] | None = None,
    label: str = "fine-tune",
) -> TrainResult:
    """Fine-tune ``config.base`` on ``chats`` (the loss on each chat's last, assistant, turn)
    and save the model or adapter, the tokenizer and the metadata in ``config.out``.

    ``metadata`` is written with the run's own record (config, steps, losses, time) added; its
    ``data`` mapping gets the counts of used and too long chats. ``label`` names the progress
    bar. ``resume`` and ``on_step`` are as for :func:`train_generator`.

    Raises:
        ValueError: no chats, or every one longer than ``config.max_seq_len``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from langchain_complm.models.huggingface import default_device

    started = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    device = config.device or default_device()
    base_source = resolve_base(config.base)
    if not chats:
        raise ValueError("no training examples")

    tokenizer = AutoTokenizer.from_pretrained(base_source)
    ensure_chat_template(tokenizer)
    encoded = [encode_chat(tokenizer, chat) for chat in chats]
    examples = [e for e in encoded if len(e[0]) <= config.max_seq_len]
    skipped = len(encoded) - len(examples)
    if not examples:
        raise ValueError(f"every training pair is longer than max_seq_len={config.max_seq_len}")

    torch.manual_seed(config.seed)
    model: Any = AutoModelForCausalLM.from_pretrained(base_source, dtype=torch.float32)
    if config.lora_r > 0:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.target_modules),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
        if config.init_from:
            _load_initial_adapter(model, config.init_from, config.lora_r)
    elif config.init_from:
        raise ValueError("init_from needs a LoRA run (lora_r > 0)")
    model.to(device)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]

    per_epoch = math.ceil(len(examples) / config.batch_size)
    total_steps = config.max_steps or max(1, math.ceil(per_epoch * config.epochs))
    order = _example_order(len(examples), total_steps * config.batch_size, config.seed)
    optimizer = torch.optim.AdamW(trainable, lr=config.peak_lr, weight_decay=config.weight_decay)
    warmup = int(total_steps * config.warmup_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _lr_factor(s, warmup, total_steps)
    )

    step, losses = 0, list[float]()
    checkpoint = out / CHECKPOINT_DIR
    run_key = _run_key(config, len(examples), total_steps)
    if resume and _recover_checkpoint(checkpoint):
        step, losses = _load_checkpoint(checkpoint, model, optimizer, scheduler, device, run_key)
        logger.info("resumed from step %d", step)

    use_bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported()
    pad_id = tokenizer.pad_token_id
    bar = _progress_bar(total_steps, step, config.progress, label)
    stop = config.stop_at_step
    last_step = total_steps if stop is None else min(total_steps, stop)
    while step < last_step:
        batch = [
            examples[i] for i in order[step * config.batch_size : (step + 1) * config.batch_size]
        ]
        n_tokens = sum(sum(label != -100 for label in labels) for _, labels in batch)
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        # Similar lengths share a micro-batch (less padding); the step's gradient is the
        # same sum whatever the grouping.
        batch.sort(key=lambda example: len(example[0]))
        for start in range(0, len(batch), config.micro_batch_size):
            micro = batch[start : start + config.micro_batch_size]
            input_ids, attention, labels = _collate(micro, pad_id, device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
                loss_sum = _completion_loss_sum(model, input_ids, attention, labels)
            (loss_sum / n_tokens).backward()
            step_loss += loss_sum.item() / n_tokens
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        step += 1
        losses.append(step_loss)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.3f}")
        if step % config.save_every == 0 and step < last_step:
            _save_checkpoint(checkpoint, model, optimizer, scheduler, step, losses, run_key)
        if on_step is not None:
            on_step(step, step_loss)
    if bar is not None:
        bar.close()

    _save_checkpoint(checkpoint, model, optimizer, scheduler, step, losses, run_key)
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    data = {**metadata.get("data", {}), "used": len(examples), "skipped_too_long": skipped}
    metadata = {
        **metadata,
        "base_model": config.base,
        "adapter": config.lora_r > 0,
        "config": {k: v for k, v in asdict(config).items() if k not in {"progress"}},
        "data": data,
        "steps": step,
        "schedule_steps": total_steps,
        "epochs_run": round(step * config.batch_size / len(examples), 3),
        "seed": config.seed,
        "device": device,
        "final_loss": losses[-1] if losses else None,
        "losses": [round(x, 5) for x in losses],
        "train_seconds": round(time.perf_counter() - started, 1),
        "trainable_parameters": int(sum(p.numel() for p in trainable)),
    }
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return TrainResult(out=out, steps=step, losses=losses, metadata=metadata)


def finished_run(config: TrainConfig) -> dict[str, Any] | None:
    """The metadata of a finished run in ``config.out`` trained with the same settings as
    ``config``, else ``None``."""
    path = Path(config.out) / METADATA_FILE
    if not path.is_file():
        return None
    metadata: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    saved = metadata.get("config", {})
    wanted = {k: v for k, v in asdict(config).items() if k != "progress"}
    # JSON turned tuples into lists.
    return metadata if json.loads(json.dumps(wanted)) == saved else None


def _example_order(n_examples: int, length: int, seed: int) -> list[int]:
    """Example indices for the whole run: one seeded shuffle per epoch, concatenated."""
    order: list[int] = []
    epoch = 0
    while len(order) < length:
        indices = list(range(n_examples))
        random.Random(f"complm-train-order:{seed}:{epoch}").shuffle(indices)
        order += indices
        epoch += 1
    return order[:length]


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then linear decay to 10% of the peak."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.1, 1.0 - 0.9 * (step - warmup) / max(1, total - warmup))


def _completion_loss_sum(model: Any, input_ids: Any, attention: Any, labels: Any) -> Any:
    """Summed cross-entropy of the labelled (assistant) tokens.

    Logits are computed only at the positions that predict a label: the vocabulary
    projection of every prompt and padding position was most of a step's memory and a large
    share of its time on the CPU.
    """
    import torch

    targets = labels[:, 1:]
    positions = (targets != -100).any(dim=0).nonzero().squeeze(-1)
    logits = model(input_ids=input_ids, attention_mask=attention, logits_to_keep=positions).logits
    return torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)),
        targets[:, positions].reshape(-1),
        ignore_index=-100,
        reduction="sum",
    )


def _collate(batch: Sequence[tuple[list[int], list[int]]], pad_id: int, device: str) -> Any:
    import torch

    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for row, (ids, labs) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        labels[row, : len(labs)] = torch.tensor(labs)
    return input_ids.to(device), attention.to(device), labels.to(device)


def _progress_bar(total: int, initial: int, enabled: bool, label: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=label, unit="step")


def _run_key(config: TrainConfig, n_examples: int, total_steps: int) -> dict[str, Any]:
    """What must not change between a run and its resumption (it fixes the data order)."""
    return {
        "base": config.base,
        "seed": config.seed,
        **({"split_seed": config.split_seed} if config.split_seed != SPLIT_SEED else {}),
        **({"mix": config.mix} if config.mix else {}),
        "examples": n_examples,
        "batch_size": config.batch_size,
        "total_steps": total_steps,
        "lora_r": config.lora_r,
        **({"init_from": config.init_from} if config.init_from else {}),
    }


def _load_initial_adapter(model: Any, source: str, rank: int) -> None:
    """Copy a trained adapter's LoRA weights into ``model``'s fresh adapter (as float32)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    folder = trained_model_folder(source)
    weights, settings = folder / "adapter_model.safetensors", folder / "adapter_config.json"
    if not weights.is_file() or not settings.is_file():
        raise ValueError(f"init_from {source!r}: {folder} holds no LoRA adapter")
    trained_rank = json.loads(settings.read_text(encoding="utf-8")).get("r")
    if trained_rank != rank:
        raise ValueError(f"init_from {source!r} has LoRA rank {trained_rank}, this run {rank}")
    state = {name: tensor.float() for name, tensor in load_file(str(weights)).items()}
    loaded: Any = set_peft_model_state_dict(model, state)
    if loaded.unexpected_keys:
        raise ValueError(
            f"init_from {source!r} does not fit this base: "
            f"{len(loaded.unexpected_keys)} unexpected weights such as {loaded.unexpected_keys[0]}"
        )
    fresh = [name for name in loaded.missing_keys if "lora_" in name]
    if fresh:
        raise ValueError(
            f"init_from {source!r} adapts fewer modules than this run: no weights for "
            f"{len(fresh)} LoRA matrices such as {fresh[0]} (set target_modules to its own)"
        )


def _save_checkpoint(
    folder: Path,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    step: int,
    losses: list[float],
    run_key: dict[str, Any],
) -> None:
    """Trainable weights, optimizer, scheduler and step, written to ``<folder>.tmp`` and
    flushed to disk (``state.json`` last: it marks the folder complete), then swapped in:
    the previous checkpoint moves to ``<folder>.old`` until the new one is in place. At
    every moment one of the three folders holds a complete checkpoint
    (:func:`_recover_checkpoint` finds it)."""
    import torch
    from safetensors.torch import save_file

    tmp, old = _swap_folders(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = {
        name: p.detach().cpu().contiguous()
        for name, p in model.named_parameters()
        if p.requires_grad
    }
    save_file(weights, str(tmp / "trainable.safetensors"))
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
        tmp / "optimizer.pt",
    )
    state = {"step": step, "losses": losses, "run": run_key}
    (tmp / "state.json").write_text(json.dumps(state), encoding="utf-8")
    for path in (tmp / "trainable.safetensors", tmp / "optimizer.pt", tmp / "state.json", tmp):
        _fsync(path)
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    _fsync(folder.parent)
    shutil.rmtree(old, ignore_errors=True)


def _swap_folders(folder: Path) -> tuple[Path, Path]:
    """Where a checkpoint is written before it is swapped in, and where the previous one
    waits meanwhile."""
    return folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")


def _fsync(path: Path) -> None:
    """Flush a file, or a folder's entries, to disk: a rename must not outlive the data.
    (Where a folder cannot be opened, as on Windows, its entries are left to the system.)"""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        if path.is_dir():
            return
        raise
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _recover_checkpoint(folder: Path) -> bool:
    """Whether there is a complete checkpoint to resume from, moving it to ``folder`` when a
    crash while saving left it in ``<folder>.tmp`` (the newer) or ``<folder>.old``."""
    if (folder / "state.json").is_file():
        return True
    for candidate in _swap_folders(folder):
        if (candidate / "state.json").is_file():
            logger.warning("resuming from %s, left there by an interrupted save", candidate)
            shutil.rmtree(folder, ignore_errors=True)
            candidate.rename(folder)
            return True
    return False


def _load_checkpoint(
    folder: Path, model: Any, optimizer: Any, scheduler: Any, device: str, run_key: dict[str, Any]
) -> tuple[int, list[float]]:
    import torch
    from safetensors.torch import load_file

    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    if state.get("run") != run_key:
        raise ValueError(
            f"cannot resume: the checkpoint in {folder} is of another run "
            f"({state.get('run')} != {run_key}); use another --out or drop --resume"
        )

    weights = load_file(str(folder / "trainable.safetensors"), device=device)
    missing = set(weights) - {n for n, _ in model.named_parameters()}
    if missing:
        raise ValueError(f"checkpoint does not fit this model (e.g. {sorted(missing)[0]})")
    model.load_state_dict(weights, strict=False)
    try:
        # Plain values and tensors only: whoever can write the folder must not run code here.
        states = torch.load(folder / "optimizer.pt", map_location=device, weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"cannot resume: {folder / 'optimizer.pt'} holds more than tensors and plain "
            f"values, which is refused ({str(error).splitlines()[0]})"
        ) from None
    optimizer.load_state_dict(states["optimizer"])
    scheduler.load_state_dict(states["scheduler"])
    return int(state["step"]), [float(x) for x in state["losses"]]


# --- loading a trained generator --------------------------------------------------------------


def export_generator(
    run: str | Path,
    dest: str | Path,
    *,
    base_model_id: str | None = None,
    shapes: Mapping[str, str | Path] | None = None,
    shape_router: str | Path | None = None,
) -> Path:
    """Copy a trained LoRA generator into ``dest`` for shipping: the adapter weights in
    float16 (half the size; the loader computes in float32), its config and the metadata
    without the per-step losses. The tokenizer is left out: the base's is used.

    Args:
        run: a :func:`train_generator` output folder with a LoRA adapter.
        dest: the folder to write (replaced).
        base_model_id: written as the adapter config's base model instead of the local path
            it was trained from (e.g. the base's Hub id); the metadata keeps the base name
            the loader resolves.
        shapes: a run per shape of ``shape_router`` (e.g. {"multihop": run}), exported into
            a subfolder each; ``run`` writes the router's default shape.
        shape_router: the router's file (``complm train-shape-router``), needed with
            ``shapes``.

    Raises:
        ValueError: ``shapes`` without ``shape_router``, or the other way round.
    """
    if (shapes is None) != (shape_router is None):
        raise ValueError("shapes and shape_router go together: give both or neither")
    import torch
    from safetensors.torch import load_file, save_file

    run, dest = Path(run), Path(dest)
    adapter_config = json.loads((run / "adapter_config.json").read_text(encoding="utf-8"))
    if base_model_id is not None:
        adapter_config["base_model_name_or_path"] = base_model_id
    weights = load_file(str(run / "adapter_model.safetensors"))
    metadata = read_metadata(run)
    metadata.pop("losses", None)
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    save_file(
        {k: v.to(torch.float16).contiguous() for k, v in weights.items()},
        str(dest / "adapter_model.safetensors"),
    )
    (dest / "adapter_config.json").write_text(
        json.dumps(adapter_config, indent=2) + "\n", encoding="utf-8"
    )
    if shapes is not None and shape_router is not None:
        for shape, shape_run in shapes.items():
            export_generator(shape_run, dest / shape, base_model_id=base_model_id)
        shutil.copyfile(shape_router, dest / SHAPE_ROUTER_FILE)
        metadata["shapes"] = {"router": SHAPE_ROUTER_FILE, "adapters": {s: s for s in shapes}}
    (dest / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return dest


__all__ = [
    "Chat",
    "TrainConfig",
    "TrainResult",
    "encode_chat",
    "encode_pair",
    "export_generator",
    "fine_tune",
    "finished_run",
    "train_generator",
]
