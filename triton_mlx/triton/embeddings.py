"""``POST /v2/models/{m}/infer`` for embedding models: ``text_input`` -> ``embedding``.

Same vectors as ``/v1/embeddings`` (same batching thread, same truncation); errors in Triton's
shape: a full queue or an unloading model is UNAVAILABLE (503), an engine failure 500.
"""

from __future__ import annotations

import time

import numpy as np

from triton_mlx.encoders.batching import tokenize_texts
from triton_mlx.http import Request, Response
from triton_mlx.observability.inference_stats import BACKEND, SUCCESS, InferenceTiming
from triton_mlx.observability.server_metrics import ServerMetrics
from triton_mlx.repository.served import EmbeddingModel
from triton_mlx.serving import embeddings
from triton_mlx.serving.errors import RequestError
from triton_mlx.triton import embedding_signature, tensors
from triton_mlx.triton.errors import from_request_error, internal, invalid_arg
from triton_mlx.triton.inference import request_sampling_parameters
from triton_mlx.triton.signature import MODEL_VERSION


async def infer_embeddings(
    request: Request, model: EmbeddingModel, infer: tensors.InferRequest, metrics: ServerMetrics,
    received: float,
) -> Response:
    embedder = model.encoder
    texts = embedding_signature.check_inputs(model.name, infer.inputs, infer.id)
    embedding_signature.check_outputs(model.name, infer.outputs)
    extra = sorted(request_sampling_parameters(infer.parameters))
    if extra:
        raise invalid_arg(f"parameters not supported by embedding model '{model.name}': "
                          f"{', '.join(extra)}")
    tokens = await tokenize_texts(embedder, texts)
    request.log_fields.update(model=model.name, prompt_tokens=sum(map(len, tokens)))
    submitted = time.perf_counter()

    def record(outcome: str, computed: float | None) -> None:
        timing = InferenceTiming.from_marks(received=received, submitted=submitted,
                                            first_output=computed, finished=time.perf_counter())
        metrics.observe_inference(model.name, timing, outcome=outcome, inferences=len(texts))

    try:
        vectors = await embeddings.embed(embedder, tokens)
    except RequestError as exc:
        if exc.code != "engine_error":
            raise from_request_error(exc) from None
        record(BACKEND, None)
        raise internal(f"embedding failed: {exc.message}") from None
    computed = time.perf_counter()
    output = tensors.Tensor(embedding_signature.EMBEDDING_OUTPUT, "FP32", list(vectors.shape),
                            np.ascontiguousarray(vectors, dtype=np.float32).ravel().tolist())
    binary = _binary(infer)
    payload, header = tensors.encode_response(
        model_name=model.name, model_version=MODEL_VERSION, request_id=infer.id,
        outputs=[(output, binary)],
    )
    record(SUCCESS, computed)
    if header is None:
        return Response(200, payload, content_type="application/json")
    return Response(200, payload, headers=[("Inference-Header-Content-Length", str(header))],
                    content_type="application/octet-stream")


def _binary(infer: tensors.InferRequest) -> bool:
    for output in infer.outputs or ():
        if output.binary is not None:
            return output.binary
    return infer.binary_data_output
