"""``make bench``: triton-mlx against mlx-lm's own server and its raw engine, on one model.

Not a test: it prints tables. One run measures, one thing after another so that nothing else
competes for the machine:

1. the raw engine (``bench.engine``, in a child process, the model loaded the way our server
   loads it): ``generate_step`` and ``BatchGenerator`` decode tok/s at batch 1, and
   ``BatchGenerator`` aggregate decode tok/s at each concurrency;
2. our server (``python -m triton_mlx``): streaming chat completions through the official
   OpenAI SDK at each concurrency, then the prefix-cache case (TTFT cold vs warm);
3. ``mlx_lm.server`` on the same folder, the same requests.

Modules: ``run`` (command line, order of work), ``workload`` (prompts, built
deterministically), ``clients`` (the OpenAI SDK driver and its statistics), ``servers``
(starting and stopping both servers), ``engine`` (the raw engine), ``report`` (tables).
"""
