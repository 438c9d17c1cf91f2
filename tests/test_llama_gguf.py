"""The file llama-server serves: matrices re-quantized to Q8_0 with a GGUF LoRA merged in (engine.llama_gguf).

Small GGUF files written here with the gguf package; no llama.cpp build needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from engine.generation import ModelLoadError  # noqa: E402
from engine.llama_gguf import merged_q8_0, served_model  # noqa: E402

Q4_1, Q8_0, F32 = gguf.GGMLQuantizationType.Q4_1, gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.F32


def _base(path: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A GGUF with a Q4_1 matrix, a Q4_1 matrix the adapter leaves alone, a vector and some metadata."""
    weights = {"blk.0.attn_q.weight": rng.normal(size=(64, 96)).astype(np.float32),
               "blk.0.ffn_up.weight": rng.normal(size=(32, 64)).astype(np.float32)}
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_Q4_1))
    writer.add_token_list(["<s>", "hello", "world"])
    writer.add_context_length(128)
    for name, weight in weights.items():
        writer.add_tensor(name, gguf.quants.quantize(weight, Q4_1), raw_dtype=Q4_1)
    norm = rng.normal(size=(96,)).astype(np.float32)
    writer.add_tensor("blk.0.attn_norm.weight", norm)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    weights["blk.0.attn_norm.weight"] = norm
    return {name: np.asarray(gguf.quants.dequantize(gguf.quants.quantize(w, Q4_1), Q4_1)) if w.ndim == 2 else w
            for name, w in weights.items()}


