"""The bench notes how each server ended: its exit code after SIGTERM and any C++ abort."""

from __future__ import annotations

from bench.results import Run
from bench.run import note_exits
from bench.servers import ServerSpec


def spec(tmp_path, name: str, code: int | None, log: str) -> ServerSpec:
    path = tmp_path / f"{name}.log"
    path.write_text(log)
    return ServerSpec(name, ["python"], 0, "m", "/ready", exit_code=code, log_path=path)


def test_a_clean_exit_and_an_abort_are_told_apart(tmp_path):
    run = Run("m", 8, [1], {}, 1, 1)
    note_exits(run, {
        "ours": spec(tmp_path, "ours", 0, "served\nbye\n"),
        "peer": spec(tmp_path, "peer", -6, "terminate called without an active exception\n"),
        "never stopped": spec(tmp_path, "never", None, ""),
    })
    assert run.warnings == [
        "ours: exit code 0 after SIGTERM; no C++ terminate in its log",
        "peer: exit code -6 after SIGTERM; C++ terminate in its log",
    ]
