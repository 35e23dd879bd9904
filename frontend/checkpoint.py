"""Load a Hugging Face decoder checkpoint into an fp32 `transformers` model, strictly.

A checkpoint is a model directory: `config.json` plus `model.safetensors`, sharded safetensors
with `model.safetensors.index.json`, or `pytorch_model.bin` (read with `weights_only=True`, never
a full unpickle). Everything that can go wrong with the files becomes a `CheckpointError` naming
the file or tensor and what to do; `transformers` is only asked to build the architecture from
the config (nothing is downloaded), and the weights are checked against it name by name and
shape by shape, so a checkpoint that does not match its config is refused instead of being
silently re-initialised.

Any `model_type` that transformers builds as a causal LM is accepted here: whether wsc can
compile it is decided by its ops, when they are imported and recognised (an op wsc does not
lower is an `UnsupportedOpError` naming the op and its module path), not by a list of names.

`no_weights=True` (and `load_config_only`) build the model with its parameters on the `meta`
device, so a Llama-3-8B-shaped config costs no memory. Buffers that the model computes from its
config (rotary `inv_freq`) are kept real in `LoadedModel.buffers` in both modes: tracing folds
them into constants.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wsc.errors import CheckpointError

ATTN_IMPLEMENTATIONS = ("sdpa", "eager")

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_BIN = "pytorch_model.bin"
PYTORCH_BIN_INDEX = "pytorch_model.bin.index.json"

# Checkpoint entries transformers itself ignores on load: buffers older versions saved.
_IGNORED_UNEXPECTED = (r"rotary_emb\.inv_freq$", r"(^|\.)position_ids$", r"\.attn\.(masked_)?bias$")


@dataclass
class LoadedModel:
    """An fp32 causal LM in eval mode, with what the later stages need to know about it."""

    model: nn.Module
    config: Any  # transformers.PretrainedConfig
    arch: str  # the config's model_type
    digest: str  # sha256 of the checkpoint (see `checkpoint_digest`)
    source: Path
    no_weights: bool
    attn_implementation: str
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)  # real values, both modes


def load_checkpoint(path: str | Path, *, attn_implementation: str = "sdpa",
                    no_weights: bool = False) -> LoadedModel:
    """Load the checkpoint at `path` (a model directory, or a weights file next to its
    `config.json`); with `no_weights`, only its config is used and parameters stay on `meta`."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint `{path}` does not exist",
                              hint="pass a Hugging Face model directory (config.json + weights)")
    directory = path if path.is_dir() else path.parent
    config_path = directory / "config.json"
    config = read_config(config_path)
    if no_weights:
        files = _weight_files(directory, path if path.is_file() else None, required=False)
        digest = checkpoint_digest(config_path, files, contents=False)
        return _build(config, attn_implementation, None, digest, directory, no_weights=True)
    files = _weight_files(directory, path if path.is_file() else None, required=True)
    digest = checkpoint_digest(config_path, files, contents=True)
    return _build(config, attn_implementation, files, digest, directory, no_weights=False)


def load_config_only(config_path: str | Path, *, attn_implementation: str = "sdpa") -> LoadedModel:
    """A `no_weights` model from a bare `config.json` (or a directory holding one): plan-only."""
    config_path = Path(config_path)
    if config_path.is_dir():
        config_path = config_path / "config.json"
    config = read_config(config_path)
    digest = checkpoint_digest(config_path, [], contents=False)
    return _build(config, attn_implementation, None, digest, config_path.parent, no_weights=True)


