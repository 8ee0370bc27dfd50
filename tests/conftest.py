"""Shared test settings: hypothesis without deadlines (CI machines are slow and shared)."""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "e3core",
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("e3core")
