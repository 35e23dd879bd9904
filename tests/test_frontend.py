"""frontend/: loading checkpoints strictly, tracing, and importing into wsc.graph."""

from __future__ import annotations

import json
import resource
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from models import make_checkpoint, make_model
from wsc.errors import CheckpointError, UnsupportedOpError, UsageError
from wsc.frontend import constants
from wsc.frontend.checkpoint import load_checkpoint, load_config_only
from wsc.frontend.importer import MetaArray, import_model, import_trace
from wsc.frontend.trace import fold_static, trace_model, trace_program
from wsc.ir import graph as g


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    return make_checkpoint("gpt2", tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    return make_checkpoint("llama", tmp_path_factory.mktemp("llama"))


@pytest.fixture
def ckpt(gpt2_dir, tmp_path) -> Path:
    """A private copy of the GPT-2 checkpoint, free to corrupt."""
    return Path(shutil.copytree(gpt2_dir, tmp_path / "ckpt"))


def fresh_ids(vocab: int = 256, seq: int = 16) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng().integers(1, vocab, (1, seq)))


def logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


# --- loading ------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_loaded_model_is_the_saved_model(arch, gpt2_dir, llama_dir):
    loaded = load_checkpoint(gpt2_dir if arch == "gpt2" else llama_dir)
    ids = fresh_ids()
    assert loaded.arch == ("gpt2" if arch == "gpt2" else "llama") and not loaded.no_weights
    assert torch.equal(logits(loaded.model, ids), logits(make_model(arch), ids))
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())