def read_config(config_path: Path):
    """Parse `config.json` into its transformers config class; any causal-LM model type."""
    if not config_path.is_file():
        raise CheckpointError(f"`{config_path}` is missing",
                              hint="a Hugging Face model directory holds config.json next to the weights")
    try:
        data = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"`{config_path}` is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"`{config_path}` must hold a JSON object, not {type(data).__name__}")
    model_type = data.get("model_type")
    from transformers import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if model_type not in CONFIG_MAPPING:
        raise CheckpointError(
            f"`{config_path}`: model_type {model_type!r} is not an architecture transformers knows",
            hint="wsc builds the model from config.json with transformers (no remote code): "
                 "model_type must be one of its architectures, e.g. llama, qwen2 or mistral")
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise CheckpointError(
            f"`{config_path}`: model_type {model_type!r} has no causal language model "
            "in transformers",
            hint="wsc compiles decoder LLMs, the models AutoModelForCausalLM builds")
    try:
        return CONFIG_MAPPING[model_type].from_dict(data)
    except Exception as e:  # transformers validates fields with assorted exception types
        raise CheckpointError(f"`{config_path}` is not a valid {model_type} config: {e}") from None


def checkpoint_digest(config_path: Path, files: list[Path], *, contents: bool) -> str:
    """sha256 over config.json and the weight files (names and bytes, in name order); without
    `contents`, over the weight files' names and sizes only (plan-only compiles stay fast)."""
    h = hashlib.sha256()
    for f in [config_path, *sorted(files)]:
        h.update(f.name.encode() + b"\0")
        if f == config_path or contents:
            with open(f, "rb") as stream:
                while chunk := stream.read(1 << 22):
                    h.update(chunk)
        else:
            h.update(str(f.stat().st_size).encode())
        h.update(b"\0")
    return h.hexdigest()


# --- weight files ---------------------------------------------------------------------


def _weight_files(directory: Path, given: Path | None, *, required: bool) -> list[Path]:
    """The weight files of a checkpoint, shards resolved through their index."""
    if given is not None and given.name != "config.json":
        return [given]
    for index_name in (SAFETENSORS_INDEX, PYTORCH_BIN_INDEX):
        index = directory / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
                shards = sorted({directory / name for name in weight_map.values()})
            except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
                raise CheckpointError(f"`{index}` is not a valid shard index: {e!r}") from None
            for shard in shards:
                if not shard.is_file() and required:
                    raise CheckpointError(f"shard `{shard.name}` listed in `{index}` is missing")
            return [s for s in shards if s.is_file()]
    for name in (SAFETENSORS, PYTORCH_BIN):
        if (directory / name).is_file():
            return [directory / name]
    if required:
        raise CheckpointError(
            f"no weights in `{directory}`: expected {SAFETENSORS}, {SAFETENSORS_INDEX}, "
            f"{PYTORCH_BIN} or {PYTORCH_BIN_INDEX}",
            hint="use --no-weights to plan a compile from config.json alone")
    return []


def _read_tensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every tensor of the weight files; corrupt files become errors."""
    for f in files:
        if f.suffix == ".safetensors":
            yield from _read_safetensors(f)
        else:
            yield from _read_torch_bin(f)


def _read_safetensors(f: Path) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import safe_open

    try:
        with safe_open(str(f), framework="pt") as st:
            names = list(st.keys())
            tensors = [(name, st.get_tensor(name)) for name in names]
    except Exception as e:  # SafetensorError, OSError, ValueError for bad headers or truncation
        raise CheckpointError(f"`{f}` is not a readable safetensors file: {e}",
                              hint="the file is corrupt or truncated; re-save or re-download it") from None
    yield from tensors


def _read_torch_bin(f: Path) -> Iterator[tuple[str, torch.Tensor]]:
    try:
        state = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError, EOFError, zipfile errors
        raise CheckpointError(f"`{f}` cannot be read as a PyTorch state dict: {_load_error(e)}",
                              hint="only plain tensor state dicts are loaded (weights_only=True); "
                              "the file may be corrupt, truncated, or contain arbitrary objects") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"`{f}` does not hold a state dict of tensors")
    yield from state.items()


def _load_error(e: Exception) -> str:
    """The gist of a torch.load failure (its own message advises weights_only=False)."""
    text = str(e)
    refused = re.search(r"WeightsUnpickler error:\s*(.*?)(?:\n\s*\n|$)", text, re.S)
    if refused:
        return "weights_only=True refused it: " + " ".join(refused.group(1).split()).split(". ")[0]
    return " ".join(text.splitlines()[0].split())[:300]


# --- building the model ---------------------------------------------------------------


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Create every parameter on `meta` while buffers stay real (the rotary `inv_freq` that
    the model computes from its config); module init then costs neither time nor memory."""
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def _build(config, attn_implementation: str, files: list[Path] | None, digest: str,
           source: Path, *, no_weights: bool) -> LoadedModel:
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise CheckpointError(f"attention implementation {attn_implementation!r} is not supported; "
                              f"use one of {', '.join(ATTN_IMPLEMENTATIONS)}")
    from transformers import AutoModelForCausalLM

    attn_implementation = _available_attention(config, attn_implementation)
    with _parameters_on_meta():
        try:
            model = AutoModelForCausalLM.from_config(
                config, attn_implementation=attn_implementation, dtype=torch.float32)
        except Exception as e:
            raise CheckpointError(f"cannot build a {config.model_type} model from `{source}`: {e}") from None
    model.eval()
    if not no_weights:
        _load_weights(model, files or [])
    buffers = {name: b.detach().clone() for name, b in model.named_buffers(remove_duplicate=False)}
    if no_weights:
        model.to("meta")  # tracing runs entirely on meta; folding uses `buffers`
    return LoadedModel(model=model, config=config, arch=config.model_type, digest=digest,
                       source=source, no_weights=no_weights,
                       attn_implementation=attn_implementation, buffers=buffers)


