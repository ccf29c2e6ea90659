"""Properties of the PyTorch SSD layers and box utilities that hold without Caffe.

(The blob-for-blob comparison with the project's Caffe is tests/test_pytorch_ssd_caffe.py.)
"""

from __future__ import annotations

import numpy as np
import pytest
from ssd_cases import grid_priors, layer_param, make_case, prior_blob, shapes, softmax

from model_libs.errors import ModelLibsError

try:
    import torch

    from model_libs.pytorch import bbox
    from model_libs.pytorch.ssd_layers import DetectionEvaluate, DetectionOutput, MultiBoxLoss
except ImportError:  # no torch: every test skips (a failure under CI, tests/conftest.py)
    torch = None

pytestmark = pytest.mark.torch


@pytest.fixture(autouse=True)
def _need_torch():
    if torch is None:
        pytest.skip("could not import 'torch'")


F = np.float32


def t(x) -> torch.Tensor:
    return torch.tensor(np.asarray(x, dtype=F))


# ----------------------------------------------------------------------------- matching


def literal_match(pred, gt, match_type, thr):
    """MatchBBox written as SSD Caffe's loops (overlap maps, scan orders, strict >)."""
    P, G = len(pred), len(gt)
    ov = bbox.jaccard(t(pred)[:, None], t(gt)[None]).numpy()
    index = [-1] * P
    overlap = [F(0)] * P
    over = {}
    for i in range(P):
        for j in range(G):
            if ov[i, j] > 1e-6:
                overlap[i] = max(overlap[i], ov[i, j])
                over.setdefault(i, {})[j] = ov[i, j]
    pool = list(range(G))
    while pool:
        best, bi, bj = -1, -1, -1
        for i in sorted(over):
            if index[i] != -1:
                continue
            for j in pool:
                if j in over[i] and over[i][j] > best:
                    best, bi, bj = over[i][j], i, j
        if bi == -1:
            break
        index[bi], overlap[bi] = bj, best
        pool.remove(bj)
    if match_type == bbox.PER_PREDICTION:
        for i in sorted(over):
            if index[i] != -1:
                continue
            best, bj = -1, -1
            for j in range(G):
                if j in over[i] and over[i][j] >= F(thr) and over[i][j] > best:
                    best, bj = over[i][j], j
            if bj != -1:
                index[i], overlap[i] = bj, best
    return np.array(index), np.array(overlap, dtype=F)


@pytest.mark.parametrize("match_type", [0, 1], ids=["bipartite", "per_prediction"])  # MatchType
@pytest.mark.parametrize("seed", range(6))
def test_match_equals_caffe_loops_with_ties(seed, match_type):
    # Coordinates on a 1/8 grid: many equal overlaps, so the tie rules decide.
    rng = np.random.default_rng(seed)
    B, P, G = 3, 40, 6
    pred = np.sort(rng.integers(0, 9, (B, P, 2, 2)), axis=2).transpose(0, 1, 3, 2).reshape(B, P, 4) / 8
    pred[..., 2:] += 1 / 8  # no empty boxes
    gt = pred[:, rng.integers(0, P, G)].copy()
    gt[:, -1] = [0.9, 0.9, 0.95, 0.95]  # overlaps few priors
    valid = np.ones((B, G), bool)
    valid[1, 3:] = False  # image 1 has 3 boxes
    idx, ov = bbox.match(t(pred), t(gt), torch.tensor(valid), match_type, 0.5)
    for b in range(B):
        n = int(valid[b].sum())
        ref_i, ref_o = literal_match(pred[b].astype(F), gt[b, :n].astype(F), match_type, 0.5)
        np.testing.assert_array_equal(idx[b].numpy(), ref_i)
        np.testing.assert_array_equal(ov[b].numpy(), ref_o)
    assert int((idx > -1).sum()) >= 5


