"""Temporal smoothing of a clip's masks (optional, off by default), motion-compensated.

A per-frame model decides each frame alone, so soft edges and noisy regions flicker from frame to
frame. The previous frame's smoothed mask is first carried along the optical flow between the
two frames (OpenCV's DIS flow on a small grey copy), so it lies where this frame has the subject
even when the camera pans or the subject moves; each pixel is then blended with it, but only where
the two agree within `motion` levels: where they do not, the flow failed (an occlusion, a new
object) and this frame's value is taken as it is, so edges are never dragged behind. Causal (no
frame ahead is needed) and applied in frame order. OpenCV is imported where a smoother is made or
used: a server that never smooths (the default) does not load it at start.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

MOTION_LEVELS = 32  # a disagreement larger than this (of 255) is a change, not flicker
FLOW_WIDTH = 320  # the flow is found at this width: enough for the mask's detail, 2 ms a frame
STILL_MARGIN = 1.0  # grey levels by which following the flow must beat staying in place


def check_strength(strength: float) -> float:
    """The smoothing strength, refused with the fix outside 0 (off) to just under 1."""
    if not 0.0 <= strength < 1.0:
        raise ValueError(f"smoothing {strength} must be at least 0 and less than 1 (0.5 is a good start).")
    return strength


class MaskSmoother:
    """`strength` 0-1 is the previous frame's weight where the masks agree (0 is off, 0.5 the default)."""

    def __init__(self, strength: float, motion: int = MOTION_LEVELS):
        self.strength, self.motion = check_strength(strength), motion
        self.previous: np.ndarray | None = None
        self.grey: np.ndarray | None = None
        import cv2

        self.flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)

    def __call__(self, mask: Image.Image, frame: Image.Image | None = None) -> Image.Image:
        """The smoothed mask; `frame` (the mask's RGB frame) lets it follow motion, without it
        pixels are blended in place."""
        alpha = np.asarray(mask, dtype=np.float32)
        grey = _small_grey(frame) if frame is not None else None
        previous, self.grey = self._carried(grey, alpha.shape), grey
        if previous is None or self.strength == 0.0:
            self.previous = alpha
            return mask
        blended = self.strength * previous + (1.0 - self.strength) * alpha
        smoothed = np.where(np.abs(alpha - previous) <= self.motion, blended, alpha)
        self.previous = smoothed
        return Image.fromarray(np.clip(smoothed + 0.5, 0, 255).astype(np.uint8))

    def _carried(self, grey: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
        """The previous smoothed mask moved to this frame along the flow (this frame -> previous)."""
        if self.previous is None or self.previous.shape != shape:
            return None
        if grey is None or self.grey is None or self.grey.shape != grey.shape:
            return self.previous
        import cv2

        flow = self.flow.calc(grey, self.grey, None)
        flow[~_moved(grey, self.grey, flow)] = 0.0
        height, width = shape
        flow = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR) * (width / grey.shape[1])
        x, y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
        return cv2.remap(self.previous, x + flow[..., 0], y + flow[..., 1], cv2.INTER_LINEAR, cv2.BORDER_REPLICATE)


def _moved(grey: np.ndarray, previous: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Where following the flow matches this frame clearly better than staying in place: elsewhere
    (still regions, where camera noise makes the flow wander) the mask is blended in place."""
    import cv2

    height, width = grey.shape
    x, y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    followed = cv2.remap(previous, x + flow[..., 0], y + flow[..., 1], cv2.INTER_LINEAR, cv2.BORDER_REPLICATE)
    current = grey.astype(np.float32)
    error_followed = cv2.blur(np.abs(current - followed), (7, 7))
    error_still = cv2.blur(np.abs(current - previous.astype(np.float32)), (7, 7))
    return error_followed < error_still - STILL_MARGIN


def _small_grey(frame: Image.Image) -> np.ndarray:
    """A small, slightly blurred grey copy: the flow follows shapes, not camera noise."""
    import cv2

    width = min(FLOW_WIDTH, frame.width)
    height = max(1, round(frame.height * width / frame.width))
    small = np.asarray(frame.convert("L").resize((width, height), Image.Resampling.BILINEAR))
    return cv2.GaussianBlur(small, (3, 3), 0)
