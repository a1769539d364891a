"""steerguard: policy-driven, audited activation steering for local language models."""

__version__ = "0.1.0"
