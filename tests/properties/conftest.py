"""Hypothesis profiles for the property tests.

``ci`` (the default) keeps the example counts modest so the folder runs in seconds on a small
machine; ``HYPOTHESIS_PROFILE=long`` runs many more examples, for a local hunt. Deadlines are
off in both: timing on a loaded two-core machine says nothing about correctness.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    database=None,  # nothing written into the work tree; failures print their example
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long",
    max_examples=5000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
