"""Training utilities."""

from .modality_dropout import GradualModalityDropout, attenuation_at

__all__ = ["GradualModalityDropout", "attenuation_at"]