def test_missing_path(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")


def test_missing_config(ckpt):
    (ckpt / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json"):
        load_checkpoint(ckpt)


def test_invalid_config_json(ckpt):
    (ckpt / "config.json").write_text('{"model_type": "gpt2", ')
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(ckpt)


@pytest.mark.parametrize("model_type,why", [
    ("not_a_model", "not an architecture transformers knows"),
    ("t5", "has no causal language model"),  # an encoder-decoder
])
def test_model_types_transformers_cannot_build_as_decoders(ckpt, model_type, why):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["model_type"] = model_type
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=why) as e:
        load_checkpoint(ckpt)
    assert model_type in str(e.value)
    with pytest.raises(CheckpointError, match=model_type):
        load_config_only(ckpt / "config.json")


def test_missing_weights(ckpt):
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights"):
        load_checkpoint(ckpt)


def test_corrupt_safetensors(ckpt):
    (ckpt / "model.safetensors").write_bytes(np.random.default_rng().bytes(4096))
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(ckpt)


def test_truncated_safetensors(ckpt):
    f = ckpt / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(ckpt)


def _rewrite_weights(ckpt: Path, edit) -> None:
    state = load_file(ckpt / "model.safetensors")
    edit(state)
    save_file(state, ckpt / "model.safetensors", metadata={"format": "pt"})


def test_missing_tensor_is_named(ckpt):
    _rewrite_weights(ckpt, lambda s: s.pop("transformer.h.1.mlp.c_fc.weight"))
    with pytest.raises(CheckpointError, match=r"transformer\.h\.1\.mlp\.c_fc\.weight.*missing"):
        load_checkpoint(ckpt)


def test_unexpected_tensor_is_named(ckpt):
    _rewrite_weights(ckpt, lambda s: s.update({"transformer.h.0.extra.weight": torch.zeros(3)}))
    with pytest.raises(CheckpointError, match=r"transformer\.h\.0\.extra\.weight"):
        load_checkpoint(ckpt)


def test_shape_mismatch_is_named(ckpt):
    def shrink(state):
        state["transformer.h.0.attn.c_proj.weight"] = torch.zeros(64, 32)

    _rewrite_weights(ckpt, shrink)
    with pytest.raises(CheckpointError, match=r"c_proj\.weight.*\(64, 32\).*\(64, 64\)"):
        load_checkpoint(ckpt)


def test_pytorch_bin_checkpoint(ckpt):
    state = load_file(ckpt / "model.safetensors")
    (ckpt / "model.safetensors").unlink()
    torch.save(state, ckpt / "pytorch_model.bin")
    ids = fresh_ids()
    assert torch.equal(logits(load_checkpoint(ckpt).model, ids), logits(make_model("gpt2"), ids))


def test_corrupt_pytorch_bin(ckpt):
    (ckpt / "model.safetensors").unlink()
    (ckpt / "pytorch_model.bin").write_bytes(b"PK\x03\x04 definitely not a zip archive")
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        load_checkpoint(ckpt)


class _Payload:
    """Anything that is not a tensor: weights_only=True must refuse to unpickle it."""


def test_pytorch_bin_is_never_fully_unpickled(ckpt):
    (ckpt / "model.safetensors").unlink()
    torch.save({"transformer.wte.weight": _Payload()}, ckpt / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(ckpt)


def test_sharded_safetensors(tmp_path):
    model = make_model("llama")
    model.save_pretrained(tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    ids = fresh_ids()
    assert torch.equal(logits(load_checkpoint(tmp_path).model, ids), logits(model, ids))
    next(tmp_path.glob("model-0000*.safetensors")).unlink()
    with pytest.raises(CheckpointError, match="shard"):
        load_checkpoint(tmp_path)


def test_digest_is_stable_and_covers_config_and_weights(ckpt):
    first = load_checkpoint(ckpt).digest
    assert load_checkpoint(ckpt).digest == first and len(first) == 64
    _rewrite_weights(ckpt, lambda s: s["transformer.ln_f.bias"].add_(1.0))
    second = load_checkpoint(ckpt).digest
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["layer_norm_epsilon"] = 1e-6
    (ckpt / "config.json").write_text(json.dumps(cfg))
    assert len({first, second, load_checkpoint(ckpt).digest}) == 3


def test_sequence_longer_than_the_config_allows(gpt2_dir):
    with pytest.raises(UsageError, match="positions"):
        import_model(load_checkpoint(gpt2_dir), 1000)


# --- importing -----------------------------------------------------------------------------


def test_gpt2_import_names_weights_and_locations(gpt2_dir):
    imported = import_model(load_checkpoint(gpt2_dir), 16)
    ops = [op for op in imported.module.walk() if isinstance(op, g.GraphOp)]
    assert all(op.source[0] for op in ops), "every op names its FX node"
    linears = {op.source[1] for op in ops if isinstance(op, g.LinearOp)}
    assert "transformer.h.0.attn.c_attn" in linears and "lm_head" in linears
    refs = {op.ref: op for op in ops if isinstance(op, g.WeightOp)}
    assert refs["transformer.h.0.attn.c_attn.weight"].transpose is None  # Conv1D is [K, N]
    assert "transformer.wpe.weight" in refs and "transformer.h.1.ln_2.bias" in refs
    assert any(isinstance(op, g.PositionEmbeddingOp) for op in ops)
    masks = [op for op in ops if isinstance(op, g.WeightOp) and op.causal_mask is not None]
    assert masks and all(op.ref.startswith("folded.") and op.ref in imported.weights for op in masks)
    assert all(isinstance(imported.weights[op.ref], np.ndarray) for op in ops if isinstance(op, g.WeightOp))
    assert imported.arch == "gpt2" and imported.seq_len == 16 and len(imported.digest) == 64


def test_llama_import_keeps_rotary_tables_symbolic(llama_dir):
    loaded = load_checkpoint(llama_dir, attn_implementation="eager")
    imported = import_model(loaded, 16)
    tables = [op for op in imported.module.walk() if isinstance(op, g.RopeTableOp)]
    assert {t.kind.data for t in tables} == {"cos", "sin"}
    assert all(t.source[1] == "model.rotary_emb" for t in tables)
    inv_freq = imported.weights["model.rotary_emb.inv_freq"]
    assert inv_freq.dtype == np.float32
    np.testing.assert_array_equal(inv_freq, loaded.model.model.rotary_emb.inv_freq.numpy())
    linear_weights = [op for op in imported.module.walk() if isinstance(op, g.WeightOp) and op.transpose]
    assert {w.ref for w in linear_weights} >= {"model.layers.0.self_attn.q_proj.weight", "lm_head.weight"}


def test_rotary_tables_are_validated(llama_dir):
    loaded = load_checkpoint(llama_dir)
    trace = trace_model(loaded, 16)
    # the folded tables no longer match what the rope kernel would compute
    loaded.model.model.rotary_emb.attention_scaling = 2.0
    with pytest.raises(UnsupportedOpError) as e:
        import_trace(trace, loaded.model)
    assert "rotary embedding" in str(e.value) and "model.rotary_emb" in str(e.value)


class _Scan(torch.nn.Module):
    def forward(self, x):
        return torch.cumprod(x, -1)


class _ScanModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(16, 8)
        self.scan = _Scan()

    def forward(self, input_ids):
        return self.scan(self.embed(input_ids))


def test_unsupported_op_names_the_op_and_its_module():
    program = torch.export.export(_ScanModel().eval(), (torch.ones((1, 4), dtype=torch.long),))
    with pytest.raises(UnsupportedOpError) as e:
        import_trace(trace_program(program, 4))
    msg = str(e.value)
    assert "aten.cumprod" in msg and "`scan`" in msg and "hint:" in msg
    assert e.value.op.startswith("aten.cumprod") and e.value.module_path == "scan"


def test_no_weights_from_a_checkpoint_directory(gpt2_dir):
    loaded = load_checkpoint(gpt2_dir, no_weights=True)
    assert loaded.no_weights and all(p.device.type == "meta" for p in loaded.model.parameters())
    imported = import_model(loaded, 8)
    wte = imported.weights["lm_head.weight"]
    assert isinstance(wte, MetaArray) and wte.shape == (256, 64) and wte.nbytes == 256 * 64 * 4


LLAMA3_8B = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 4096,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "intermediate_size": 14336, "vocab_size": 128256, "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "rope_theta": 500000.0,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
}


def test_llama3_8b_shaped_config_without_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA3_8B))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.monotonic()
    imported = import_model(load_config_only(tmp_path / "config.json"), 32)
    elapsed = time.monotonic() - start
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    assert elapsed < 60, f"took {elapsed:.1f}s"
    assert rss_growth < 2 << 30, f"grew by {rss_growth / 2**30:.1f} GiB: weights were allocated"
    params = {k: v for k, v in imported.weights.items()
              if not k.startswith("folded.") and not k.endswith("inv_freq")}
    assert len(params) == 1 + 32 * 9 + 2
    assert all(isinstance(w, MetaArray) for w in params.values())
    assert params["model.layers.31.mlp.down_proj.weight"].shape == (4096, 14336)
    imported.module.verify()


