"""Test-suite settings shared by every file.

Hypothesis runs derandomized by default (a fixed seed per test), so a CI run is deterministic like the rest of the
suite; ``HYPOTHESIS_PROFILE=explore python -m pytest ...`` searches with fresh random examples and more of them.
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
