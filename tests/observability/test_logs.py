import io
import json
import logging
import re
import threading

import pytest

from triton_mlx.observability.logs import (
    ACCESS_LOGGER_NAME,
    IN_MESSAGE,
    bind_request_id,
    configure_logging,
    request_id_var,
)

HUMAN_LINE = re.compile(
    r"(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (?P<level>\S+) +(?P<logger>\S+) (?P<rest>.*)"
)


@pytest.fixture
def capture():
    """Configure logging into a buffer and restore the logger tree afterwards."""
    root = logging.getLogger("triton_mlx")
    saved = (root.handlers[:], root.level, root.propagate)
    buffer = io.StringIO()

    def configure(**kwargs) -> io.StringIO:
        configure_logging(stream=buffer, **kwargs)
        return buffer

    yield configure
    root.handlers[:], root.level, root.propagate = saved


def lines(buffer: io.StringIO) -> list[str]:
    return buffer.getvalue().splitlines()


def test_human_line_without_request_id(capture):
    buffer = capture()
    logging.getLogger("triton_mlx.engine").info("loaded %s", "llama")
    [line] = lines(buffer)
    match = HUMAN_LINE.fullmatch(line)
    assert match, line
    assert match["level"] == "INFO" and line.split("Z ", 1)[1].startswith("INFO  triton_mlx")
    assert match["logger"] == "triton_mlx.engine"
    assert match["rest"] == "loaded llama"
    assert "[req=" not in line


def test_human_line_with_request_id_and_extra_fields(capture):
    buffer = capture()
    token = bind_request_id("abc123")
    try:
        logging.getLogger(ACCESS_LOGGER_NAME).info(
            "request done",
            extra={
                "method": "POST",
                "path": "/v1/chat/completions",
                "status": 200,
                "duration_ms": 12.5,
                "client": "127.0.0.1:5000",
                "agent": "curl 8.0",
            },
        )
    finally:
        request_id_var.reset(token)
    [line] = lines(buffer)
    assert HUMAN_LINE.fullmatch(line)["rest"] == (
        "[req=abc123] request done method=POST path=/v1/chat/completions status=200"
        ' duration_ms=12.5 client=127.0.0.1:5000 agent="curl 8.0"'
    )
    assert request_id_var.get() is None


def test_level_filters_records(capture):
    buffer = capture(level="warning")
    log = logging.getLogger("triton_mlx.x")
    log.info("hidden")
    log.warning("shown")
    [line] = lines(buffer)
    assert " WARNING triton_mlx.x shown" in line


def test_human_traceback_follows_line(capture):
    buffer = capture()
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("triton_mlx.engine").exception("step failed")
    first, *rest = lines(buffer)
    assert first.endswith("ERROR triton_mlx.engine step failed")
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "RuntimeError: boom"


def test_json_lines(capture):
    buffer = capture(json_logs=True)
    log = logging.getLogger("triton_mlx.http")
    log.info("no request")
    token = bind_request_id("r-1")
    try:
        log.warning("slow", extra={"duration_ms": 1500, "obj": object(), "tags": ["a"]})
    finally:
        request_id_var.reset(token)
    first, second = (json.loads(line) for line in lines(buffer))
    assert set(first) == {"ts", "level", "logger", "message"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert first["level"] == "INFO" and first["logger"] == "triton_mlx.http"
    assert first["message"] == "no request"
    assert second["request_id"] == "r-1"
    assert second["duration_ms"] == 1500 and second["tags"] == ["a"]
    assert second["obj"].startswith("<object object at")


def test_json_extra_cannot_overwrite_fixed_fields(capture):
    buffer = capture(json_logs=True)
    logging.getLogger("triton_mlx.x").info("real", extra={"level": "fake", "ts": "fake"})
    record = json.loads(buffer.getvalue())
    assert record["level"] == "INFO" and record["ts"] != "fake" and record["message"] == "real"


def test_json_traceback_stays_on_one_line(capture):
    buffer = capture(json_logs=True)
    try:
        raise ValueError("multi\nline")
    except ValueError:
        logging.getLogger("triton_mlx.engine").exception("failed\nbadly", extra={"k": "a\nb"})
    [line] = lines(buffer)
    record = json.loads(line)
    assert record["message"] == "failed\nbadly" and record["k"] == "a\nb"
    assert record["exc_info"].startswith("Traceback (most recent call last):")
    assert record["exc_info"].endswith("ValueError: multi\nline")


def test_explicit_request_id_wins_over_contextvar(capture):
    buffer = capture(json_logs=True)
    token = bind_request_id("from-context")
    try:
        logging.getLogger("triton_mlx.engine").info("step", extra={"request_id": "explicit"})
    finally:
        request_id_var.reset(token)
    assert json.loads(buffer.getvalue())["request_id"] == "explicit"


def test_request_id_is_per_context_and_explicit_from_other_threads(capture):
    buffer = capture()
    log = logging.getLogger("triton_mlx.engine")
    token = bind_request_id("main-req")

    def engine_thread() -> None:
        log.info("no context here")  # a new thread does not inherit the binding
        log.info("about a request", extra={"request_id": "main-req"})

    try:
        thread = threading.Thread(target=engine_thread)
        thread.start()
        thread.join()
    finally:
        request_id_var.reset(token)
    no_context, about = (HUMAN_LINE.fullmatch(line)["rest"] for line in lines(buffer))
    assert no_context == "no context here"
    assert about == "[req=main-req] about a request"


def test_configure_twice_keeps_one_handler(capture):
    buffer = capture()
    capture(json_logs=True)
    root = logging.getLogger("triton_mlx")
    assert len(root.handlers) == 1
    assert root.propagate is False
    logging.getLogger("triton_mlx.x").info("once")
    [line] = lines(buffer)
    assert json.loads(line)["message"] == "once"


def test_foreign_handlers_and_other_loggers_untouched(capture):
    root = logging.getLogger("triton_mlx")
    foreign = logging.NullHandler()
    root.addHandler(foreign)
    other_level = logging.getLogger("other").level
    capture()
    capture()
    assert root.handlers.count(foreign) == 1 and len(root.handlers) == 2
    assert logging.getLogger("other").level == other_level


def test_bad_level_changes_nothing(capture):
    capture()
    root = logging.getLogger("triton_mlx")
    handlers = root.handlers[:]
    with pytest.raises(ValueError):
        configure_logging(level="LOUD")
    assert root.handlers == handlers


def test_fields_shown_in_the_message_are_left_out_of_human_lines_only(capture):
    extra = {"method": "GET", "status": 200, "client": "1.2.3.4:5", IN_MESSAGE: ("method",
                                                                                 "status")}
    buffer = capture()
    logging.getLogger(ACCESS_LOGGER_NAME).info("GET / 200", extra=extra)
    [line] = lines(buffer)
    assert line.endswith("GET / 200 client=1.2.3.4:5")
    buffer = capture(json_logs=True)
    logging.getLogger(ACCESS_LOGGER_NAME).info("GET / 200", extra=extra)
    record = json.loads(lines(buffer)[-1])
    assert record["method"] == "GET" and record["status"] == 200 and IN_MESSAGE not in record
