"""The PyTorch SSD layers against the project's Caffe, blob for blob.

The same seeded blobs (several images, difficult boxes, images without ground truth, a box
exactly on a prior, a sliver no prior overlaps) go through a Caffe net of just the layer
(pycaffe, Input layers; unit Scale layers so that Caffe back-propagates into loc/conf) and
through ``model_libs.pytorch.ssd_layers``:

* MultiBoxLoss: loss within 1e-5 relative, gradients w.r.t. loc and conf within 1e-5
  relative L2, over matching / mining / normalization / encoding variants;
* DetectionOutput: the same rows (count, image, label exactly; score and box within 1e-5);
* DetectionEvaluate: the same rows, normalized and in pixels (``name_size_file``), and the
  same solver mAP through ``model_libs.evaluation.caffe_ap``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ssd_cases import Case, input_layer, layer_param, make_case, multibox_net, shapes, softmax

from model_libs.evaluation.caffe_ap import solver_map

try:
    import torch

    from model_libs.pytorch import bbox
    from model_libs.pytorch.ssd_layers import DetectionEvaluate, DetectionOutput, MultiBoxLoss
except ImportError:  # no torch: every test skips (a failure under CI, tests/conftest.py)
    torch = None

pytestmark = [pytest.mark.caffe, pytest.mark.torch]


@pytest.fixture(autouse=True)
def _need_torch():
    if torch is None:
        pytest.skip("could not import 'torch'")


def require_patch_0010() -> None:
    """DetectionOutput without nms_param and DetectionEvaluate's placeholder rows behave as
    upstream SSD in the project's Caffe only since caffe/patches/0010."""
    from model_libs.caffe_env import find_caffe

    inst = find_caffe()
    patches = inst.build_info.get("patches", []) if inst is not None and inst.origin == "project" else None
    if patches is not None and not any(p.startswith("0010-detection-layers") for p in patches):
        pytest.fail(f"the Caffe in use ({inst.root}) predates caffe/patches/0010-*: rebuild it")


MBOX = """layer {{ name: "mbox_loss" type: "MultiBoxLoss"
  bottom: "loc_s" bottom: "conf_s" bottom: "prior" bottom: "label" top: "loss"
  propagate_down: true propagate_down: true propagate_down: false propagate_down: false
  loss_param {{ normalization: {norm} }}
  multibox_loss_param {{ num_classes: {C} share_location: {share} background_label_id: 0
    loc_loss_type: {loc_loss} loc_weight: {loc_weight} match_type: {match} overlap_threshold: 0.5
    use_prior_for_matching: {prior_match} use_difficult_gt: {difficult} neg_pos_ratio: 3.0
    neg_overlap: 0.5 code_type: {code} encode_variance_in_target: {evt}
    ignore_cross_boundary_bbox: {icb} bp_inside: {bp} mining_type: {mining}
    map_object_to_agnostic: {agnostic} }} }}
"""

DEFAULTS = dict(
    norm="VALID",
    share="true",
    loc_loss="SMOOTH_L1",
    loc_weight=1.0,
    match="PER_PREDICTION",
    prior_match="true",
    difficult="true",
    code="CENTER_SIZE",
    evt="false",
    icb="false",
    bp="false",
    mining="MAX_NEGATIVE",
    agnostic="false",
)


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def caffe_multibox(caffe, case: Case, text: str, tmp: Path) -> tuple[float, np.ndarray, np.ndarray]:
    net = caffe.Net(str(multibox_net(case, text, tmp / "mbox.prototxt")), caffe.TRAIN)
    for k in ("loc", "conf", "prior", "label"):
        net.blobs[k].data[...] = getattr(case, k)
    net.forward()
    net.backward()
    return float(net.blobs["loss"].data), net.blobs["loc_s"].diff.copy(), net.blobs["conf_s"].diff.copy()