def _mismatch_hint(model: nn.Module) -> str:
    from transformers.conversion_mapping import extract_weight_conversions_for_model

    if extract_weight_conversions_for_model(model):
        return (f"transformers renames or converts {type(model).__name__} checkpoint tensors "
                "as it loads them (its conversion mapping); wsc loads names as they are and "
                "does not apply such conversions yet")
    return "the weights do not match config.json (wrong config, or a different architecture)"


def _available_attention(config, requested: str) -> str:
    """`requested`, or eager for architectures transformers has no SDPA path for (BLOOM's
    ALiBi, state-space models): both trace to attention wsc recognises, so SDPA is only
    the default, never a reason to refuse a model."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    cls = MODEL_FOR_CAUSAL_LM_MAPPING.get(type(config), None)
    if requested == "sdpa" and cls is not None and not getattr(cls, "_supports_sdpa", False):
        return "eager"
    return requested


def _load_weights(model: nn.Module, files: list[Path]) -> None:
    """Assign the checkpoint's tensors to the model's parameters, refusing any mismatch."""
    expected = model.state_dict()
    ignored = [re.compile(p) for p in (*_IGNORED_UNEXPECTED,
                                       *(getattr(model, "_keys_to_ignore_on_load_unexpected", None) or ()))]
    prefix = getattr(model, "base_model_prefix", "") + "."
    state: dict[str, torch.Tensor] = {}
    for name, tensor in _read_tensors(files):
        key = name if name in expected or prefix + name not in expected else prefix + name
        if key not in expected:
            if any(p.search(name) for p in ignored):
                continue
            raise CheckpointError(
                f"checkpoint tensor `{name}` is not a weight of this {model.config.model_type} model",
                hint=_mismatch_hint(model))
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"checkpoint tensor `{name}` has shape {tuple(tensor.shape)}, but config.json "
                f"implies {tuple(expected[key].shape)}",
                hint="the weights do not match config.json")
        if not tensor.is_floating_point():
            raise CheckpointError(f"checkpoint tensor `{name}` has dtype {tensor.dtype}, expected floats")
        state[key] = tensor.to(torch.float32).contiguous()
    model.load_state_dict(state, strict=False, assign=True)
    missing = {name for name, p in model.named_parameters() if p.device.type == "meta"}
    if missing and hasattr(model, "tie_weights"):
        model.tie_weights(missing_keys=set(missing))
    for name, p in model.named_parameters(remove_duplicate=False):
        if p.device.type == "meta":
            raise CheckpointError(f"weight `{name}` is missing from the checkpoint",
                                  hint="the weights do not match config.json, or a shard is missing")
    for name, b in model.named_buffers():
        if b.device.type == "meta":
            raise CheckpointError(f"buffer `{name}` is missing from the checkpoint")