def test_prior_exactly_on_a_ground_truth_box_is_matched_to_it():
    priors = grid_priors()
    gt = np.stack([priors[37], priors[200]])[None]
    idx, ov = bbox.match(t(priors)[None], t(gt), torch.ones(1, 2, dtype=torch.bool), bbox.BIPARTITE, 0.5)
    assert idx[0, 37] == 0 and idx[0, 200] == 1
    assert ov[0, 37] == 1.0 and ov[0, 200] == 1.0
    assert int((idx > -1).sum()) == 2  # bipartite: one prior per box


def test_per_prediction_threshold_is_inclusive():
    # prior 0 equals the box (bipartite match); prior 1 overlaps it exactly 0.5.
    priors = t([[0.0, 0.0, 0.5, 1.0], [0.0, 0.0, 1.0, 1.0]])[None]
    gt = t([[[0.0, 0.0, 0.5, 1.0]]])
    valid = torch.ones(1, 1, dtype=torch.bool)
    idx, ov = bbox.match(priors, gt, valid, bbox.PER_PREDICTION, 0.5)
    assert idx.tolist() == [[0, 0]] and ov[0, 1] == 0.5
    idx, _ = bbox.match(priors, gt, valid, bbox.PER_PREDICTION, float(np.nextafter(F(0.5), F(1))))
    assert idx.tolist() == [[0, -1]]


def test_bipartite_ties_go_to_the_lowest_prior():
    # two priors symmetric about the box: equal overlaps
    priors = t([[0.0, 0.0, 0.5, 0.5], [0.25, 0.0, 0.75, 0.5]])[None]
    gt = t([[[0.125, 0.0, 0.625, 0.5]]])
    ov = bbox.jaccard(priors[0], gt[0])
    assert ov[0] == ov[1]
    idx, _ = bbox.match(priors, gt, torch.ones(1, 1, dtype=torch.bool), bbox.BIPARTITE, 0.5)
    assert idx.tolist() == [[0, -1]]


# ----------------------------------------------------------------------------- encode / decode


@pytest.mark.parametrize("code", [1, 2, 3], ids=["corner", "center_size", "corner_size"])  # CodeType
@pytest.mark.parametrize("in_target", [False, True])
def test_encode_decode_round_trip(code, in_target):
    rng = np.random.default_rng(code)
    priors = t(grid_priors())
    var = t(np.tile([0.1, 0.1, 0.2, 0.2], (len(priors), 1)))
    c = rng.uniform(0.1, 0.9, (len(priors), 2))
    wh = rng.uniform(0.02, 0.8, (len(priors), 2))
    boxes = t(np.concatenate([c - wh / 2, c + wh / 2], 1))
    enc = bbox.encode(priors, var, boxes, code, in_target)
    dec = bbox.decode(priors, var, enc, code, in_target)
    np.testing.assert_allclose(dec.numpy(), boxes.numpy(), atol=2e-6)
    # and it is not the identity: a different prior gives a different code
    assert not torch.allclose(enc, bbox.encode(priors.flip(0), var, boxes, code, in_target))


def test_center_size_code_values():
    prior = t([0.2, 0.2, 0.6, 0.4])  # w .4 h .2, centre (.4, .3)
    box = t([0.3, 0.25, 0.7, 0.45])  # w .4 h .2, centre (.5, .35)
    var = t([0.1, 0.1, 0.2, 0.2])
    enc = bbox.encode(prior, var, box, bbox.CENTER_SIZE, False)
    np.testing.assert_allclose(enc.numpy(), [0.1 / 0.4 / 0.1, 0.05 / 0.2 / 0.1, 0, 0], atol=1e-5)


# ----------------------------------------------------------------------------- MultiBoxLoss

LOSS = """layer {{ name: "l" type: "MultiBoxLoss" bottom: "a" bottom: "b" bottom: "c" bottom: "d" top: "loss"
  multibox_loss_param {{ num_classes: {C} background_label_id: 0 overlap_threshold: 0.5
    use_difficult_gt: {difficult} neg_pos_ratio: 3.0 neg_overlap: 0.5 code_type: CENTER_SIZE {extra} }}
  loss_param {{ normalization: VALID }} }}"""


