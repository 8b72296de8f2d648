"""Temporal smoothing of a clip's masks (optional, off by default).

A per-frame model decides each frame alone, so soft edges and noisy regions flicker from frame to
frame even where nothing moves. Each pixel's alpha is blended with its smoothed value in the
previous frame, but only where the two are close: where alpha changes by more than `motion`
levels the subject (or its edge) moved, and the new value is taken as it is, so moving edges are
never dragged behind. Causal (no frame ahead is needed) and applied in frame order.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

MOTION_LEVELS = 32  # a change of alpha larger than this (of 255) is motion, not flicker


def check_strength(strength: float) -> float:
    """The smoothing strength, refused with the fix outside 0 (off) to just under 1."""
    if not 0.0 <= strength < 1.0:
        raise ValueError(f"smoothing {strength} must be at least 0 and less than 1 (0.5 is a good start).")
    return strength


class MaskSmoother:
    """`strength` 0-1 is the previous frame's weight in still pixels (0 is off, 0.5 the default)."""

    def __init__(self, strength: float, motion: int = MOTION_LEVELS):
        self.strength, self.motion = check_strength(strength), motion
        self.previous: np.ndarray | None = None

    def __call__(self, mask: Image.Image) -> Image.Image:
        alpha = np.asarray(mask, dtype=np.float32)
        if self.previous is None or self.previous.shape != alpha.shape or self.strength == 0.0:
            self.previous = alpha
            return mask
        blended = self.strength * self.previous + (1.0 - self.strength) * alpha
        smoothed = np.where(np.abs(alpha - self.previous) <= self.motion, blended, alpha)
        self.previous = smoothed
        return Image.fromarray(np.clip(smoothed + 0.5, 0, 255).astype(np.uint8))
