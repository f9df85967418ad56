"""KITTI-style AP (R40) against hand-computed precision/recall cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from torchsparse_lite.detection.metrics import ap_from_flags, average_precision, evaluate, match_detections


def test_ap_perfect_list():
    assert ap_from_flags(np.array([0.9, 0.8, 0.7]), np.array([True, True, True]), 3) == pytest.approx(1.0)


def test_ap_shuffled_list_hand_computed():
    # Ranked flags T F T F T T, 4 ground truths: precision 1, .5, .67, .5, .6, .67 at
    # recall .25, .25, .5, .5, .75, 1. Interpolated precision is 1 for r <= .25
    # (10 of the 40 recall points) and 2/3 for the other 30: AP = (10 + 20) / 40.
    scores = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5])
    flags = np.array([True, False, True, False, True, True])
    perm = np.random.default_rng(0).permutation(6)  # input order must not matter
    assert ap_from_flags(scores[perm], flags[perm], 4) == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("flags", "n_gt", "expected"),
    [
        ([True, True], 4, 0.5),  # half the objects found at precision 1
        ([False, False, True], 1, 1 / 3),  # the only hit ranked third
        ([False, False], 2, 0.0),
        ([], 3, 0.0),
    ],
)
def test_ap_hand_cases(flags, n_gt, expected):
    scores = np.linspace(1.0, 0.1, len(flags))
    assert ap_from_flags(scores, np.array(flags, dtype=bool), n_gt) == pytest.approx(expected)


def test_ap_r11_includes_zero_recall():
    # AP_R11 of a perfect half-recall list: points 0, .1, ..., .5 -> 6 of 11.
    assert ap_from_flags(np.array([1.0, 0.9]), np.array([True, True]), 4, recall_points=11) == pytest.approx(6 / 11)


def test_ap_no_ground_truth_is_nan():
    assert math.isnan(ap_from_flags(np.array([0.5]), np.array([False]), 0))


def _gt():
    boxes = torch.tensor(
        [
            [5.0, 0.0, -1.0, 4.0, 1.8, 1.5, 0.0],
            [10.0, 5.0, -1.0, 4.0, 1.8, 1.5, 1.0],
            [2.0, 3.0, -1.0, 0.7, 0.7, 1.7, 0.0],
        ]
    )
    return boxes, torch.tensor([0, 0, 1])


def _dets(boxes, labels, scores):
    return torch.cat([boxes, torch.tensor(scores)[:, None], labels[:, None].float()], dim=1)


def test_average_precision_perfect_and_duplicates():
    boxes, labels = _gt()
    dets = _dets(boxes, labels, [0.9, 0.8, 0.7])
    assert average_precision([dets], [(boxes, labels)], 0, 0.7)["ap"] == pytest.approx(1.0)
    assert average_precision([dets], [(boxes, labels)], 1, 0.5, "3d")["ap"] == pytest.approx(1.0)
    # A duplicate of the first car with a higher score takes the match; the original becomes a false positive.
    dup = _dets(torch.cat([boxes[:1], boxes]), torch.cat([labels[:1], labels]), [0.95, 0.9, 0.8, 0.7])
    flags = match_detections(dup[dup[:, 8] == 0], boxes[:2], 0.7)
    assert flags.tolist() == [True, False, True]
    # ranked T F T for 2 cars: precision 1 up to recall .5, 2/3 above -> (20 + 20 * 2/3) / 40
    assert average_precision([dup], [(boxes, labels)], 0, 0.7)["ap"] == pytest.approx((20 + 40 / 3) / 40)


def test_average_precision_threshold_and_scenes():
    boxes, labels = _gt()
    shifted = boxes.clone()
    shifted[0, 0] += 1.0  # car 0 shifted 1 m along its length: BEV IoU 3/5 = 0.6
    dets = _dets(shifted, labels, [0.9, 0.8, 0.7])
    # ranked F T for 2 cars: precision 1/2 up to recall 1/2 -> 20 * 0.5 / 40
    assert average_precision([dets], [(boxes, labels)], 0, 0.7)["ap"] == pytest.approx(0.25)
    assert average_precision([dets], [(boxes, labels)], 0, 0.5)["ap"] == pytest.approx(1.0)
    # detections never match ground truth of another scene
    empty = torch.zeros(0, 9)
    r = average_precision([dets, empty], [(boxes[:0], labels[:0]), (boxes, labels)], 0, 0.5)
    assert r["ap"] == 0.0 and r["n_gt"] == 2 and r["n_det"] == 2


def test_evaluate_keys():
    boxes, labels = _gt()
    res = evaluate([_dets(boxes, labels, [0.9, 0.8, 0.7])], [(boxes, labels)], ("car", "pedestrian", "cyclist"))
    assert set(res["car"]) == {"bev@0.7", "3d@0.7", "bev@0.5", "3d@0.5", "n_gt"}
    assert res["car"]["bev@0.7"] == pytest.approx(1.0) and res["pedestrian"]["3d@0.5"] == pytest.approx(1.0)
    assert math.isnan(res["cyclist"]["bev@0.5"])
