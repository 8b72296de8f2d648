"""The figures of the SOD and DIS5K tables, all computed by pysodmetrics (this module only feeds it)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

BETA2 = 0.3  # beta^2 of the F-measure, as in every SOD/DIS benchmark
WF_BETA2 = 1.0  # weighted F-measure: beta^2 = 1, as in Margolin et al.'s reference code
S_ALPHA = 0.5  # S-measure: equal weight for object and region structure
HCE_RELAX = 5  # HCE as in the DIS paper: 5 erosion/dilation steps ...
HCE_EPSILON = 2.0  # ... and polygon approximation tolerance 2 px


@dataclass
class Scores:
    """One model on one dataset: each figure is the mean of the per-image figures."""

    images: int
    max_f: float
    mean_f: float
    adaptive_f: float
    weighted_f: float
    mae: float
    s_measure: float
    mean_e: float
    max_e: float
    adaptive_e: float
    hce: float
    precision: list[float]  # mean over images at thresholds 255, 254, ..., 0
    recall: list[float]


class Scorer:
    """pysodmetrics' measures, accumulated over one model's predictions on one dataset."""

    def __init__(self) -> None:
        import py_sod_metrics as sod  # cv2, scipy, scikit-image: loaded only when evaluating

        # FmeasureV2 is pysodmetrics' successor to `Fmeasure` (same figures, no deprecation warning).
        self._f = sod.FmeasureV2(
            {
                "f": sod.FmeasureHandler(with_dynamic=True, with_adaptive=True, beta=BETA2),
                "p": sod.PrecisionHandler(with_dynamic=True, with_adaptive=False),
                "r": sod.RecallHandler(with_dynamic=True, with_adaptive=False),
            }
        )
        self._wf = sod.WeightedFmeasure(beta=WF_BETA2)
        self._mae = sod.MAE()
        self._s = sod.Smeasure(alpha=S_ALPHA)
        self._e = sod.Emeasure()
        self._hce = sod.HumanCorrectionEffortMeasure(relax=HCE_RELAX, epsilon=HCE_EPSILON)
        self.count = 0

    def add(self, prediction: np.ndarray, ground_truth: np.ndarray) -> None:
        """Both uint8 0-255 grayscale of one size: the prediction is min-max stretched, the truth cut at 128."""
        for measure in (self._f, self._wf, self._mae, self._s, self._e, self._hce):
            measure.step(prediction, ground_truth)
        self.count += 1

    def scores(self) -> Scores:
        if not self.count:
            raise ValueError("no prediction to score")
        f = self._f.get_results()
        e = self._e.get_results()["em"]
        return Scores(
            images=self.count,
            max_f=float(f["f"]["dynamic"].max()),
            mean_f=float(f["f"]["dynamic"].mean()),
            adaptive_f=float(f["f"]["adaptive"]),
            weighted_f=float(self._wf.get_results()["wfm"]),
            mae=float(self._mae.get_results()["mae"]),
            s_measure=float(self._s.get_results()["sm"]),
            mean_e=float(e["curve"].mean()),
            max_e=float(e["curve"].max()),
            adaptive_e=float(e["adp"]),
            hce=float(self._hce.get_results()["hce"]),
            precision=[float(v) for v in f["p"]["dynamic"]],
            recall=[float(v) for v in f["r"]["dynamic"]],
        )


def score(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> Scores:
    """Scores for (prediction, ground truth) arrays; the library API behind `rmbg eval`."""
    scorer = Scorer()
    for prediction, ground_truth in pairs:
        scorer.add(prediction, ground_truth)
    return scorer.scores()
