"""Coverage-guided fuzzing with Hypothesis: bounded in `make test`, longer on demand.

``NOVAZA_FUZZ_EXAMPLES`` sets examples per target (default 300, about a minute for all
targets here); a long run: ``NOVAZA_FUZZ_EXAMPLES=200000 .venv/bin/python -m pytest tests/fuzz``.
Every failure Hypothesis finds is shrunk to a minimal input: pin it as an ``@example`` on the
target (a regression test) before fixing the code.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "novaza-fuzz",
    max_examples=int(os.environ.get("NOVAZA_FUZZ_EXAMPLES", "300")),
    deadline=None,  # a slow example is not a bug here; speed lives in benchmarks/
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,  # no .hypothesis/ directory in the tree; regressions are @examples
)
FUZZ = settings.get_profile("novaza-fuzz")
