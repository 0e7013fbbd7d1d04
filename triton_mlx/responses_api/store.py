"""The bounded in-memory store of responses: what ``previous_response_id`` continues and
``GET``/``DELETE /v1/responses/{id}`` read.

Stored responses live in this process only (a restart forgets them) and at most
``--responses-store-size`` of them: the oldest goes when a new one would exceed it. Each keeps
its response body and the conversation it ends (input and output as neutral chat messages,
without its ``instructions``, which OpenAI does not carry over to the next response).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from triton_mlx.serving.errors import RequestError


@dataclass(frozen=True)
class StoredResponse:
    body: dict[str, Any]
    conversation: list[dict[str, Any]]
    """Every turn up to and including this response's output, in the neutral chat shape."""


def not_found(response_id: str, param: str | None = None) -> RequestError:
    """OpenAI's 404 for an id that is not (or no longer) stored."""
    what = "Previous response" if param == "previous_response_id" else "Response"
    return RequestError(404, f"{what} with id '{response_id}' not found.", param=param,
                        code="previous_response_not_found" if param else "not_found")


class ResponseStore:
    """The most recent ``capacity`` stored responses, by id (all access on the event loop)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, StoredResponse] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, stored: StoredResponse) -> None:
        if not self.enabled:
            return
        self._items[stored.body["id"]] = stored
        self._items.move_to_end(stored.body["id"])
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def get(self, response_id: str, param: str | None = None) -> StoredResponse:
        """The stored response, or a 404 naming ``param``."""
        stored = self._items.get(response_id)
        if stored is None:
            raise not_found(response_id, param)
        return stored

    def delete(self, response_id: str) -> None:
        if self._items.pop(response_id, None) is None:
            raise not_found(response_id)
