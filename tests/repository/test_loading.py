"""A load that fails after the model's thread started must stop that thread: a chat template
that does not compile leaves no engine (and no weights) behind, also when poll mode retries."""

from __future__ import annotations

import threading

from tests.tiny_model import build_tiny_model
from tests.waiting import wait_for
from triton_mlx.repository.repository import folder_fingerprint

NAME = "templated"  # not the shared tiny server's model, whose engine thread runs throughout
BROKEN_TEMPLATE = "{% for message in messages %}{{ message.content }}"  # no endfor


def engine_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"engine-{NAME}" and t.is_alive()]


def test_a_template_that_does_not_compile_leaves_no_engine_behind(tmp_path, start_server):
    build_tiny_model(tmp_path / "repo" / NAME)
    template = tmp_path / "broken.jinja"
    template.write_text(BROKEN_TEMPLATE)
    assert not engine_threads()
    server = start_server(tmp_path / "repo", chat_template=template, repository_poll_secs=0.2)
    entry = server.server.repository.get(NAME)
    assert entry.state == "UNAVAILABLE" and "template" in entry.reason.lower(), entry.reason
    wait_for(lambda: not engine_threads(), what="the failed engine's thread to end")

    # Poll mode tries again when the folder changes: each failed attempt cleans up after itself.
    folder = tmp_path / "repo" / NAME

    def attempted() -> bool:
        """The watcher tried the folder as it is now, and the attempt failed."""
        entry = server.server.repository.get(NAME)
        return entry.fingerprint == folder_fingerprint(folder) and entry.state == "UNAVAILABLE"

    for attempt in range(2):
        (folder / "touched.txt").write_text(str(attempt))
        wait_for(attempted, what="the reload attempt")
        wait_for(lambda: not engine_threads(), what="the retried engine's thread to end")


def test_prompt_attention_is_rerouted_on_cuda_only(tmp_path, monkeypatch):
    """A model folder loaded on MLX's CUDA backend installs the unfused prompt attention
    (``engine.cuda_attention``); on any other backend MLX's attention stays as it is."""
    from triton_mlx.repository import loading

    build_tiny_model(tmp_path / NAME)
    installs = []
    monkeypatch.setattr(loading.cuda_attention, "install", lambda: installs.append(1))
    for cuda in (False, True):
        monkeypatch.setattr(loading, "on_cuda", lambda cuda=cuda: cuda)
        loading.load_model_folder(tmp_path / NAME)
        assert len(installs) == int(cuda)
