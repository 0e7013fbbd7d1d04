"""Poll mode: the repository is rescanned; new, changed and removed folders are followed."""

from __future__ import annotations

import json
import shutil
import threading
import time

import openai

from tests.conftest import TINY
from tests.openai.http_client import request
from tests.tiny_model import build_tiny_model
from tests.waiting import wait_for
from triton_mlx.repository.repository import folder_fingerprint

POLL = 0.3


def index(server) -> dict[str, dict]:
    status, _, body = request(server.http_port, "POST", "/v2/repository/index")
    assert status == 200
    return {m["name"]: m for m in body}


def cards(server) -> dict[str, dict]:
    return {c["id"]: c for c in request(server.port, "GET", "/v1/models")[2]["data"]}


class Traffic:
    """Completions on one model, back to back in a thread, recording every status."""

    def __init__(self, server, model: str) -> None:
        self.server, self.model = server, model
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        body = {"model": self.model, "prompt": "Hello", "max_tokens": 8}
        while not self._stop.is_set():
            self.statuses.append(request(self.server.port, "POST", "/v1/completions", body)[0])

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)


def copy_slowly(source, dest, chunks: int = 4, pause: float = 0.05, check=None) -> None:
    """Copy a folder file by file, each in appended chunks, calling ``check`` between them, so
    that every scan sees the folder still changing."""
    dest.mkdir()
    for file in sorted(source.iterdir()):
        data = file.read_bytes()
        step = max(1, len(data) // chunks + 1)
        with open(dest / file.name, "wb") as out:
            for start in range(0, len(data), step):
                out.write(data[start:start + step])
                out.flush()
                if check:
                    check()
                time.sleep(pause)


def test_poll_mode_follows_new_changed_and_removed_folders(tmp_path, start_server):
    root = tmp_path / "repo"
    build_tiny_model(root / TINY)
    staged = build_tiny_model(tmp_path / "staged" / "late", context_length=2048)
    server = start_server(root, repository_poll_secs=POLL)
    repository = server.server.repository
    client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)

    with Traffic(server, TINY) as traffic:
        # Copied in slowly: never listed (never loaded half-copied) until complete.
        def not_there_yet():
            assert repository.get("late") is None

        copy_slowly(staged, root / "late", check=not_there_yet)
        wait_for(lambda: index(server).get("late", {}).get("state") == "READY",
                 what="the new model to load")
        assert request(server.port, "POST", "/v1/completions",
                       {"model": "late", "prompt": "Hi", "max_tokens": 4})[0] == 200

        # Changed: reloaded; a long request in flight on the old engine completes there.
        old_engine = server.engine("late")
        stream = client.completions.create(model="late", prompt="Hi", max_tokens=1500,
                                           stream=True, logit_bias={"2": -100})
        first = next(iter(stream))
        (root / "late" / "triton_mlx.json").write_text(json.dumps({"display_name": "Late v2"}))
        wait_for(lambda: cards(server)["late"]["display_name"] == "Late v2",
                 what="the changed model to reload")
        assert server.engine("late") is not old_engine
        # Swapped while the old engine still runs the request: it is kept until drained.
        assert old_engine in [m.engine for m in repository.retiring()]
        rest = list(stream)
        assert first.choices[0].text is not None
        assert rest[-1].choices[0].finish_reason in ("length", "stop")
        assert index(server)["late"]["state"] == "READY"
        assert request(server.port, "POST", "/v1/completions",
                       {"model": "late", "prompt": "Hi", "max_tokens": 4})[0] == 200
        wait_for(lambda: old_engine not in [m.engine for m in repository.retiring()],
                 what="the old engine to stop")

        # Removed: goes away; requests for it fail cleanly, the other model is unaffected.
        shutil.rmtree(root / "late")
        wait_for(lambda: "late" not in index(server), what="the removed model to go")
        status, _, body = request(server.port, "POST", "/v1/completions",
                                  {"model": "late", "prompt": "Hi", "max_tokens": 4})
        assert status == 404 and body["error"]["code"] == "model_not_found"
        served = len(traffic.statuses)
        wait_for(lambda: len(traffic.statuses) >= served + 2,
                 what="requests on the other model after the removal")
        # The removed model stays gone: two more scans find nothing to load.
        scans = server.server.watcher.scans
        wait_for(lambda: server.server.watcher.scans >= scans + 2, what="two more scans")
    assert traffic.statuses and set(traffic.statuses) == {200}
    assert list(index(server)) == [TINY]


def test_a_broken_reload_keeps_the_loaded_model(tmp_path, start_server):
    build_tiny_model(tmp_path / TINY)
    server = start_server(tmp_path, repository_poll_secs=POLL)
    engine = server.engine(TINY)
    (tmp_path / TINY / "triton_mlx.json").write_text(json.dumps({"max_batchsize": 2}))
    # The folder is retried only when its files change again; wait for the attempt.
    wait_for(lambda: server.server.repository.get(TINY).fingerprint
             == folder_fingerprint(tmp_path / TINY), what="the reload attempt")
    assert server.engine(TINY) is engine
    assert index(server)[TINY]["state"] == "READY"
    assert request(server.port, "POST", "/v1/completions",
                   {"model": TINY, "prompt": "Hi", "max_tokens": 4})[0] == 200


def test_none_mode_does_not_follow_the_repository(tmp_path, start_server):
    build_tiny_model(tmp_path / TINY)
    server = start_server(tmp_path, model_control_mode="none", repository_poll_secs=POLL)
    assert server.server.watcher is None
    shutil.copytree(tmp_path / TINY, tmp_path / "other")
    # A negative check (the new folder is not picked up): with no watcher there is no scan to
    # wait for, so a few poll intervals pass by the clock.
    time.sleep(4 * POLL)
    assert list(index(server)) == [TINY]
