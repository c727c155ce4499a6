import os

import torch
from hypothesis import HealthCheck, settings

# CI and local runs are deterministic (derandomize) with >= 100 examples per property;
# HYPOTHESIS_PROFILE=explore searches fresh random examples.
settings.register_profile(
    "default", max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("explore", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

torch.set_num_threads(min(torch.get_num_threads(), 2))
