"""Properties of stop strings and incremental detokenization, alone and together.

Text arrives in arbitrary pieces (and, through the detokenizer, as arbitrary byte chunks that
split multi-byte UTF-8 characters). Whatever the split, the emitted text must be exactly the
text before the stop string that ended generation (or all of it when none did): nothing of a
stop string ever leaks, nothing is lost, and no piece holds a broken character.
"""

from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from triton_mlx.engine.detokenizer import IncrementalDetokenizer
from triton_mlx.engine.stop_strings import StopStringMatcher
from triton_mlx.engine.text_output import TextOutput
from triton_mlx.engine.types import GenerationRequest

# A small alphabet makes overlapping and repeated stop strings likely; multi-byte characters
# (2, 3 and 4 bytes in UTF-8) make character splits likely.
ALPHABET = "ab \n" + "é" + "中" + "🚀"
texts = st.text(alphabet=ALPHABET, max_size=30)
stop_lists = st.lists(st.text(alphabet=ALPHABET, min_size=1, max_size=4), max_size=4)


@st.composite
def text_and_stops(draw) -> tuple[str, list[str]]:
    """A text and stop strings, often including pieces of the text so that stops do happen."""
    text = draw(texts)
    stops = draw(stop_lists)
    if text and draw(st.booleans()):
        start = draw(st.integers(0, len(text) - 1))
        end = draw(st.integers(start + 1, min(len(text), start + 4)))
        stops.append(text[start:end])
    return text, stops


def split(sequence, cuts: list[int]):
    """``sequence`` cut at the given positions (empty pieces included)."""
    points = sorted(c % (len(sequence) + 1) for c in cuts)
    bounds = [0, *points, len(sequence)]
    return [sequence[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def reference(visible: list[str], stops: list[str]) -> tuple[str, bool]:
    """The obvious, non-incremental answer: after each step, search the whole text so far;
    the first step at which some stop string is present ends it, before the earliest one."""
    for text in visible:
        found = [i for i in (text.find(s) for s in stops) if i >= 0]
        if found:
            return text[: min(found)], True
    return (visible[-1] if visible else ""), False


def longest_held(text: str, stops: list[str]) -> int:
    """The longest suffix of ``text`` that is a proper prefix of some stop string."""
    return max((n for s in stops for n in range(1, len(s)) if text.endswith(s[:n])), default=0)


cuts = st.lists(st.integers(0, 200), max_size=8)


@given(text_and_stops(), cuts)
def test_matcher_emits_exactly_the_text_before_the_first_stop(case, cut_at):
    text, stops = case
    pieces = split(text, cut_at)
    matcher = StopStringMatcher(stops)
    emitted, seen, visible, stopped = "", "", [], False
    for piece in pieces:
        seen += piece
        visible.append(seen)
        out, stopped = matcher.feed(piece)
        emitted += out
        if stopped:
            break
        # Only a possible start of a stop string is held back, and all of it is.
        assert len(seen) - len(emitted) == longest_held(seen, stops)
        assert not any(s in emitted for s in stops)
    if not stopped:
        emitted += matcher.flush()
    assert (emitted, stopped) == reference(visible or [""], stops)
    assert text.startswith(emitted)
    if stopped:
        assert any(text[len(emitted):].startswith(s) for s in stops)
    else:
        assert emitted == text and not any(s in text for s in stops)


# ----- the detokenizer ---------------------------------------------------------------------------


class ByteDecoder:
    """A byte-level vocabulary: token i is the i-th byte chunk, decoded as tokenizers do."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return b"".join(self.chunks[i] for i in ids).decode("utf-8", "replace")


@st.composite
def byte_chunks(draw, text: str) -> list[bytes]:
    return split(text.encode("utf-8"), draw(cuts))


@given(st.text(max_size=20).flatmap(lambda t: st.tuples(st.just(t), byte_chunks(t))))
def test_detokenizer_reassembles_any_byte_split_without_broken_characters(case):
    text, chunks = case
    detokenizer = IncrementalDetokenizer(ByteDecoder(chunks))
    pieces = [detokenizer.add(i) for i in range(len(chunks))] + [detokenizer.flush()]
    assert "".join(pieces) == text
    if "\ufffd" not in text:
        assert not any("\ufffd" in piece for piece in pieces)


def byte_level_tokenizer() -> Tokenizer:
    """A real byte-level BPE with no merges: every UTF-8 byte is its own token."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tokenizer = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(sorted(alphabet))},
                                     merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


BYTE_LEVEL = byte_level_tokenizer()


@given(st.text(max_size=20))
def test_detokenizer_with_a_real_byte_level_tokenizer(text):
    ids = BYTE_LEVEL.encode(text).ids
    assume(BYTE_LEVEL.decode(ids) == text)  # the pre-tokenizer keeps every character
    detokenizer = IncrementalDetokenizer(BYTE_LEVEL)
    pieces = [detokenizer.add(i) for i in ids] + [detokenizer.flush()]
    assert "".join(pieces) == text
    if "\ufffd" not in text:
        assert not any("\ufffd" in piece for piece in pieces)


# ----- both, as a sequence of the engine runs them ---------------------------------------------


def visible_texts(chunks: list[bytes]) -> list[str]:
    """What the stop matcher has seen after each token. The detokenizer's contract: text is
    released once the bytes so far end on a character boundary, all of it at once; a token that
    ends inside a character releases nothing, not even the complete characters before it (as
    vLLM's detokenizer does), so a stop string completed by such a token is seen one token
    later."""
    out, data, visible = [], b"", ""
    for chunk in chunks:
        data += chunk
        try:
            visible = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        out.append(visible)
    return out


@given(text_and_stops().flatmap(lambda c: st.tuples(st.just(c), byte_chunks(c[0]))),
       st.sampled_from(["length", "stop"]))
def test_sequence_outputs_never_leak_a_stop_string_or_break_a_character(case, end):
    (text, stops), chunks = case
    assume(chunks and "\ufffd" not in text)
    eos = len(chunks)  # an end-of-sequence token: ends the sequence, adds no text
    decoder = ByteDecoder([*chunks, b""])
    request = GenerationRequest(prompt_tokens=[0], max_tokens=len(chunks), stop=tuple(stops))
    sequence = TextOutput(request, IncrementalDetokenizer(decoder), StopStringMatcher(stops))
    steps = [(i, None) for i in range(len(chunks))]
    if end == "length":
        steps[-1] = (len(chunks) - 1, "length")
    else:
        steps.append((eos, "stop"))
    outputs, stopped = [], False
    for count, (token, finish) in enumerate(steps, start=1):
        output, stopped = sequence.advance(token, None, finish)
        if output is not None:
            assert output.completion_tokens == count
            assert "\ufffd" not in output.text
            outputs.append(output)
            if output.finish_reason is not None:
                break
    assert outputs and outputs[-1].finish_reason is not None
    assert all(o.finish_reason is None for o in outputs[:-1])
    emitted = "".join(o.text for o in outputs)
    expected, by_stop = reference(visible_texts(chunks), stops)
    assert emitted == expected
    assert stopped == by_stop
    assert outputs[-1].finish_reason == ("stop" if by_stop else end)