# --- folded constants ---------------------------------------------------------------------


def test_constant_predicates():
    tril = np.tril(np.ones((5, 5), bool))
    assert constants.causal_mask_kind(tril[None, None]) == "bool"
    additive = np.where(tril, 0.0, np.finfo(np.float32).min).astype(np.float32)
    assert constants.causal_mask_kind(additive) == "additive"
    assert constants.causal_mask_kind(np.where(tril, 0.0, -np.inf)) == "additive"
    assert constants.mask_window(tril) is None
    window = tril & ~np.tril(np.ones((5, 5), bool), -3)  # sliding window of 3
    assert constants.causal_mask_kind(window) == "bool" and constants.mask_window(window) == 3
    assert np.array_equal(constants.causal_visible(5, 3), window)
    assert constants.mask_window(np.where(window, 0.0, -np.inf)) == 3
    holes = window.copy()
    holes[4, 3] = False  # not a window: a key inside it is hidden
    assert constants.causal_mask_kind(holes) is None and constants.mask_window(holes) is None
    assert constants.causal_mask_kind(np.ones((5, 5), bool)) is None  # bidirectional
    assert constants.causal_mask_kind(np.where(tril, 0.0, -1.0).astype(np.float32)) is None
    assert constants.is_positions(np.arange(7)[None], 7)
    assert not constants.is_positions(np.arange(1, 8)[None], 7)
    inv_freq = (1.0 / 10000 ** (np.arange(0, 8, 2) / 8)).astype(np.float32)
    tables = constants.rope_tables(inv_freq, 6, 1.0)
    assert constants.rope_table_kind(tables["sin"][None], inv_freq, 1.0) == "sin"
    assert constants.rope_table_kind(tables["cos"] * 2, inv_freq, 1.0) is None
    assert constants.rope_table_kind(tables["cos"] * 2, inv_freq, 2.0) == "cos"