def loss_layer(case, difficult="true", extra=""):
    text = LOSS.format(C=case.num_classes, difficult=difficult, extra=extra)
    return MultiBoxLoss(layer_param(text), shapes(case.loc, case.conf, case.prior, case.label), "TRAIN")


def test_negatives_are_three_per_positive_and_none_without_ground_truth():
    case = make_case(4, num=4, no_gt=(1, 2))
    layer = loss_layer(case)
    conf = torch.tensor(case.conf, requires_grad=True)
    (loss,) = layer(torch.tensor(case.loc), conf, torch.tensor(case.prior), torch.tensor(case.label))
    loss.backward()
    touched = (conf.grad.reshape(4, -1, 5) != 0).any(-1).sum(1)  # priors with a conf gradient
    assert touched[1] == 0 and touched[2] == 0
    assert int(touched.sum()) == 4 * layer.stats["num_matches"]
    assert layer.stats["num_negatives"] == 3 * layer.stats["num_matches"]


def test_hard_negatives_are_the_highest_background_losses():
    case = make_case(6, num=1, no_gt=())
    layer = loss_layer(case)
    conf = torch.tensor(case.conf, requires_grad=True)
    (loss,) = layer(torch.tensor(case.loc), conf, torch.tensor(case.prior), torch.tensor(case.label))
    loss.backward()
    c = case.conf.reshape(-1, 5).astype(np.float64)
    bg_loss = -(c[:, 0] - np.log(np.exp(c).sum(1)))
    grad = conf.grad.reshape(-1, 5).numpy()
    got = np.flatnonzero((grad != 0).any(1))
    pri = t(case.prior[0, 0].reshape(-1, 4))[None]
    gt = t(case.label[0, 0, :, 3:7])[None]
    idx, ov = bbox.match(pri, gt, torch.ones(gt.shape[:2], dtype=torch.bool), bbox.PER_PREDICTION, 0.5)
    idx, ov = idx[0].numpy(), ov[0].numpy()
    negatives = np.setdiff1d(got, np.flatnonzero(idx > -1))
    eligible = np.flatnonzero((idx == -1) & (ov < 0.5))
    # every mined negative outranks every eligible prior left out
    left = np.setdiff1d(eligible, negatives)
    assert len(negatives) == 3 * layer.stats["num_matches"]
    assert bg_loss[negatives].min() > bg_loss[left].max()


def test_use_difficult_gt_false_ignores_difficult_boxes():
    case = make_case(8, num=3, no_gt=())
    label = case.label.copy()
    label[0, 0, :, 7] = 1  # everything difficult
    args = (torch.tensor(case.loc), torch.tensor(case.conf), torch.tensor(case.prior), torch.tensor(label))
    layer = loss_layer(case, difficult="false")
    (loss,) = layer(*args)
    assert layer.stats == {"num_matches": 0, "num_negatives": 0} and float(loss) == 0
    layer = loss_layer(case, difficult="true")
    layer(*args)
    assert layer.stats["num_matches"] > 0


def test_background_label_in_ground_truth_is_an_error():
    case = make_case(1, num=2)
    label = case.label.copy()
    label[0, 0, 1, 1] = 0
    with pytest.raises(ModelLibsError, match="background label"):
        loss_layer(case)(
            torch.tensor(case.loc), torch.tensor(case.conf), torch.tensor(case.prior), torch.tensor(label)
        )


@pytest.mark.parametrize(
    "extra,msg",
    [
        ("conf_loss_type: LOGISTIC", "SOFTMAX"),
        ("mining_type: HARD_EXAMPLE", "HARD_EXAMPLE"),
        ("share_location: false", "share_location"),
        ("nms_param { nms_threshold: 0.5 }", "NMS"),
    ],
)
def test_unsupported_options_are_refused(extra, msg):
    with pytest.raises(ModelLibsError, match=msg):
        loss_layer(make_case(0), extra=extra)


# ----------------------------------------------------------------------------- DetectionOutput

