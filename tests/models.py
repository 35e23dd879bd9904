"""Tiny decoder checkpoints built from configs with a fixed seed (no downloads).

`make_checkpoint(arch, directory)` writes `config.json` + `model.safetensors` with
`save_pretrained`, exactly what a user's Hugging Face model directory holds.
"""

from __future__ import annotations

from pathlib import Path

import torch

ARCHS = ("gpt2", "bigcode", "llama", "qwen2", "starcoder2", "mistral", "phi3", "qwen3", "gemma")

# Llama-like decoders: the config class and what differs from the shared tiny shape.
_LLAMA_LIKE = {
    "llama": ("LlamaConfig", {}),
    "qwen2": ("Qwen2Config", {}),
    "mistral": ("MistralConfig", {"sliding_window": None}),
    "starcoder2": ("Starcoder2Config", {"tie_word_embeddings": True}),
    "phi3": ("Phi3Config", {"pad_token_id": 0}),
    "qwen3": ("Qwen3Config", {"head_dim": 16}),
    "gemma": ("GemmaConfig", {"head_dim": 16, "tie_word_embeddings": True}),
}


def tiny_config(arch: str, *, layers: int = 2, attn_impl: str = "sdpa", **overrides):
    from transformers import GPT2Config, GPTBigCodeConfig

    # a wide initialisation: the default (0.02) leaves tiny models' logits so flat that greedy
    # decoding repeats one token, which a broken decode step would reproduce just as well
    common = dict(vocab_size=256, bos_token_id=0, eos_token_id=0, initializer_range=0.2)
    # the configs' __post_init__ derive fields (Qwen2's layer_types from use_sliding_window and
    # max_window_layers), so Llama-like overrides go through the constructor
    if arch == "gpt2":
        cfg = GPT2Config(n_layer=layers, n_embd=64, n_head=4, n_positions=128, **common)
    elif arch == "bigcode":
        cfg = GPTBigCodeConfig(n_layer=layers, n_embd=64, n_head=4, n_positions=128,
                               multi_query=True, **common)
    elif arch in _LLAMA_LIKE:
        import transformers

        cls, extra = _LLAMA_LIKE[arch]
        cfg = getattr(transformers, cls)(
            num_hidden_layers=layers, hidden_size=64, intermediate_size=160,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
            **{"tie_word_embeddings": False, **common, **extra, **overrides})
    elif arch == "mamba":  # a state-space model: its causal convolution has no wafer kernel
        from transformers import MambaConfig

        cfg = MambaConfig(num_hidden_layers=layers, hidden_size=64, state_size=8, **common,
                          **overrides)
    else:
        raise ValueError(arch)
    if arch in ("gpt2", "bigcode"):
        for k, v in overrides.items():
            setattr(cfg, k, v)
    cfg._attn_implementation = attn_impl if arch != "mamba" else "eager"  # it has no SDPA
    return cfg


def make_model(arch: str, *, seed: int = 0, **kw):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, **kw))
    # random init leaves biases and norm weights at 0/1; perturb them so tests can fail
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def make_checkpoint(arch: str, directory: Path, *, seed: int = 0, **kw) -> Path:
    model = make_model(arch, seed=seed, **kw)
    directory = Path(directory)
    model.save_pretrained(directory)
    return directory


def greedy_tokens(model, ids, steps: int) -> list[int]:
    """Greedy decoding that reruns the whole sequence every step, without a KV cache: the
    reference that holds whatever a transformers cache does with sliding windows."""
    x = torch.as_tensor(ids, dtype=torch.long).reshape(1, -1)
    tokens: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            tokens.append(int(model(input_ids=x, use_cache=False).logits[0, -1].argmax()))
            x = torch.cat([x, torch.tensor([[tokens[-1]]])], dim=1)
    return tokens
