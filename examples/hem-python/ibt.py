"""Sedna's IBT hard-example mining, written in Python as a WebAssembly component.

A frame is hard when the share of its boxes whose score is at most `threshold_box` is
at least `1 - threshold_img` (Sedna's IBTFilter). No boxes, or a score outside [0, 1]:
not hard. Build with build.sh; the host calls the class `Mining` below.
"""

import struct
from typing import List

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log
from wit_world.imports.types import Param, Prediction, Prediction_Detections

DEFAULTS = {"threshold_img": 0.5, "threshold_box": 0.5}

thresholds = dict(DEFAULTS)
warned_about_scores = False


def f32(value: float) -> float:
    """`value` rounded to the nearest 32-bit float, as the scores come."""
    return struct.unpack("f", struct.pack("f", value))[0]


def unit(key: str, value: str) -> float:
    """A number in [0, 1], or an error naming the key, the value and the range."""
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not 0.0 <= number <= 1.0:
        raise Err(f"parameter `{key}` is {value!r}: expected a number in [0, 1]")
    return number


def is_hard(prediction: Prediction) -> bool:
    global warned_about_scores
    if not isinstance(prediction, Prediction_Detections):
        return False
    # Boxes come as Sedna's rows [x1, y1, x2, y2, score, label] end to end; IBT needs
    # only the scores.
    rows = prediction.value.rows
    scores = rows[4 : len(rows) // 6 * 6 : 6]
    if not scores:
        return False
    if any(not 0.0 <= s <= 1.0 for s in scores):
        if not warned_about_scores:
            warned_about_scores = True
            log.log(log.Level.WARN, "a box score is outside [0, 1]: such frames are not hard examples")
        return False
    # At the scores' own precision (f32): a score written as 0.3 equals a threshold
    # written as 0.3.
    box = f32(thresholds["threshold_box"])
    uncertain = sum(1 for s in scores if f32(s) <= box)
    return uncertain / len(scores) >= 1.0 - thresholds["threshold_img"]


class Mining(exports.Mining):
    def init(self, params: List[Param]) -> None:
        chosen = dict(DEFAULTS)
        for p in params:
            if p.key in chosen:
                chosen[p.key] = unit(p.key, p.value)
        thresholds.update(chosen)

    def is_hard_example(self, prediction: Prediction) -> bool:
        return is_hard(prediction)

    def is_hard_example_batch(self, predictions: List[Prediction]) -> List[bool]:
        return [is_hard(p) for p in predictions]