DETOUT = """layer {{ name: "d" type: "DetectionOutput" bottom: "a" bottom: "b" bottom: "c" top: "out"
  detection_output_param {{ num_classes: {C} background_label_id: 0 code_type: CENTER_SIZE
    nms_param {{ nms_threshold: {nms} {top_k} }} keep_top_k: {keep} confidence_threshold: {thr} }} }}"""


def detect(C, loc, conf, prior, nms=0.45, top_k="top_k: 400", keep=200, thr=0.01):
    layer = DetectionOutput(
        layer_param(DETOUT.format(C=C, nms=nms, top_k=top_k, keep=keep, thr=thr)),
        shapes(loc, conf, prior),
        "TEST",
    )
    return layer(t(loc), t(conf), t(prior))[0].numpy().reshape(-1, 7)


def test_nms_suppresses_overlaps_above_the_threshold():
    case = make_case(3, num=2, num_classes=4)
    rows = detect(4, case.loc * 0.3, softmax(case.conf, 4), case.prior, nms=0.3, keep=-1)
    assert len(rows) > 20
    for img in (0, 1):
        for c in (1, 2, 3):
            r = rows[(rows[:, 0] == img) & (rows[:, 1] == c)]
            assert np.all(np.diff(r[:, 2]) <= 0)  # best first
            ov = bbox.jaccard(t(r[:, None, 3:]), t(r[None, :, 3:])).numpy()
            np.fill_diagonal(ov, 0)
            assert ov.max() <= 0.3
    # without NMS (threshold 1) many more boxes stay, with overlaps above 0.3
    assert len(detect(4, case.loc * 0.3, softmax(case.conf, 4), case.prior, nms=1.0, keep=-1)) > 2 * len(rows)


def test_nms_keeps_an_overlap_equal_to_the_threshold():
    # box 1 overlaps box 0 exactly 0.5; box 2 slightly more
    boxes = np.array([[0, 0, 0.5, 1], [0, 0, 1, 1], [0, 0, 0.5, 0.9]], dtype=F)
    prior = prior_blob(boxes)
    conf = np.array([[0.1, 0.9, 0.2, 0.8, 0.3, 0.7]], dtype=F)  # 2 classes, scores .9 .8 .7
    loc = np.zeros((1, 12), dtype=F)
    rows = detect(2, loc, conf, prior, nms=0.5, keep=-1)
    assert rows[:, 2].tolist() == pytest.approx([0.9, 0.8])


def test_keep_top_k_caps_rows_per_image_keeping_the_best():
    case = make_case(5, num=3, num_classes=6)
    conf = softmax(case.conf, 6)
    full = detect(6, case.loc * 0.3, conf, case.prior, keep=-1, thr=0.05)
    capped = detect(6, case.loc * 0.3, conf, case.prior, keep=15, thr=0.05)
    for img in range(3):
        f, c = full[full[:, 0] == img], capped[capped[:, 0] == img]
        assert len(f) > 15 and len(c) == 15
        best = np.sort(f[:, 2])[::-1][:15]
        np.testing.assert_array_equal(np.sort(c[:, 2])[::-1], best)
        assert np.all(np.diff(c[:, 1]) >= 0)  # ordered by label


def test_top_k_limits_candidates_per_class():
    case = make_case(5, num=1, num_classes=3)
    conf = softmax(case.conf, 3)
    rows = detect(3, case.loc * 0.3, conf, case.prior, nms=1.0, top_k="top_k: 7", keep=-1, thr=0.0)
    assert [int((rows[:, 1] == c).sum()) for c in (1, 2)] == [7, 7]


def test_nothing_detected_gives_one_placeholder_row_per_image():
    case = make_case(5, num=3, num_classes=3)
    rows = detect(3, case.loc, softmax(case.conf, 3), case.prior, thr=1.0)
    assert rows.tolist() == [[i, -1, -1, -1, -1, -1, -1] for i in range(3)]


# ----------------------------------------------------------------------------- DetectionEvaluate


