"""Tiny decoder checkpoints built from configs with a fixed seed (no downloads).

`make_checkpoint(arch, directory)` writes `config.json` + `model.safetensors` with
`save_pretrained`, exactly what a user's Hugging Face model directory holds.
"""

from __future__ import annotations

from pathlib import Path

import torch

ARCHS = ("gpt2", "bigcode", "llama", "qwen2")


def tiny_config(arch: str, *, layers: int = 2, attn_impl: str = "sdpa", **overrides):
    from transformers import GPT2Config, GPTBigCodeConfig, LlamaConfig, Qwen2Config

    # a wide initialisation: the default (0.02) leaves tiny models' logits so flat that greedy
    # decoding repeats one token, which a broken decode step would reproduce just as well
    common = dict(vocab_size=256, bos_token_id=0, eos_token_id=0, initializer_range=0.2)
    if arch == "gpt2":
        cfg = GPT2Config(n_layer=layers, n_embd=64, n_head=4, n_positions=128, **common)
    elif arch == "bigcode":
        cfg = GPTBigCodeConfig(n_layer=layers, n_embd=64, n_head=4, n_positions=128,
                               multi_query=True, **common)
    elif arch == "llama":
        cfg = LlamaConfig(num_hidden_layers=layers, hidden_size=64, intermediate_size=160,
                          num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=128, tie_word_embeddings=False, **common)
    elif arch == "qwen2":
        cfg = Qwen2Config(num_hidden_layers=layers, hidden_size=64, intermediate_size=160,
                          num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=128, tie_word_embeddings=False, **common)
    else:
        raise ValueError(arch)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    cfg._attn_implementation = attn_impl
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
