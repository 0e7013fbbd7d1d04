"""Which models can be split how: a clear refusal before mlx-lm fails with a shape error."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from triton_mlx.distributed.world import (
    ShardingError,
    check_divisible,
    check_shardable,
    explain_load_failure,
)


class Splittable:
    args = SimpleNamespace(num_attention_heads=9, num_key_value_heads=3)
    model = SimpleNamespace(pipeline=lambda group: None)

    def shard(self, group):  # pragma: no cover - never called here
        pass


class Whole:
    model = SimpleNamespace()


@pytest.mark.parametrize("ranks", [1, 3])
def test_head_counts_that_divide_by_the_ranks_are_accepted(ranks):
    check_divisible(Splittable(), ranks)


def test_head_counts_that_do_not_divide_are_refused_naming_them():
    with pytest.raises(ShardingError, match="9 attention heads and 3 key value heads: not "
                                            "divisible by 2 ranks"):
        check_divisible(Splittable(), 2)


def test_an_architecture_without_the_method_is_refused_naming_the_other_way():
    check_shardable(Splittable(), "tensor")
    check_shardable(Splittable(), "pipeline")
    with pytest.raises(ShardingError, match="tensor-parallel.*try --parallel pipeline"):
        check_shardable(Whole(), "tensor")
    with pytest.raises(ShardingError, match="pipeline.*try --parallel tensor"):
        check_shardable(Whole(), "pipeline")


def test_a_pipeline_on_cuda_without_send_says_to_use_tensor_parallelism():
    # what MLX 0.32.4 raised on two H200s when mlx-lm's pipeline first sent activations
    error = RuntimeError("Send has no CUDA implementation.")
    explained = explain_load_failure("pipeline", error)
    assert isinstance(explained, ShardingError)
    assert "--parallel tensor" in str(explained) and "Send has no CUDA" in str(explained)


@pytest.mark.parametrize("kind, error", [
    ("tensor", RuntimeError("Send has no CUDA implementation.")),  # not a pipeline's failure
    ("pipeline", RuntimeError("out of memory")),
])
def test_other_load_failures_are_left_as_they_are(kind, error):
    assert explain_load_failure(kind, error) is None
