#!/usr/bin/env python3
"""A Triton HTTP client written from Triton's documentation, not from this server's code.

It follows the ``simple_http_infer_client.py`` example of triton-inference-server/client,
with the inputs and outputs of Triton's vLLM backend (``text_input``, ``stream``,
``sampling_parameters``, ``exclude_input_in_output`` -> ``text_output``), so it runs unchanged
against a Triton server serving a vLLM model and against triton-mlx.

    python simple_llm_http_client.py -u localhost:8000 -m vllm_model
"""

import argparse
import json
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def test_infer(triton_client, model_name, prompt, sampling_parameters, binary_input, headers=None):
    inputs = []
    outputs = []
    inputs.append(httpclient.InferInput("text_input", [1], "BYTES"))
    inputs.append(httpclient.InferInput("stream", [1], "BOOL"))
    inputs.append(httpclient.InferInput("sampling_parameters", [1], "BYTES"))
    inputs.append(httpclient.InferInput("exclude_input_in_output", [1], "BOOL"))

    inputs[0].set_data_from_numpy(
        np.array([prompt.encode("utf-8")], dtype=np.object_), binary_data=binary_input
    )
    inputs[1].set_data_from_numpy(np.array([False], dtype=bool), binary_data=binary_input)
    inputs[2].set_data_from_numpy(
        np.array([json.dumps(sampling_parameters).encode("utf-8")], dtype=np.object_),
        binary_data=binary_input,
    )
    inputs[3].set_data_from_numpy(np.array([True], dtype=bool), binary_data=binary_input)

    outputs.append(httpclient.InferRequestedOutput("text_output", binary_data=not binary_input))
    query_params = {"test_1": 1, "test_2": 2}
    results = triton_client.infer(
        model_name,
        inputs,
        outputs=outputs,
        query_params=query_params,
        headers=headers,
    )
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("-v", "--verbose", action="store_true", required=False, default=False,
                        help="Enable verbose output")
    parser.add_argument("-u", "--url", type=str, required=False, default="localhost:8000",
                        help="Inference server URL. Default is localhost:8000.")
    parser.add_argument("-m", "--model", type=str, required=False, default="vllm_model",
                        help="Model name. Default is vllm_model.")
    FLAGS = parser.parse_args()

    try:
        triton_client = httpclient.InferenceServerClient(url=FLAGS.url, verbose=FLAGS.verbose)
    except Exception as e:
        print("channel creation failed: " + str(e))
        sys.exit(1)

    if not triton_client.is_server_live():
        print("FAILED : is_server_live")
        sys.exit(1)
    if not triton_client.is_server_ready():
        print("FAILED : is_server_ready")
        sys.exit(1)
    if not triton_client.is_model_ready(FLAGS.model):
        print("FAILED : is_model_ready")
        sys.exit(1)

    metadata = triton_client.get_model_metadata(FLAGS.model)
    if metadata["name"] != FLAGS.model:
        print("FAILED : get_model_metadata")
        sys.exit(1)
    input_names = [i["name"] for i in metadata["inputs"]]
    for name in ("text_input", "stream", "sampling_parameters", "exclude_input_in_output"):
        if name not in input_names:
            print("FAILED : get_model_metadata, no input " + name)
            sys.exit(1)

    config = triton_client.get_model_config(FLAGS.model)
    if not config["model_transaction_policy"]["decoupled"]:
        print("FAILED : get_model_config, the vLLM backend is decoupled")
        sys.exit(1)

    try:
        triton_client.get_model_metadata("wrong_model_name")
    except InferenceServerException as ex:
        if "Request for unknown model" not in ex.message():
            print("FAILED : get_model_metadata wrong_model_name")
            print(f"Got: {ex.message()}")
            sys.exit(1)
    else:
        print("FAILED : get_model_metadata wrong_model_name")
        sys.exit(1)

    sampling_parameters = {"temperature": "0", "max_tokens": "16", "seed": "0"}
    texts = []
    for binary_input in (True, False):
        results = test_infer(triton_client, FLAGS.model, "What is Triton Inference Server?",
                             sampling_parameters, binary_input)
        output_data = results.as_numpy("text_output")
        if output_data is None or output_data.shape != (1,):
            print("FAILED : text_output")
            sys.exit(1)
        # BYTES come back as bytes when sent in binary, as str when sent as JSON.
        value = output_data[0]
        texts.append(value.decode("utf-8") if isinstance(value, bytes) else value)
        print(texts[-1])
    if texts[0] != texts[1]:
        print("FAILED : binary and JSON tensors gave different greedy answers")
        sys.exit(1)

    statistics = triton_client.get_inference_statistics(model_name=FLAGS.model)
    if len(statistics["model_stats"]) != 1:
        print("FAILED: Inference Statistics")
        sys.exit(1)
    if statistics["model_stats"][0]["inference_stats"]["success"]["count"] < 2:
        print("FAILED: Inference Statistics, success count")
        sys.exit(1)

    print("PASS: infer")