def torch_multibox(case: Case, text: str) -> tuple[float, np.ndarray, np.ndarray, dict]:
    layer = MultiBoxLoss(layer_param(text), shapes(case.loc, case.conf, case.prior, case.label), "TRAIN")
    loc = torch.tensor(case.loc, requires_grad=True)
    conf = torch.tensor(case.conf, requires_grad=True)
    (loss,) = layer(loc, conf, torch.tensor(case.prior), torch.tensor(case.label))
    loss.backward()
    return float(loss.detach()), loc.grad.numpy(), conf.grad.numpy(), layer.stats


CONFIGS = {
    "dsod": {},
    "no_difficult": {"difficult": "false"},
    "full": {"norm": "FULL", "difficult": "false"},
    "batch_size": {"norm": "BATCH_SIZE"},
    "none_norm": {"norm": "NONE", "loc_weight": 2.5},
    "no_mining": {"mining": "NONE"},
    "bipartite": {"match": "BIPARTITE"},
    "corner": {"code": "CORNER"},
    "corner_size_evt": {"code": "CORNER_SIZE", "evt": "true"},
    "decoded_matching": {"prior_match": "false"},
    "cross_boundary_bp_inside": {"icb": "true", "bp": "true"},
    "l2": {"loc_loss": "L2"},
    "per_class_loc": {"share": "false", "mining": "NONE"},
    "per_class_loc_decoded": {"share": "false", "mining": "NONE", "prior_match": "false"},
    # objectness only: 2 scores per prior, every box (labels 1-4) is class 1
    "agnostic": {"agnostic": "true", "mining": "NONE", "classes": 2},
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("seed", [0, 1])
def test_multibox_loss_matches_caffe(caffe, tmp_path, name, seed):
    cfg = {**DEFAULTS, **CONFIGS[name]}
    classes = cfg.pop("classes", 5)
    loc_classes = 1 if cfg["share"] == "true" else 5
    case = make_case(seed, num=5, num_classes=5, no_gt=(2,), loc_classes=loc_classes)
    if classes != 5:
        case.conf = np.random.default_rng(seed).normal(0, 1.5, (5, case.conf.shape[1] // 5 * classes))
        case.conf, case.num_classes = case.conf.astype(np.float32), classes
    text = MBOX.format(C=case.num_classes, **cfg)
    c_loss, c_gloc, c_gconf = caffe_multibox(caffe, case, text, tmp_path)
    t_loss, t_gloc, t_gconf, stats = torch_multibox(case, text)
    assert stats["num_matches"] > 5
    if cfg["mining"] != "NONE":
        assert stats["num_negatives"] == 3 * stats["num_matches"]
    assert t_loss == pytest.approx(c_loss, rel=1e-5)
    assert rel_l2(t_gloc, c_gloc) < 1e-5
    assert rel_l2(t_gconf, c_gconf) < 1e-5
    # the gradient lands on the same priors: matched ones for loc, matched + mined for conf
    assert np.array_equal(t_gloc != 0, c_gloc != 0)
    assert np.array_equal(t_gconf != 0, c_gconf != 0)


def test_multibox_loss_batch_without_ground_truth(caffe, tmp_path):
    """A batch with no box at all (the data layer's single all -1 row): no positives, no
    negatives, loss 0 and zero gradients - in both engines."""
    case = make_case(3, num=3)
    case.label = np.full((1, 1, 1, 8), -1, dtype=np.float32)
    text = MBOX.format(C=case.num_classes, **DEFAULTS)
    c_loss, c_gloc, c_gconf = caffe_multibox(caffe, case, text, tmp_path)
    t_loss, t_gloc, t_gconf, stats = torch_multibox(case, text)
    assert stats == {"num_matches": 0, "num_negatives": 0}
    assert c_loss == t_loss == 0
    assert not c_gloc.any() and not t_gloc.any() and not c_gconf.any() and not t_gconf.any()


@pytest.mark.slow
@pytest.mark.parametrize("classes,num", [(21, 8), (81, 4)])
def test_dsod300_shapes(caffe, tmp_path, classes, num):
    """DSOD300's 8,744 priors (its own PriorBox layers): MultiBoxLoss and DetectionOutput
    (DSOD's settings) for VOC's 21 classes at batch 8 and COCO's 81 at batch 4."""
    from model_libs.dsod import recipe

    r = recipe("DSOD300", "VOC0712", data_root="data")
    case = dsod300_case(caffe, tmp_path, r, seed=5, num=num, classes=classes)
    text = MBOX.format(C=classes, **DEFAULTS)
    c_loss, c_gloc, c_gconf = caffe_multibox(caffe, case, text, tmp_path)
    t_loss, t_gloc, t_gconf, stats = torch_multibox(case, text)
    assert stats["num_matches"] > 5 * num
    assert t_loss == pytest.approx(c_loss, rel=1e-5)
    assert rel_l2(t_gloc, c_gloc) < 1e-5
    assert rel_l2(t_gconf, c_gconf) < 1e-5
    text = DETOUT.format(C=classes, share="true", code="CENTER_SIZE", save="", **DET_CONFIGS["dsod"])
    probs = softmax(case.conf * 2, classes)
    theirs = caffe_detection_output(caffe, case.loc * 0.5, probs, case.prior, text, tmp_path)
    layer = DetectionOutput(layer_param(text), shapes(case.loc, probs, case.prior), "TEST")
    ours = layer(torch.tensor(case.loc * 0.5), torch.tensor(probs), torch.tensor(case.prior))[0]
    assert_rows_equal(ours.numpy().reshape(-1, 7), theirs)
    assert len(theirs) == 200 * num  # keep_top_k reached in every image


def dsod300_case(caffe, tmp: Path, r, seed: int, num: int, classes: int) -> Case:
    """Blobs with DSOD300's real prior boxes (from Caffe's PriorBox layers of the deploy net)."""
    from model_libs.dsod import deploy_net

    net_param = deploy_net(r)
    keep = [x for x in net_param.layer if x.type != "DetectionOutput"]
    del net_param.layer[:]
    net_param.layer.extend(keep)
    (tmp / "deploy.prototxt").write_text(str(net_param))
    net = caffe.Net(str(tmp / "deploy.prototxt"), caffe.TEST)
    net.forward(end="mbox_priorbox")
    prior = net.blobs["mbox_priorbox"].data.copy()
    assert prior.shape == (1, 2, 8744 * 4)
    base = make_case(seed, num=num, num_classes=classes)
    rng = np.random.default_rng(seed)
    P = prior.shape[2] // 4
    loc = rng.normal(0, 0.6, (num, P * 4)).astype(np.float32)
    conf = rng.normal(0, 1.5, (num, P * classes)).astype(np.float32)
    label = base.label.copy()
    label[0, 0, 0, 3:7] = prior[0, 0, 4 * 1000 : 4 * 1001]  # exactly on a prior
    return Case(loc, conf, prior, label, classes)


# ----------------------------------------------------------------------------- DetectionOutput

DETOUT = """layer {{ name: "detection_out" type: "DetectionOutput"
  bottom: "loc" bottom: "conf" bottom: "prior" top: "detection_out"
  detection_output_param {{ num_classes: {C} share_location: {share} background_label_id: 0
    {nms} code_type: {code} keep_top_k: {keep_top_k} {thr}
    {save} }} }}
"""

DET_CONFIGS = {
    "dsod": dict(
        nms="nms_param { nms_threshold: 0.45 top_k: 400 }", keep_top_k=200, thr="confidence_threshold: 0.01"
    ),
    "keep_top_k_caps": dict(
        nms="nms_param { nms_threshold: 0.45 top_k: 40 }", keep_top_k=25, thr="confidence_threshold: 0.05"
    ),
    "eta": dict(
        nms="nms_param { nms_threshold: 0.7 top_k: 100 eta: 0.9 }",
        keep_top_k=-1,
        thr="confidence_threshold: 0.1",
    ),
    "no_nms_param": dict(nms="", keep_top_k=100, thr="confidence_threshold: 0.3"),
    "no_threshold": dict(nms="nms_param { nms_threshold: 0.3 top_k: 20 }", keep_top_k=-1, thr=""),
    "nothing_found": dict(
        nms="nms_param { nms_threshold: 0.45 top_k: 400 }", keep_top_k=200, thr="confidence_threshold: 1.0"
    ),
    "per_class_loc": dict(
        nms="nms_param { nms_threshold: 0.45 top_k: 50 }",
        keep_top_k=60,
        thr="confidence_threshold: 0.05",
        share="false",
    ),
    "corner_with_save_param": dict(
        nms="nms_param { nms_threshold: 0.5 }",
        keep_top_k=30,
        thr="confidence_threshold: 0.2",
        code="CORNER",
        save='save_output_param { output_format: "VOC" }',
    ),
}


def caffe_detection_output(caffe, loc, conf, prior, text: str, tmp: Path) -> np.ndarray:
    net_text = (
        input_layer("loc", loc.shape) + input_layer("conf", conf.shape) + input_layer("prior", prior.shape)
    )
    (tmp / "det.prototxt").write_text(net_text + text)
    net = caffe.Net(str(tmp / "det.prototxt"), caffe.TEST)
    net.blobs["loc"].data[...] = loc
    net.blobs["conf"].data[...] = conf
    net.blobs["prior"].data[...] = prior
    net.forward()
    return net.blobs["detection_out"].data.reshape(-1, 7).copy()


def assert_rows_equal(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(ours[:, :2], theirs[:, :2])
    np.testing.assert_allclose(ours[:, 2:], theirs[:, 2:], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(DET_CONFIGS))
def test_detection_output_matches_caffe(caffe, tmp_path, name):
    if name == "no_nms_param":
        require_patch_0010()
    cfg = {"share": "true", "code": "CENTER_SIZE", "save": "", **DET_CONFIGS[name]}
    C = 6
    case = make_case(11, num=3, num_classes=C, loc_classes=1 if cfg["share"] == "true" else C)
    loc = case.loc * 0.5
    conf = softmax(case.conf * 1.5, C)
    text = DETOUT.format(C=C, **cfg)
    theirs = caffe_detection_output(caffe, loc, conf, case.prior, text, tmp_path)
    layer = DetectionOutput(layer_param(text), shapes(loc, conf, case.prior), "TEST")
    ours = layer(torch.tensor(loc), torch.tensor(conf), torch.tensor(case.prior))[0].numpy().reshape(-1, 7)
    assert_rows_equal(ours, theirs)
    if name == "nothing_found":
        assert ours.tolist() == [[i, -1, -1, -1, -1, -1, -1] for i in range(3)]
    else:
        assert len(ours) > 3 * (C - 1)


# ----------------------------------------------------------------------------- DetectionEvaluate

DETEVAL = """layer {{ name: "detection_eval" type: "DetectionEvaluate" bottom: "det" bottom: "gt"
  top: "detection_eval"
  detection_evaluate_param {{ num_classes: {C} background_label_id: 0 overlap_threshold: 0.5
    evaluate_difficult_gt: {difficult} {extra} }} }}
"""


def caffe_evaluate(caffe, batches, text: str, tmp: Path) -> list[np.ndarray]:
    """Rows of Caffe's DetectionEvaluate for successive (det, gt) batches (one net, so the
    name/size counter runs on across them)."""
    det, gt = batches[0]
    net_text = input_layer("det", (1, 1, len(det), 7)) + input_layer("gt", (1, 1, len(gt), 8))
    (tmp / "eval.prototxt").write_text(net_text + text)
    net = caffe.Net(str(tmp / "eval.prototxt"), caffe.TEST)
    out = []
    for det, gt in batches:
        net.blobs["det"].reshape(1, 1, len(det), 7)
        net.blobs["gt"].reshape(1, 1, len(gt), 8)
        net.blobs["det"].data[...] = det.reshape(1, 1, -1, 7)
        net.blobs["gt"].data[...] = gt.reshape(1, 1, -1, 8)
        net.forward()
        out.append(net.blobs["detection_eval"].data.reshape(-1, 5).copy())
    return out


def detections_for(seed: int, C: int, num: int) -> tuple[np.ndarray, np.ndarray]:
    """DetectionOutput rows (from the torch layer) and the label blob of a seeded case whose
    predictions are near the truth: priors matched to a box predict it (with noise) and
    favour its class, so that there are true and false positives and duplicates."""
    case = make_case(seed, num=num, num_classes=C)
    rng = np.random.default_rng(seed)
    pri = torch.tensor(case.prior[0, 0].reshape(-1, 4))
    var = torch.tensor(case.prior[0, 1].reshape(-1, 4))
    loc = case.loc.reshape(num, -1, 4) * 0.3
    conf = case.conf.reshape(num, -1, C)
    for row in case.label.reshape(-1, 8):
        box = torch.tensor(row[3:7])
        near = np.flatnonzero(bbox.jaccard(pri, box[None]).numpy() >= 0.4)
        i = int(row[0])
        loc[i, near] = bbox.encode(pri[near], var[near], box[None], bbox.CENTER_SIZE, False).numpy()
        loc[i, near] += rng.normal(0, 0.3, (len(near), 4))
        conf[i, near, int(row[1])] += 3
    case.loc, case.conf = loc.reshape(num, -1).astype(np.float32), conf.reshape(num, -1).astype(np.float32)
    text = DETOUT.format(
        C=C,
        share="true",
        code="CENTER_SIZE",
        save="",
        nms="nms_param { nms_threshold: 0.45 top_k: 100 }",
        keep_top_k=50,
        thr="confidence_threshold: 0.05",
    )
    conf = softmax(case.conf, C)
    layer = DetectionOutput(layer_param(text), shapes(case.loc, conf, case.prior), "TEST")
    det = layer(torch.tensor(case.loc), torch.tensor(conf), torch.tensor(case.prior))[0].numpy()
    return det.reshape(-1, 7), case.label.reshape(-1, 8)


@pytest.mark.parametrize("difficult", ["true", "false"])
@pytest.mark.parametrize("pixels", [False, True])
def test_detection_evaluate_matches_caffe(caffe, tmp_path, difficult, pixels):
    require_patch_0010()
    C = 5
    batches = [detections_for(s, C, 4) for s in (21, 22, 23)]
    # a batch in which nothing was found: DetectionOutput's placeholder rows
    nothing = np.array([[i, -1, -1, -1, -1, -1, -1] for i in range(4)], dtype=np.float32)
    batches.append((nothing, batches[0][1]))
    extra = ""
    if pixels:
        sizes = tmp_path / "name_size.txt"
        sizes.write_text("".join(f"img{i} {300 + 17 * i} {500 - 23 * i}\n" for i in range(7)))
        extra = f'name_size_file: "{sizes}"'
    text = DETEVAL.format(C=C, difficult=difficult, extra=extra)
    theirs = caffe_evaluate(caffe, batches, text, tmp_path)
    layer = DetectionEvaluate(
        layer_param(text), shapes(batches[0][0][None, None], batches[0][1][None, None]), "TEST"
    )
    ours = [
        layer(torch.tensor(d[None, None]), torch.tensor(g[None, None]))[0].numpy().reshape(-1, 5)
        for d, g in batches
    ]
    for o, t in zip(ours, theirs):
        assert o.shape == t.shape
        np.testing.assert_array_equal(o, t)
    assert ours[-1].shape == (C - 1, 5)  # placeholders give no rows (patch 0010, upstream SSD)
    rows = np.concatenate(ours)
    dets = rows[rows[:, 0] >= 0]
    assert (dets[:, 3] == 1).sum() > 5 and (dets[:, 4] == 1).sum() > 5  # true and false positives
    for v in ("11point", "MaxIntegral", "Integral"):
        assert solver_map(rows, v).mAP == solver_map(np.concatenate(theirs), v).mAP
