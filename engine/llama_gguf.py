"""The GGUF file ``llama-server`` serves: the model's matrices in Q8_0, with the adapter merged in.

Why not the embedded Q4_1 file with the adapter beside it (``--lora``): on a CPU, llama.cpp reads
prompts about twice as fast from Q8_0 matrices as from Q4_1 ones and generates about 15% slower
(``bench/llama_routes.py --weights`` has the figures), and a chat summary's prompt is several times longer
than its answer. Merging saves the adapter's extra matrix products on every token, and serves the
weights the torch path serves (the de-quantized model plus the adapter's product) at 8 bits.

The adapter is merged from the GGUF LoRA that llama.cpp's own ``convert_lora_to_gguf.py`` writes
(``engine.llama_cpp.convert_adapter``): its tensors already carry llama.cpp's names and layout, so each
``lora_b @ lora_a`` (times alpha / rank, as llama.cpp scales it at run time) adds to the matrix of the
same name. Matrices whose rows do not split into Q8_0 blocks, and vectors, are copied as they are.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from .generation import ModelLoadError

log = logging.getLogger(__name__)

# Written into the served file's name: a change to how it is made makes a new one.
FORMAT = 1
_LORA_A, _LORA_B = ".lora_a", ".lora_b"


def read_lora(path: Path) -> tuple[dict[str, Any], float]:
    """({base tensor name: (lora_a, lora_b) as float32}, alpha) from a GGUF LoRA."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(path))
    field = reader.fields.get("adapter.lora.alpha")
    if field is None:
        raise ModelLoadError(f"{path.name} is not a GGUF LoRA (no adapter.lora.alpha).")
    alpha = float(field.contents())
    halves: dict[str, dict[str, Any]] = {}
    for tensor in reader.tensors:
        for suffix in (_LORA_A, _LORA_B):
            if tensor.name.endswith(suffix):
                data = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
                halves.setdefault(tensor.name[: -len(suffix)], {})[suffix] = np.asarray(data, dtype=np.float32)
    pairs = {}
    for name, parts in halves.items():
        if set(parts) != {_LORA_A, _LORA_B}:
            raise ModelLoadError(f"{path.name}: {name} has only one of lora_a and lora_b.")
        pairs[name] = (parts[_LORA_A], parts[_LORA_B])
    return pairs, alpha


def merged_q8_0(base: Path, lora: Path | None, out: Path) -> None:
    """Write ``base`` to ``out`` with its matrices in Q8_0 and ``lora`` (a GGUF LoRA) merged into them."""
    import gguf
    import numpy as np

    logging.getLogger("gguf").setLevel(logging.WARNING)  # its writer logs each file's path and size at INFO
    pairs, alpha = read_lora(lora) if lora is not None else ({}, 0.0)
    reader = gguf.GGUFReader(str(base))
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(str(out), arch, endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue  # the writer writes these itself
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        value = int(gguf.LlamaFileType.MOSTLY_Q8_0) if field.name == "general.file_type" else field.contents()
        writer.add_key_value(field.name, value, kind, sub_type=sub)
    block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0]
    used = set()
    for tensor in reader.tensors:
        shape = [int(n) for n in reversed(tensor.shape)]  # numpy order: rows last-to-first as ggml stores them
        matrix = len(shape) == 2 and shape[-1] % block == 0
        pair = pairs.get(tensor.name)
        if pair is None and (not matrix or tensor.tensor_type == gguf.GGMLQuantizationType.Q8_0):
            writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
            continue
        weight = np.asarray(gguf.quants.dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        if pair is not None:
            lora_a, lora_b = pair
            if weight.shape != (lora_b.shape[0], lora_a.shape[1]) or lora_a.shape[0] != lora_b.shape[1]:
                raise ModelLoadError(f"The adapter's {tensor.name} does not fit the model "
                                     f"({lora_b.shape[0]}x{lora_a.shape[1]} against {weight.shape[0]}x{weight.shape[1]}).")
            weight = weight + (alpha / lora_a.shape[0]) * (lora_b @ lora_a)
            used.add(tensor.name)
        if matrix:
            writer.add_tensor(tensor.name, gguf.quants.quantize(weight, gguf.GGMLQuantizationType.Q8_0),
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:  # an adapted tensor that Q8_0 cannot hold: kept in full precision
            writer.add_tensor(tensor.name, weight)
    missing = sorted(set(pairs) - used)
    if missing:
        raise ModelLoadError(f"The adapter changes {missing[0]}, which the model does not have.")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def served_model(base: Path, base_key: str, lora: Path | None, cache: Path) -> Path:
    """The cached served file for this model (``base_key``) and GGUF LoRA (keyed by its file name, which
    ``convert_adapter`` derives from the adapter's bytes), made once (``merged_q8_0``)."""
    target = cache / f"served-{base_key}-{lora.stem if lora is not None else 'no-adapter'}-q8_0-v{FORMAT}.gguf"
    if not target.is_file():
        _make(base, lora, target)
    drop_stale(target)
    return target


def _make(base: Path, lora: Path | None, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", dir=target.parent)
    os.close(fd)
    started = time.perf_counter()
    try:
        merged_q8_0(base, lora, Path(tmp))
        os.replace(tmp, target)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"The model could not be prepared for llama.cpp ({type(exc).__name__}: {exc}).") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("model prepared for llama.cpp (Q8_0%s) in %.1fs", ", adapter merged" if lora else "",
             time.perf_counter() - started)


# The parts of a cache file's name that change when what it was made from changes: the 16-hex-digit keys
# (a model file's, an adapter's bytes) and the served file's format version.
_KEY = re.compile(r"[0-9a-f]{16}")
_VERSION = re.compile(r"v\d+\\\.gguf$")


def drop_stale(keep: Path) -> None:
    """Remove the other versions of the cache file ``keep``: the same name with other keys or another
    version (the adapter retrained, the model reinstalled, an older FORMAT), about 145 MB each for a served
    copy, which nothing would use again. A server still running on one holds it open, and goes on reading
    it (POSIX); where the system refuses, it stays. Files still being written (a temp suffix) never match."""
    pattern = _VERSION.sub(r"v\\d+\\.gguf", _KEY.sub("[0-9a-f]{16}", re.escape(keep.name)))
    for path in keep.parent.iterdir():
        if path.name != keep.name and re.fullmatch(pattern, path.name) and path.is_file():
            try:
                path.unlink()
            except OSError:
                continue
            log.info("removed %s from the llama.cpp cache (made for an earlier adapter, model or format)", path.name)
