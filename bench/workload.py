"""What the bench sends: the same requests to both servers and the same prompts to the engine.

Everything is built deterministically (a fixed seed, no clock), so both servers in one run, and
two runs on two machines, see identical requests. Every sweep request has a prompt of its own:
a server's prefix cache can reuse the chat template's default system prompt (both servers
cache prefixes), never a whole earlier prompt, so the sweep measures prefill honestly.
Nothing here imports MLX: ``bench.engine`` must import ``triton_mlx`` before ``mlx.core``.
"""

from __future__ import annotations

import random
from typing import Any

Messages = list[dict[str, str]]

TOPICS = (
    "a lighthouse keeper who finds a message in a bottle",
    "a clockmaker whose clocks start running backwards",
    "two rival bakers in a mountain village",
    "a cartographer mapping an island that keeps moving",
    "a retired astronaut who opens a bookshop",
    "a fox that learns to read train timetables",
    "a violinist stranded at a snowed-in railway station",
    "the last beekeeper of a drowned city",
    "a child who builds a radio from scrap and hears tomorrow's news",
    "a ship's cook who keeps a secret recipe from the captain",
    "a gardener who grows a tree made of glass",
    "an archivist who discovers a missing chapter of history",
    "a postwoman delivering letters across a frozen lake",
    "a robot that wants to become a painter",
    "a fisherman who catches a talking fish",
    "a detective who can only work at night",
)

# Words for the long system prompt of the prefix-cache case: varied, so it tokenizes like prose
# rather than one repeated sentence.
_ROLES = ("archivist", "harbour master", "night porter", "chief curator", "volunteer guide",
          "ticket clerk", "restorer", "security officer", "education officer", "librarian",
          "boat keeper", "gift shop manager", "photographer", "registrar")
_ACTIONS = ("signs the visitor ledger", "checks every lantern", "locks the brass cabinet",
            "counts the ship models", "waters the herb garden", "winds the tower clock",
            "inspects the rope store", "reads the tide tables aloud", "dusts the figureheads",
            "tests the fog bell", "updates the loan register", "sorts the donated letters",
            "airs the sail loft", "logs the humidity readings")
_PLACES = ("north archive", "east pier gallery", "map room", "lower boathouse",
           "lighthouse lantern room", "reading room", "cold store", "captain's parlour",
           "west stairwell", "courtyard", "sail loft", "model workshop", "ticket hall")
_TIMES = ("before the doors open", "every second Tuesday", "after the last tour",
          "on the first day of each month", "whenever the barometer falls", "at noon sharp",
          "during spring tides", "before the winter closure", "on public holidays",
          "at the end of every shift", "when a school group visits", "each Sunday evening")
_REASONS = ("because the insurer requires it", "as agreed with the town council in 1987",
            "so that nothing goes missing", "since the old wiring is fragile",
            "to keep the salt air away from the paper", "because visitors have asked for it",
            "as the founder's will instructs", "so the night staff can find things",
            "because the fire inspector said so", "to protect the oldest charts")

QUESTIONS = (
    "According to the handbook, who winds the tower clock, and when?",
    "What does the handbook say about the fog bell?",
)


def sweep_messages(concurrency: int, attempt: int = 0) -> list[Messages]:
    """One chat per stream for the case with ``concurrency`` streams, unique across cases
    (and across attempts: a retried case must not find its prompts in a prefix cache)."""
    tag = f"{concurrency}.{attempt}"
    return [
        [{"role": "user", "content": f"(request {tag}.{i}) Write a long story about "
                                     f"{TOPICS[i % len(TOPICS)]}."}]
        for i in range(concurrency)
    ]


def single_messages(repeat: int) -> Messages:
    """The single-stream decode comparison's chat; one per repeat, all of the same length."""
    return [{"role": "user", "content": f"(single {repeat}) Write a long story about {TOPICS[0]}."}]


def warmup_messages(count: int) -> list[Messages]:
    """Short chats that warm a server up without touching any measured prompt."""
    return [[{"role": "user", "content": f"(warm-up {i}) Say hello."}] for i in range(count)]


def system_prompt(tokenizer: Any, target_tokens: int = 1000, seed: int = 0) -> str:
    """A staff handbook of about ``target_tokens`` tokens (at least that many), from ``seed``."""
    rng = random.Random(seed)
    text = ("You are the assistant of the Saltmarsh Maritime Museum. Answer staff questions "
            "using only the handbook below, briefly.\n\nStaff handbook\n")
    rule = 0
    while len(tokenizer.encode(text)) < target_tokens:
        for _ in range(8):
            rule += 1
            text += (f"{rule}. The {rng.choice(_ROLES)} {rng.choice(_ACTIONS)} in the "
                     f"{rng.choice(_PLACES)} {rng.choice(_TIMES)}, {rng.choice(_REASONS)}.\n")
    return text


def prefix_messages(system: str, question: str) -> Messages:
    return [{"role": "system", "content": system}, {"role": "user", "content": question}]


def eos_ban(tokenizer: Any) -> dict[str, int]:
    """``logit_bias`` banning every end-of-sequence and other special token: each request runs
    to max_tokens, and produces visible text even from random weights (special tokens are
    left out of the text, so a random model emitting them would stream nothing)."""
    hf_tokenizer = getattr(tokenizer, "_tokenizer", tokenizer)
    special = set(tokenizer.eos_token_ids)
    special.update(getattr(hf_tokenizer, "all_special_ids", ()))
    added = getattr(hf_tokenizer, "added_tokens_decoder", {})
    special.update(i for i, token in added.items() if getattr(token, "special", False))
    return {str(t): -100 for t in sorted(special)}