def _lora(path: Path, rng: np.random.Generator, target: str, out_in: tuple[int, int], rank: int = 4,
          alpha: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    lora_a = rng.normal(size=(rank, out_in[1])).astype(np.float16)
    lora_b = rng.normal(size=(out_in[0], rank)).astype(np.float16)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", alpha)
    writer.add_tensor(f"{target}.lora_a", lora_a)
    writer.add_tensor(f"{target}.lora_b", lora_b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return lora_a.astype(np.float32), lora_b.astype(np.float32)


def _read(path: Path) -> tuple[dict[str, tuple[object, np.ndarray]], object]:
    reader = gguf.GGUFReader(str(path))
    tensors = {t.name: (t.tensor_type, np.asarray(gguf.quants.dequantize(t.data, t.tensor_type))) for t in reader.tensors}
    return tensors, reader


def test_the_adapter_is_merged_and_matrices_become_q8_0(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    expected = _base(tmp_path / "base.gguf", rng)
    lora_a, lora_b = _lora(tmp_path / "lora.gguf", rng, "blk.0.attn_q.weight", (64, 96))
    merged_q8_0(tmp_path / "base.gguf", tmp_path / "lora.gguf", tmp_path / "out.gguf")
    tensors, reader = _read(tmp_path / "out.gguf")

    want_q = expected["blk.0.attn_q.weight"] + (8.0 / 4) * (lora_b @ lora_a)
    kind, got_q = tensors["blk.0.attn_q.weight"]
    assert kind == Q8_0
    # Q8_0 keeps each value within half a step of its block's scale (max |x| / 127).
    assert np.max(np.abs(got_q - want_q)) <= np.max(np.abs(want_q)) / 127
    assert np.abs(got_q - want_q).mean() < 0.01 * np.abs(want_q).mean()
    kind, got_up = tensors["blk.0.ffn_up.weight"]  # not adapted: re-quantized only
    assert kind == Q8_0 and np.max(np.abs(got_up - expected["blk.0.ffn_up.weight"])) <= 0.05
    kind, got_norm = tensors["blk.0.attn_norm.weight"]  # vectors are copied exactly
    assert kind == F32 and np.array_equal(got_norm, expected["blk.0.attn_norm.weight"])
    # Metadata comes along; the file type says what the file now is.
    assert reader.fields["general.name"].contents() == "tiny"
    assert reader.fields["tokenizer.ggml.tokens"].contents() == ["<s>", "hello", "world"]
    assert reader.fields["llama.context_length"].contents() == 128
    assert reader.fields["general.file_type"].contents() == int(gguf.LlamaFileType.MOSTLY_Q8_0)
    assert reader.fields["general.architecture"].contents() == "llama"


def test_without_an_adapter_the_weights_are_only_requantized(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    expected = _base(tmp_path / "base.gguf", rng)
    merged_q8_0(tmp_path / "base.gguf", None, tmp_path / "out.gguf")
    tensors, _ = _read(tmp_path / "out.gguf")
    for name in ("blk.0.attn_q.weight", "blk.0.ffn_up.weight"):
        assert tensors[name][0] == Q8_0
        assert np.max(np.abs(tensors[name][1] - expected[name])) <= np.max(np.abs(expected[name])) / 127


def test_an_adapter_that_does_not_fit_stops_with_one_line(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    _base(tmp_path / "base.gguf", rng)
    _lora(tmp_path / "wrong-shape.gguf", rng, "blk.0.attn_q.weight", (32, 96))
    with pytest.raises(ModelLoadError, match="does not fit the model"):
        merged_q8_0(tmp_path / "base.gguf", tmp_path / "wrong-shape.gguf", tmp_path / "out.gguf")
    _lora(tmp_path / "other-layer.gguf", rng, "blk.7.attn_q.weight", (64, 96))
    with pytest.raises(ModelLoadError, match="blk.7.attn_q.weight, which the model does not have"):
        merged_q8_0(tmp_path / "base.gguf", tmp_path / "other-layer.gguf", tmp_path / "out.gguf")
    with pytest.raises(ModelLoadError, match="not a GGUF LoRA"):
        merged_q8_0(tmp_path / "base.gguf", tmp_path / "base.gguf", tmp_path / "out.gguf")


def test_served_model_is_made_once_and_leaves_no_partial_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    _base(tmp_path / "base.gguf", rng)
    _lora(tmp_path / "lora.gguf", rng, "blk.0.attn_q.weight", (64, 96))
    cache = tmp_path / "cache"
    first = served_model(tmp_path / "base.gguf", "base-k", tmp_path / "lora.gguf", cache)
    stamp = first.stat().st_mtime_ns
    assert served_model(tmp_path / "base.gguf", "base-k", tmp_path / "lora.gguf", cache) == first
    assert first.stat().st_mtime_ns == stamp
    assert served_model(tmp_path / "base.gguf", "base-k", None, cache) != first  # its own file
    _lora(tmp_path / "bad.gguf", rng, "blk.0.attn_q.weight", (32, 96))
    with pytest.raises(ModelLoadError):
        served_model(tmp_path / "base.gguf", "base-k", tmp_path / "bad.gguf", cache)
    assert sorted(p.name for p in cache.iterdir()) == sorted([first.name, "served-base-k-no-adapter-q8_0-v1.gguf"])


def test_a_new_copy_of_an_adapter_replaces_the_old_one_in_the_cache(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    _base(tmp_path / "base.gguf", rng)
    old, new, other = (tmp_path / f"lora-{name}.gguf" for name in ("mine-" + "a" * 16, "mine-" + "b" * 16,
                                                                     "mine-too-" + "a" * 16))
    for path in (old, new, other):
        _lora(path, rng, "blk.0.attn_q.weight", (64, 96))
    cache = tmp_path / "cache"
    kept = [served_model(tmp_path / "base.gguf", "base-k", path, cache) for path in (other, None)]
    first = served_model(tmp_path / "base.gguf", "base-k", old, cache)
    (cache / f"{first.name}.tmp1234").write_bytes(b"another process still writing")
    retrained = served_model(tmp_path / "base.gguf", "base-k", new, cache)
    assert not first.exists()  # the adapter was retrained: its old copy goes
    # Another adapter's copy, the copy without one, and a file being written all stay.
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [retrained.name, *(p.name for p in kept), f"{first.name}.tmp1234"])
    # A copy left from an older format goes too, at the next start, with nothing to make.
    leftover = cache / retrained.name.replace("-v1.gguf", "-v0.gguf")
    leftover.write_bytes(b"old format")
    assert served_model(tmp_path / "base.gguf", "base-k", new, cache) == retrained and not leftover.exists()
