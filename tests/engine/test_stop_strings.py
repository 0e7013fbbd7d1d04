import pytest

from triton_mlx.engine.stop_strings import StopStringMatcher


def run(stops, pieces):
    matcher = StopStringMatcher(stops)
    out = []
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        out.append(text)
        if stopped:
            return "".join(out), True
    return "".join(out) + matcher.flush(), False


def test_stop_string_split_across_pieces_is_found_and_dropped():
    assert run(["STOP"], ["Hello S", "T", "OP and more"]) == ("Hello ", True)


def test_partial_stop_string_is_held_back_until_ruled_out():
    matcher = StopStringMatcher(["\n\nUser:"])
    assert matcher.feed("answer\n") == ("answer", False)
    assert matcher.feed("\nUs") == ("", False)
    assert matcher.feed("ually") == ("\n\nUsually", False)


def test_earliest_of_several_stop_strings_wins():
    assert run(["world", "lo"], ["hello world"]) == ("hel", True)


def test_held_text_is_released_at_the_end():
    assert run(["STOP"], ["almost ST"]) == ("almost ST", False)


def test_no_stop_strings_passes_text_through():
    matcher = StopStringMatcher([])
    assert matcher.feed("abc") == ("abc", False)


@pytest.mark.parametrize("cut", range(1, 12))
def test_any_split_of_the_text_gives_the_same_result(cut):
    text = "one two STOP three"
    assert run(["STOP"], [text[:cut], text[cut:]]) == ("one two ", True)