def test_detection_evaluate_pixel_counter_walks_the_name_size_file(tmp_path):
    sizes = tmp_path / "ns.txt"
    sizes.write_text("a 100 200\nb 300 300\nc 50 80\n")
    text = f"""layer {{ name: "e" type: "DetectionEvaluate" bottom: "a" bottom: "b" top: "e"
      detection_evaluate_param {{ num_classes: 3 background_label_id: 0 overlap_threshold: 0.5
        name_size_file: "{sizes}" }} }}"""
    gt = t([[[[0, 1, 0, 0.1, 0.1, 0.5, 0.5, 0], [1, 1, 0, 0.1, 0.1, 0.5, 0.5, 0]]]])
    det = t([[[[0, 1, 0.9, 0.1, 0.1, 0.5, 0.5], [1, 1, 0.8, 0.1, 0.1, 0.5, 0.5], [-1, 2, 0.5, 0, 0, 1, 1]]]])
    layer = DetectionEvaluate(layer_param(text), shapes(det, gt), "TEST")
    rows = layer(det, gt)[0].numpy().reshape(-1, 5)
    # two class rows, two detections (both true positives), a zero row for the image -1 detection
    want = [[-1, 1, 2, -1, -1], [-1, 2, 0, -1, -1], [0, 1, 0.9, 1, 0], [1, 1, 0.8, 1, 0], [0] * 5]
    np.testing.assert_allclose(rows, want, rtol=1e-7)
    assert layer.count == 2
    layer(det, gt)
    assert layer.count == 1  # 2 + 2 images, wrapped around the 3 lines


# ----------------------------------------------------------------------------- in a CaffeNet


def test_layers_are_registered_and_run_in_a_caffe_net(tmp_path):
    from ssd_cases import input_layer

    from model_libs.pytorch.layers import LAYERS
    from model_libs.pytorch.net import CaffeNet

    assert {"MultiBoxLoss", "DetectionOutput", "DetectionEvaluate"} <= set(LAYERS)
    case = make_case(2, num=3, num_classes=4)
    probs = softmax(case.conf, 4)
    text = (
        input_layer("loc", case.loc.shape)
        + input_layer("conf", case.conf.shape)
        + input_layer("probs", probs.shape)
        + input_layer("prior", case.prior.shape)
        + input_layer("label", case.label.shape)
        + LOSS.format(C=4, difficult="false", extra="").replace(
            'bottom: "a" bottom: "b" bottom: "c" bottom: "d"',
            'bottom: "loc" bottom: "conf" bottom: "prior" bottom: "label"',
        )
        + DETOUT.format(C=4, nms=0.45, top_k="top_k: 50", keep=20, thr=0.05).replace(
            'bottom: "a" bottom: "b" bottom: "c"', 'bottom: "loc" bottom: "probs" bottom: "prior"'
        )
        + 'layer { name: "e" type: "DetectionEvaluate" bottom: "out" bottom: "label" top: "eval"\n'
        + "  detection_evaluate_param { num_classes: 4 background_label_id: 0 } }\n"
    )
    from google.protobuf import text_format

    from model_libs.proto import caffe_pb2

    net = CaffeNet(text_format.Parse(text, caffe_pb2.NetParameter()), phase="TRAIN")
    assert net.losses == [("loss", 1.0)]
    loc = torch.tensor(case.loc, requires_grad=True)
    inputs = {
        "loc": loc,
        "conf": t(case.conf),
        "probs": t(probs),
        "prior": t(case.prior),
        "label": t(case.label),
    }
    tops = net(inputs)
    net.loss(tops).backward()
    alone = loss_layer(case, difficult="false")
    assert float(tops["loss"].detach()) == float(
        alone(loc, t(case.conf), t(case.prior), t(case.label))[0].detach()
    )
    assert loc.grad.abs().sum() > 0
    assert tops["out"].shape[-1] == 7 and tops["eval"].shape[-1] == 5
    assert tops["eval"].shape[2] == 3 + tops["out"].shape[2]  # class rows + one per detection
