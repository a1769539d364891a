"""Steering vectors made from concept datasets: extraction, the per-model library that builds
and keeps them, and GGUF exchange. The vector type itself lives in steerguard.directions."""
