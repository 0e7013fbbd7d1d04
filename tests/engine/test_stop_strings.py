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


def test_before_min_tokens_stop_strings_pass_through_but_a_start_of_one_waits():
    matcher = StopStringMatcher(["STOP"])
    assert matcher.feed("a STOP b ST", may_stop=False) == ("a STOP b ", False)
    assert matcher.feed("OP c", may_stop=True) == ("", True)  # the held "ST" completes it


def test_a_stop_string_completed_before_min_tokens_does_not_end_it_later():
    matcher = StopStringMatcher(["ab", "b"])
    assert matcher.feed("xa", may_stop=False) == ("x", False)  # "a" may begin "ab"
    assert matcher.feed("b", may_stop=False) == ("ab", False)  # "ab" and "b" pass
    assert matcher.feed("cb", may_stop=True) == ("c", True)  # the first one after counts
    held = StopStringMatcher(["abc", "b"])
    assert held.feed("ab", may_stop=False) == ("", False)  # "ab" may begin "abc"; holds "b"
    assert held.feed("x", may_stop=True) == ("abx", False)  # that "b" came too early
