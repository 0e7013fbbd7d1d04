"""``make bench``: triton-mlx against mlx-lm's own server and its raw engine, on one model.

Not a test: it prints tables. Every compared system is up at once (the raw engine as a child
process waiting on stdin, our server, ``mlx_lm.server``), and each round measures them in turn,
seconds apart, while the others idle: single stream (``generate_step``, ``BatchGenerator``
batch 1, ours, ``mlx_lm.server``) and each concurrency level (ours, ``mlx_lm.server``, raw
``BatchGenerator``). Figures are medians over rounds with their min-max range; ratios are per
round. A targets table checks issue 14's goals.

Modules: ``run`` (command line, order of work), ``interleave`` (rounds), ``workload`` (prompts,
built deterministically), ``clients`` (the OpenAI SDK driver, in several processes at high
concurrency), ``servers`` (starting and stopping both servers), ``engine`` (the raw engine),
``results`` (per-round data), ``stats`` (medians, spreads, ratios), ``targets``, ``machine``
(the report's header: card, driver, versions), ``report`` and ``report_structured`` (tables).
Tools beside it: ``decode_paths`` (the engine's decode against mlx-lm's, in process),
``profile_server`` (py-spy over the server at N streams), ``aiperf_run`` (NVIDIA's aiperf
against both servers, on the GPU machine), ``structured``, ``fairness``, ``embeddings``.
"""
