"""OpenAI's Responses API (``/v1/responses``) on the OpenAI port: a front-end of its own.

``app.py`` has the routes, ``request.py`` validates a request and translates it into the
serving layer's neutral chat (``input_items.py`` reads the input items and tools),
``output.py`` turns the chat deltas into output items and stream events, ``store.py`` keeps
recent responses for ``previous_response_id`` and ``errors.py`` shapes errors as OpenAI does.

Where OpenAI's API leaves it to us, this server decides:

- ``store`` defaults to true, as OpenAI's: the response is kept in memory (the last
  ``--responses-store-size``, default 1000; 0 keeps none and responses say ``store: false``),
  with its conversation, so ``previous_response_id`` continues it; ``instructions`` are not
  carried over, as OpenAI documents. An unknown or evicted id is a 404 in OpenAI's shape. A
  stream is stored once it ends; one its client left is not.
- ``max_output_tokens`` reached: ``status: "incomplete"``, ``incomplete_details.reason:
  "max_output_tokens"``, and a stream ends with ``response.incomplete`` (OpenAI's event).
- ``reasoning.effort`` is the chat template's ``reasoning_effort``, as the chat route's (a 400
  when the template does not read it). Reasoning comes whole as ``reasoning_text`` content of
  a ``reasoning`` item (``response.reasoning_text.delta`` events); summaries are not generated,
  so ``reasoning.summary`` is a 400. ``include: ["reasoning.encrypted_content"]`` is accepted:
  the reasoning is in clear and comes back as the client sends the item; other values are 400.
- ``truncation`` only ``"disabled"``, ``background`` only false, ``text.verbosity`` only
  ``"medium"``; built-in tools, ``conversation``, ``prompt`` templates: 400 naming them.
- ``prompt_cache_key``, ``user``, ``safety_identifier`` and ``metadata`` are accepted and
  echoed (the prefix cache finds shared prompts without a key).
"""
