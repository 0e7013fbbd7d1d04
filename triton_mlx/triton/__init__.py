"""NVIDIA Triton's HTTP/REST protocol (KServe v2 and Triton's extensions) for our models."""