LONG_ROPE = {  # Llama-3's rope at 2048 positions (angles up to 2047 rad), on a tiny body
    "model_type": "llama", "hidden_size": 128, "num_attention_heads": 1, "num_key_value_heads": 1,
    "num_hidden_layers": 1, "intermediate_size": 32, "vocab_size": 256,
    "max_position_embeddings": 4096, "tie_word_embeddings": False,
    "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"},
}

_FOLD_DIGEST = """
import hashlib, sys
from wsc.frontend import load_config_only
from wsc.frontend.importer import import_trace
from wsc.frontend.trace import trace_model
trace = trace_model(load_config_only(sys.argv[1]), 2048)
import_trace(trace, no_weights=True)
h = hashlib.sha256()
for name in sorted(trace.static):
    value = trace.static[name]
    if hasattr(value, "numpy"):
        h.update(name.encode() + value.numpy().tobytes())
print(h.hexdigest())
"""


def _digest(static: dict) -> str:
    import hashlib

    h = hashlib.sha256()
    for name in sorted(static):
        if isinstance(static[name], torch.Tensor):
            h.update(name.encode() + static[name].numpy().tobytes())
    return h.hexdigest()


def test_folding_and_rotary_checks_repeat_exactly(tmp_path):
    """Issue 11 item 8: a plan-only Llama-3-8B compile once failed the rotary-table check.
    Folding must be a function of the config alone: the same values, bit for bit, every time
    it runs in a process and in fresh processes with other hash seeds, and the rotary check
    must accept them every time."""
    import os
    import subprocess
    import sys

    (tmp_path / "config.json").write_text(json.dumps(LONG_ROPE))
    loaded = load_config_only(tmp_path / "config.json")
    trace = trace_model(loaded, 2048)
    first = _digest(trace.static)
    program = trace.program
    signature = program.graph_signature
    state = {**signature.inputs_to_parameters, **signature.inputs_to_buffers,
             **signature.inputs_to_lifted_tensor_constants}
    values = {**program.state_dict, **program.constants, **loaded.buffers}
    for _ in range(5):
        again = fold_static(trace.graph, trace.input_name, signature.inputs_to_parameters, state,
                            values)
        assert _digest(again) == first
        module, _ = import_trace(replace(trace, static=again), loaded.model, no_weights=True)
        assert {t.kind.data for t in module.walk() if isinstance(t, g.RopeTableOp)} == {"cos", "sin"}
    env = {**os.environ, "PYTHONHASHSEED": "1"}  # this process has a random one
    r = subprocess.run([sys.executable, "-c", _FOLD_DIGEST, str(tmp_path / "config.json")],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-1] == first


def test_hub_style_gpt2_checkpoint_without_prefix(ckpt):
    """The original `gpt2` checkpoint: no `transformer.` prefix, old attention-mask buffers."""
    def hub_style(state):
        for name in list(state):
            state[name.removeprefix("transformer.")] = state.pop(name)
        state["h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 128, 128))

    _rewrite_weights(ckpt, hub_style)
    ids = fresh_ids()
    assert torch.equal(logits(load_checkpoint(ckpt).model, ids), logits(make_model("gpt2"), ids))
