"""Steering vectors: the data type, extraction from concept datasets, storage and exchange."""

from steerguard.vectors.fingerprint import ModelFingerprint
from steerguard.vectors.steering_vector import ExtractionInfo, SteeringVector

__all__ = ["ExtractionInfo", "ModelFingerprint", "SteeringVector"]
