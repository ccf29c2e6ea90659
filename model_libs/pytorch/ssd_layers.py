"""SSD's MultiBoxLoss, DetectionOutput and DetectionEvaluate layers, as SSD Caffe computes them.

Sources of the semantics: ``multibox_loss_layer.cpp``, ``detection_output_layer.cpp``,
``detection_evaluate_layer.cpp`` and ``util/bbox_util.cpp`` of SSD Caffe (weiliu89/caffe,
branch ``ssd``), checked against the project's own build. The loss and the detection output
run batched on the tensors' device (a loop over ground-truth boxes for matching, over NMS
candidates for suppression - never over priors); DetectionEvaluate is bookkeeping over a few
hundred rows and runs in NumPy through :mod:`model_libs.evaluation.caffe_ap`.

Where Caffe's result depends on ``std::sort``'s unspecified order of equal keys (hard
negatives with equal confidence loss; ``keep_top_k`` over equal scores) these layers use the
stable order (lower prior, lower class first). Everything else is reproduced exactly.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..evaluation.caffe_ap import detection_evaluate, read_name_sizes
from ..proto import caffe_pb2
from . import bbox
from .layers import CaffeLayer, register

FLT_MAX = float(np.finfo(np.float32).max)
LOG_FLT_MIN = math.log(float(np.finfo(np.float32).tiny))

_MBL = caffe_pb2.MultiBoxLossParameter
_NORM = caffe_pb2.LossParameter


def _priors(prior: Tensor) -> tuple[Tensor, Tensor]:
    """PriorBox's top (1, 2, P*4): boxes and variances, each (P, 4)."""
    p = prior.reshape(prior.shape[0], 2, -1, 4)
    return p[0, 0], p[0, 1]


def _order_key(score: Tensor, minor: Tensor) -> Tensor:
    """int64 keys that sort by ``score`` descending, then ``minor`` (< 2**32) ascending.

    Equal floats (0.0 and -0.0 included) give equal major parts, so a plain sort on the keys
    is the stable descending sort Caffe's ``std::stable_sort`` performs.
    """
    bits = (score.float() + 0.0).view(torch.int32).long()
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # monotone in the float order
    return bits * (1 << 32) + ((1 << 32) - 1 - minor)


def _softmax_xent(logits: Tensor, target: Tensor) -> Tensor:
    """Sum of SoftmaxWithLoss terms ``-log(max(p, FLT_MIN))``; gradient ``p - onehot``.

    The clamp only changes the value (as in Caffe, whose backward ignores it).
    """
    logp = torch.log_softmax(logits, dim=-1).gather(-1, target[:, None])[:, 0]
    capped = logp.clamp_min(LOG_FLT_MIN)
    return -(logp + (capped - logp).detach()).sum()


def mining_conf_loss(conf: Tensor, target: Tensor) -> Tensor:
    """``ComputeConfLoss`` (softmax) per prior in Caffe's float32 steps: the ranking key of
    hard-negative mining. ``conf`` (..., C) logits, ``target`` (...) labels.

    Caffe sums ``exp(x - max)`` class by class in float; so does this (a loop over classes,
    on a class-major copy). The exponential and logarithm are evaluated in double and rounded,
    which agrees with glibc's ``expf``/``logf`` far more often than float32 kernels do: the
    ranking, and so the mined set, then only differs from Caffe's at near-exact ties.
    """
    x = conf.detach().float()
    xt = x.permute(x.ndim - 1, *range(x.ndim - 1)).contiguous()  # (C, ...)
    e = torch.exp((xt - xt.amax(0)).double()).float()
    s = e[0].clone()
    for c in range(1, e.shape[0]):
        s += e[c]
    p = e.gather(0, target[None])[0] / s
    p = p.clamp_min(float(np.finfo(np.float32).tiny))
    return (-torch.log(p.double())).float()


class _SSDLayer(CaffeLayer):
    def check_arity(self, layer: caffe_pb2.LayerParameter, low: int, high: int) -> None:
        n = len(self.bottom_shapes)
        if not low <= n <= high:
            want = str(low) if low == high else f"{low} to {high}"
            raise self.fail(f"needs {want} bottoms, got {n}")
        if len(layer.top) != 1:
            raise self.fail(f"gives 1 top, the prototxt names {len(layer.top)}")


@register("MultiBoxLoss")
class MultiBoxLoss(_SSDLayer):
    """SSD Caffe's ``MultiBoxLoss``: bottoms ``loc`` (N, P*L*4), ``conf`` (N, P*C), ``prior``
    (1, 2, P*4), ``label`` (1, 1, G, 8); top: the scalar loss.

    Supported: both match types, ``use_prior_for_matching`` on or off, ``share_location`` on or
    off, CORNER / CENTER_SIZE / CORNER_SIZE codes with ``encode_variance_in_target`` either
    way, ``MAX_NEGATIVE`` mining or none, SMOOTH_L1 or L2 localization loss, SOFTMAX
    confidence loss, every ``loss_param`` normalization, ``loc_weight``,
    ``use_difficult_gt``, ``map_object_to_agnostic``, ``ignore_cross_boundary_bbox``,
    ``bp_inside`` and the layer's ``propagate_down``. Refused with an error: LOGISTIC
    confidence loss, HARD_EXAMPLE mining and NMS inside mining.

    Gradients (autograd) are Caffe's backward, quirks included: the softmax gradient ignores
    the ``FLT_MIN`` clamp of the loss value, and with ``encode_variance_in_target`` the
    localization gradient is not divided by the variance the loss divides by.
    """

    def __init__(self, layer: caffe_pb2.LayerParameter, bottom_shapes: list[list[int]], phase: str) -> None:
        super().__init__(layer, bottom_shapes, phase)
        self.check_arity(layer, 4, 4)
        p = layer.multibox_loss_param
        if not p.HasField("num_classes") or p.num_classes < 1:
            raise self.fail("multibox_loss_param.num_classes must be given (>= 1)")
        self.num_classes = int(p.num_classes)
        self.share_location = p.share_location
        self.background_label_id = int(p.background_label_id)
        self.use_difficult_gt = p.use_difficult_gt
        self.match_type = int(p.match_type)
        self.overlap_threshold = float(p.overlap_threshold)
        self.use_prior_for_matching = p.use_prior_for_matching
        self.code_type = int(p.code_type)
        self.encode_variance_in_target = p.encode_variance_in_target
        self.ignore_cross_boundary_bbox = p.ignore_cross_boundary_bbox
        self.bp_inside = p.bp_inside
        self.map_object_to_agnostic = p.map_object_to_agnostic
        self.neg_pos_ratio = float(p.neg_pos_ratio)
        self.neg_overlap = float(p.neg_overlap)
        self.loc_weight = float(p.loc_weight)
        self.loc_loss_type = int(p.loc_loss_type)
        self.mining_type = int(p.mining_type)
        if p.HasField("do_neg_mining") and p.do_neg_mining != (self.mining_type != _MBL.NONE):
            raise self.fail("do_neg_mining (deprecated) contradicts mining_type")
        if p.conf_loss_type != _MBL.SOFTMAX:
            raise self.fail("only the SOFTMAX confidence loss is implemented")
        if self.mining_type == _MBL.HARD_EXAMPLE:
            raise self.fail("HARD_EXAMPLE mining is not implemented (MAX_NEGATIVE and NONE are)")
        if self.mining_type != _MBL.NONE:
            if not self.share_location:
                raise self.fail("negative mining needs share_location (as in SSD Caffe)")
            if p.HasField("nms_param") and p.nms_param.nms_threshold > 0:
                raise self.fail(
                    "NMS inside negative mining (multibox_loss_param.nms_param) is not implemented"
                )
        if not 0 <= self.background_label_id < self.num_classes:
            raise self.fail("background_label_id must be within [0, num_classes) for the softmax loss")
        if self.map_object_to_agnostic and self.num_classes != 2:
            raise self.fail("map_object_to_agnostic needs num_classes 2")
        if self.code_type not in (bbox.CORNER, bbox.CENTER_SIZE, bbox.CORNER_SIZE):
            raise self.fail(f"unknown code_type {self.code_type}")
        lp = layer.loss_param
        if not lp.HasField("normalization") and lp.HasField("normalize"):
            self.normalization = _NORM.VALID if lp.normalize else _NORM.BATCH_SIZE
        else:
            self.normalization = int(lp.normalization)
        pd = list(layer.propagate_down) or [True, True, False, False]
        self.use_loc, self.use_conf = bool(pd[0]), bool(pd[1])
        self.loc_classes = 1 if self.share_location else self.num_classes
        # Label keys of Caffe's per-image match map, in map (ascending) order.
        self.keys = (
            [-1]
            if self.share_location
            else [c for c in range(self.num_classes) if c != self.background_label_id]
        )
        # What the last forward matched and mined (counts), for logs and tests.
        self.stats: dict[str, int] = {}

    # -- ground truth ------------------------------------------------------------------
    def ground_truth(self, label: Tensor, num: int) -> tuple[Tensor, Tensor, Tensor]:
        """``GetGroundTruth``: per image, in row order, the boxes (N, G, 4), labels (N, G) and
        which entries are real (N, G). Rows with image id -1 are skipped, and difficult boxes
        unless ``use_difficult_gt``."""
        rows = label.reshape(-1, 8).float()
        dev = rows.device
        item = rows[:, 0].long()  # float -> int truncation, as Caffe's int item_id = data
        lab = rows[:, 1].long()
        real = item != -1
        if bool((real & (lab == self.background_label_id)).any()):
            raise self.fail(
                f"label blob: a ground truth box has the background label {self.background_label_id}"
            )
        keep = real & (item >= 0) & (item < num)
        if not self.use_difficult_gt:
            keep &= rows[:, 7] == 0
        idx = keep.nonzero()[:, 0]
        it = item[idx]
        order = torch.argsort(it, stable=True)
        idx, it = idx[order], it[order]
        counts = torch.bincount(it, minlength=num)
        G = max(1, int(counts.max()) if idx.numel() else 0)  # one unused column when empty
        pos = torch.arange(idx.numel(), device=dev) - (torch.cumsum(counts, 0) - counts)[it]
        boxes = torch.zeros((num, G, 4), dtype=torch.float32, device=dev)
        labels = torch.full((num, G), -1, dtype=torch.long, device=dev)
        valid = torch.zeros((num, G), dtype=torch.bool, device=dev)
        boxes[it, pos] = rows[idx, 3:7]
        labels[it, pos] = lab[idx]
        valid[it, pos] = True
        return boxes, labels, valid

    # -- matching --------------------------------------------------------------------------
    def find_matches(
        self, loc4: Tensor, prior: Tensor, var: Tensor, gt: Tensor, gt_labels: Tensor, gt_valid: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``FindMatches``: (N, K, P) ground-truth index and overlap per key of ``self.keys``."""
        N, P = loc4.shape[0], loc4.shape[1]
        K = len(self.keys)
        mt, thr, icb = self.match_type, self.overlap_threshold, self.ignore_cross_boundary_bbox
        if self.use_prior_for_matching:
            idx, ov = bbox.match(prior.expand(N, P, 4), gt, gt_valid, mt, thr, icb)
            if self.share_location:
                return idx[:, None], ov[:, None]
            keys = torch.tensor(self.keys, device=idx.device)
            matched_label = gt_labels.gather(1, idx.clamp_min(0))  # (N, P)
            per_key = (idx[:, None] > -1) & (matched_label[:, None] == keys[None, :, None])
            return torch.where(per_key, idx[:, None], torch.full_like(per_key, -1, dtype=torch.long)), ov[
                :, None
            ].expand(N, K, P)
        # Match the decoded predictions (no gradient flows through matching).
        evt = self.encode_variance_in_target
        if self.share_location:
            pred = bbox.decode(prior, var, loc4[:, :, 0].detach(), self.code_type, evt)
            idx, ov = bbox.match(pred, gt, gt_valid, mt, thr, icb)
            return idx[:, None], ov[:, None]
        keys = torch.tensor(self.keys, device=loc4.device)
        pred = bbox.decode(prior[:, None], var[:, None], loc4[:, :, keys].detach(), self.code_type, evt)
        pred = pred.permute(0, 2, 1, 3).reshape(N * K, P, 4)
        valid = gt_valid[:, None] & (gt_labels[:, None] == keys[None, :, None])  # (N, K, G)
        G = gt.shape[1]
        gt_k = gt[:, None].expand(N, K, G, 4).reshape(N * K, G, 4)
        idx, ov = bbox.match(pred, gt_k, valid.reshape(N * K, G), mt, thr, icb)
        return idx.view(N, K, P), ov.view(N, K, P)

    # -- forward -----------------------------------------------------------------------------
    def forward(self, loc: Tensor, conf: Tensor, prior: Tensor, label: Tensor) -> tuple[Tensor]:
        N = loc.shape[0]
        C = self.num_classes
        pri, var = _priors(prior)
        P = pri.shape[0]
        if loc.numel() != N * P * self.loc_classes * 4 or conf.numel() != N * P * C:
            raise self.fail(
                f"{P} priors need loc (N, {P * self.loc_classes * 4}) and conf (N, {P * C}); "
                f"got {tuple(loc.shape)} and {tuple(conf.shape)}"
            )
        loc4 = loc.reshape(N, P, self.loc_classes, 4)
        conf3 = conf.reshape(N, P, C)
        gt, gt_labels, gt_valid = self.ground_truth(label, N)
        has_gt = gt_valid.any(1)  # images that have a key in Caffe's all_gt_bboxes
        midx, mov = self.find_matches(loc4, pri, var, gt, gt_labels, gt_valid)  # (N, K, P)
        pos = midx > -1
        num_matches = int(pos.sum())
        bg = self.background_label_id

        # Hard negative mining (MAX_NEGATIVE, share_location: one key).
        neg = torch.zeros((N, P), dtype=torch.bool, device=loc.device)
        if self.mining_type == _MBL.MAX_NEGATIVE:
            m0, o0 = midx[:, 0], mov[:, 0]
            target = torch.where(m0 > -1, gt_labels.gather(1, m0.clamp_min(0)), torch.full_like(m0, bg))
            rank_loss = mining_conf_loss(conf3, target)
            eligible = (m0 == -1) & (o0 < self.neg_overlap) & has_gt[:, None]
            num_pos = (m0 > -1).sum(1)
            num_sel = torch.minimum((num_pos.float() * self.neg_pos_ratio).long(), eligible.sum(1))
            kmax = int(num_sel.max())
            if kmax > 0:
                # the num_sel highest losses among the eligible priors (lower prior on ties)
                key = _order_key(rank_loss, torch.arange(P, device=loc.device).expand(N, P))
                key = torch.where(eligible, key, torch.full_like(key, torch.iinfo(torch.long).min))
                top = torch.topk(key, kmax, dim=1).indices
                take = torch.arange(kmax, device=loc.device)[None, :] < num_sel[:, None]
                neg.scatter_(1, top, take)
        num_negs = int(neg.sum())
        self.stats = {"num_matches": num_matches, "num_negatives": num_negs}

        # empty sums: 0, yet part of the graph (zero gradients when nothing is selected)
        loc_loss = loc.reshape(-1)[:0].sum()
        if num_matches >= 1:
            n, k, p = pos.nonzero(as_tuple=True)
            g = midx[n, k, p]
            cls = torch.zeros_like(k) if self.share_location else torch.tensor(self.keys, device=k.device)[k]
            pred = loc4[n, p, cls]
            target = bbox.encode(pri[p], var[p], gt[n, g], self.code_type, self.encode_variance_in_target)
            if self.bp_inside:
                where = pri[p]
                if not self.use_prior_for_matching:
                    where = bbox.decode(
                        pri[p], var[p], pred.detach(), self.code_type, self.encode_variance_in_target
                    )
                outside = (where < 0) | (where > 1)
                pred = torch.where(outside, target, pred)
            if self.encode_variance_in_target:
                # Caffe divides the prediction by the variance for the loss but copies the
                # loss's gradient back unscaled: value pred/var, gradient as if it were pred.
                pred = (pred / var[p]).detach() + (pred - pred.detach())
                target = target / var[p]
            d = pred - target
            if self.loc_loss_type == _MBL.SMOOTH_L1:
                ad = d.abs()
                loc_loss = torch.where(ad < 1, 0.5 * d * d, ad - 0.5).sum()
            else:  # L2: Caffe's EuclideanLoss over a (1, 4M) blob
                loc_loss = (d * d).sum() / 2

        # Confidence loss over the positives and the mined negatives (or over all priors).
        n, k, p = pos.nonzero(as_tuple=True)
        pos_target = gt_labels[n, midx[n, k, p]]
        if self.map_object_to_agnostic:
            pos_target = torch.full_like(pos_target, bg + 1)
        conf_loss = conf.reshape(-1)[:0].sum()
        if self.mining_type != _MBL.NONE:
            nn_, pn = neg.nonzero(as_tuple=True)
            if n.numel() + nn_.numel() >= 1:
                logits = torch.cat([conf3[n, p], conf3[nn_, pn]])
                target = torch.cat([pos_target, torch.full_like(pn, bg)])
                conf_loss = _softmax_xent(logits, target)
        else:
            target = torch.full((N, P), bg, dtype=torch.long, device=loc.device)
            target[n, p] = pos_target
            conf_loss = _softmax_xent(conf3.reshape(N * P, C), target.reshape(-1))

        normalizer = self.normalizer(N, P, num_matches)
        loss = loc.reshape(-1)[:0].sum()  # Caffe: top = 0, then += each term it back-propagates
        if self.use_loc:
            loss = loss + self.loc_weight * loc_loss / normalizer
        if self.use_conf:
            loss = loss + conf_loss / normalizer
        return (loss,)

    def normalizer(self, num: int, num_priors: int, num_matches: int) -> float:
        """``LossLayer::GetNormalizer`` (at least 1)."""
        if self.normalization == _NORM.FULL:
            v = num * num_priors
        elif self.normalization == _NORM.VALID:
            v = num_matches
        elif self.normalization == _NORM.BATCH_SIZE:
            v = num
        else:
            v = 1
        return float(max(1, v))


@register("DetectionOutput")
class DetectionOutput(_SSDLayer):
    """SSD Caffe's ``DetectionOutput``: bottoms ``loc`` (N, P*L*4), ``conf`` (N, P*C) class
    probabilities, ``prior`` (1, 2, P*4); top (1, 1, D, 7) rows ``[image_id, label, score,
    xmin, ymin, xmax, ymax]`` (boxes decoded, not clipped), per image by label then score.

    Per image and non-background class: scores above ``confidence_threshold``, best first
    (stable on ties), at most ``nms_param.top_k``, greedy NMS (``ApplyNMSFast``: a box is
    dropped when its overlap with a kept one exceeds the threshold, which ``eta`` < 1 lowers
    after each kept box while above 0.5); then at most ``keep_top_k`` over all classes. With no
    detection at all, one row ``[i, -1, -1, -1, -1, -1, -1]`` per image. An absent ``nms_param``
    means its defaults (upstream SSD; the project's Caffe does the same since patch 0010).
    ``save_output_param`` and ``visualize`` are accepted and ignored: the toolkit scores from
    the rows.
    """

    def __init__(self, layer: caffe_pb2.LayerParameter, bottom_shapes: list[list[int]], phase: str) -> None:
        super().__init__(layer, bottom_shapes, phase)
        self.check_arity(layer, 3, 4)
        p = layer.detection_output_param
        if not p.HasField("num_classes"):
            raise self.fail("detection_output_param.num_classes must be given")
        self.num_classes = int(p.num_classes)
        self.share_location = p.share_location
        self.background_label_id = int(p.background_label_id)
        self.code_type = int(p.code_type)
        self.variance_encoded_in_target = p.variance_encoded_in_target
        self.keep_top_k = int(p.keep_top_k)
        self.confidence_threshold = (
            float(p.confidence_threshold) if p.HasField("confidence_threshold") else -FLT_MAX
        )
        nms = p.nms_param
        self.nms_threshold = float(nms.nms_threshold)
        self.eta = float(nms.eta)
        self.top_k = int(nms.top_k) if nms.HasField("top_k") else -1
        if self.nms_threshold < 0:
            raise self.fail("nms_threshold must be non negative")
        if not 0 < self.eta <= 1:
            raise self.fail("nms_param.eta must be in (0, 1]")
        if self.share_location and self.background_label_id == -1:
            raise self.fail("share_location with background_label_id -1 decodes no boxes in SSD Caffe")
        if self.code_type not in (bbox.CORNER, bbox.CENTER_SIZE, bbox.CORNER_SIZE):
            raise self.fail(f"unknown code_type {self.code_type}")
        self.classes = [c for c in range(self.num_classes) if c != self.background_label_id]

    def forward(self, loc: Tensor, conf: Tensor, prior: Tensor, *unused: Tensor) -> tuple[Tensor]:
        with torch.no_grad():
            return (self._detect(loc.detach(), conf.detach(), prior.detach()),)

    def _detect(self, loc: Tensor, conf: Tensor, prior: Tensor) -> Tensor:
        dev = loc.device
        N = loc.shape[0]
        C = self.num_classes
        pri, var = _priors(prior.float())
        P = pri.shape[0]
        L = 1 if self.share_location else C
        if loc.numel() != N * P * L * 4 or conf.numel() != N * P * C:
            raise self.fail(
                f"{P} priors need loc (N, {P * L * 4}) and conf (N, {P * C}); "
                f"got {tuple(loc.shape)} and {tuple(conf.shape)}"
            )
        classes = torch.tensor(self.classes, dtype=torch.long, device=dev)
        Cn = len(self.classes)
        loc4 = loc.float().reshape(N, P, L, 4)
        scores = conf.float().reshape(N, P, C)[:, :, classes].permute(0, 2, 1).reshape(N * Cn, P)
        # Candidates per (image, class): above the threshold, best first (stable), top_k.
        cand = scores > self.confidence_threshold
        count = cand.sum(1)
        if self.top_k > -1:
            count = count.clamp_max(self.top_k)
        K = int(count.max()) if count.numel() else 0
        if K == 0:
            return self._rows(None, N, dev)
        prior_idx = torch.arange(P, device=dev).expand(N * Cn, P)
        key = torch.where(
            cand, _order_key(scores, prior_idx), torch.full_like(prior_idx, torch.iinfo(torch.long).min)
        )
        cidx = torch.topk(key, K, dim=1).indices  # (B, K): unique keys, so the order is exact
        valid = torch.arange(K, device=dev)[None, :] < count[:, None]
        cscore = scores.gather(1, cidx)
        n_of = torch.arange(N, device=dev).repeat_interleave(Cn)  # image of each group
        if self.share_location:
            boxes = bbox.decode(pri, var, loc4[:, :, 0], self.code_type, self.variance_encoded_in_target)
            cbox = boxes[n_of[:, None], cidx]  # (B, K, 4)
        else:
            c_of = classes.repeat(N)
            lb = loc4[n_of[:, None], cidx, c_of[:, None]]  # (B, K, 4)
            cbox = bbox.decode(pri[cidx], var[cidx], lb, self.code_type, self.variance_encoded_in_target)
        kept = self._nms(cbox, valid)
        # keep_top_k over all classes of an image: by score, then class, then NMS order.
        kept3 = kept.view(N, Cn, K)
        num_det = kept3.sum((1, 2))
        if self.keep_top_k > -1:
            minor = torch.arange(Cn * K, device=dev).expand(N, Cn * K)
            k2 = _order_key(cscore.view(N, Cn * K), minor)
            k2 = torch.where(kept3.view(N, Cn * K), k2, torch.full_like(k2, torch.iinfo(torch.long).min))
            order = torch.argsort(k2, dim=1, descending=True)
            rank = torch.empty_like(order)
            rank.scatter_(1, order, torch.arange(Cn * K, device=dev).expand(N, Cn * K))
            trunc = num_det > self.keep_top_k
            top = (rank < self.keep_top_k) | ~trunc[:, None]
            kept3 = kept3 & top.view(N, Cn, K)
        sel = kept3.nonzero(as_tuple=True)  # (image, class, rank): Caffe's row order
        if sel[0].numel() == 0:
            return self._rows(None, N, dev)
        ni, ci, ki = sel
        g = ni * Cn + ci
        rows = torch.cat(
            [
                ni.float()[:, None],
                classes[ci].float()[:, None],
                cscore[g, ki][:, None],
                cbox[g, ki],
            ],
            dim=1,
        )
        return self._rows(rows, N, dev)

    @staticmethod
    def _rows(rows: Tensor | None, num: int, dev: torch.device) -> Tensor:
        if rows is None:  # Caffe's "no detection" rows: [i, -1, -1, -1, -1, -1, -1]
            rows = torch.full((num, 7), -1.0, device=dev)
            rows[:, 0] = torch.arange(num, device=dev, dtype=torch.float32)
        return rows.reshape(1, 1, -1, 7)

    def _nms(self, boxes: Tensor, valid: Tensor) -> Tensor:
        """``ApplyNMSFast`` over every (image, class) group at once: boxes (B, K, 4) best
        first, ``valid`` (B, K) candidates; returns which are kept.

        Groups go in chunks: the overlaps of a chunk's candidates are computed in cache-sized
        row blocks and stored (as "would be suppressed" flags when the threshold is fixed),
        then one pass over the candidate ranks keeps or drops each one in every group.
        """
        B, K, _ = boxes.shape
        dev = boxes.device
        kept = torch.zeros((B, K), dtype=torch.bool, device=dev)
        size = bbox.bbox_size(boxes)  # DecodeBBox stores BBoxSize of the decoded box
        counts = valid.sum(1)
        adaptive = self.eta < 1
        budget = (1 << 27) if boxes.is_cuda else (1 << 24)  # stored overlaps per chunk
        block = (1 << 24) if boxes.is_cuda else (1 << 18)  # overlaps computed per step
        step = max(1, budget // max(1, K * K))
        for s in range(0, B, step):
            kk = int(counts[s : s + step].max())
            if kk == 0:
                continue
            b, sz, v = boxes[s : s + step, :kk], size[s : s + step, :kk], valid[s : s + step, :kk]
            n = b.shape[0]
            mat = torch.empty((n, kk, kk), dtype=torch.float32 if adaptive else torch.bool, device=dev)
            rows = max(1, block // (n * kk))
            for r in range(0, kk, rows):
                e = min(kk, r + rows)  # rank k only meets ranks < k: the lower triangle
                iou = bbox.jaccard(b[:, r:e, None], b[:, None, :e], sz[:, r:e, None], sz[:, None, :e])
                # Caffe keeps a box while overlap <= threshold (so a NaN overlap drops it)
                mat[:, r:e, :e] = iou if adaptive else ~(iou <= self.nms_threshold)
            thr = torch.full((n,), self.nms_threshold, dtype=torch.float32, device=dev)
            keep_c = torch.zeros((n, kk), dtype=torch.bool, device=dev)
            for k in range(kk):
                if k == 0:
                    keep = v[:, 0]
                else:
                    hit = ~(mat[:, k, :k] <= thr[:, None]) if adaptive else mat[:, k, :k]
                    keep = v[:, k] & ~(keep_c[:, :k] & hit).any(1)
                keep_c[:, k] = keep
                if adaptive:  # each kept box lowers the threshold while it is above 0.5
                    thr = torch.where(keep & (thr > 0.5), thr * self.eta, thr)
            kept[s : s + step, :kk] = keep_c
        return kept


@register("DetectionEvaluate")
class DetectionEvaluate(_SSDLayer):
    """SSD Caffe's ``DetectionEvaluate``: bottoms ``detection`` (1, 1, D, 7) and ``label``
    (1, 1, G, 8); top (1, 1, R, 5) rows: ``[-1, label, num_pos, -1, -1]`` per class, then
    ``[image_id, label, score, tp, fp]`` per detection (see
    :func:`model_libs.evaluation.caffe_ap.detection_evaluate`), in Caffe's row count (rows of
    detections with image id -1 stay zero). With ``name_size_file`` the boxes are compared in
    original-image pixels and, as in Caffe, a running image counter walks the file.
    """

    def __init__(self, layer: caffe_pb2.LayerParameter, bottom_shapes: list[list[int]], phase: str) -> None:
        super().__init__(layer, bottom_shapes, phase)
        self.check_arity(layer, 2, 2)
        p = layer.detection_evaluate_param
        if not p.HasField("num_classes"):
            raise self.fail("detection_evaluate_param.num_classes must be given")
        if not p.overlap_threshold > 0:
            raise self.fail("overlap_threshold must be positive")
        self.num_classes = int(p.num_classes)
        self.background_label_id = int(p.background_label_id)
        self.overlap_threshold = float(p.overlap_threshold)
        self.evaluate_difficult_gt = p.evaluate_difficult_gt
        self.sizes: list[tuple[int, int]] = []
        if p.HasField("name_size_file"):
            self.sizes = read_name_sizes(p.name_size_file)
        self.resize = p.resize_param if p.HasField("resize_param") else None
        self.count = 0  # Caffe's count_: the next line of the name/size file

    def forward(self, det: Tensor, gt: Tensor) -> tuple[Tensor]:
        d = det.detach().reshape(-1, 7).float().cpu().numpy()
        g = gt.detach().reshape(-1, 8).float().cpu().numpy()
        rows = detection_evaluate(
            d,
            g,
            self.num_classes,
            self.background_label_id,
            self.overlap_threshold,
            self.evaluate_difficult_gt,
            sizes=self.sizes or None,
            resize=self.resize,
            start=self.count,
        )
        if self.sizes:
            images = {int(r[0]) for r in d if int(r[0]) != -1}
            self.count = (self.count + len(images)) % len(self.sizes)
        num_pos_classes = self.num_classes - 1  # background_label_id is unsigned: always a class
        total = num_pos_classes + int(np.count_nonzero(d[:, 1] != -1))
        out = np.zeros((total, 5), dtype=np.float32)
        out[: len(rows)] = rows
        return (torch.from_numpy(out).to(det.device).reshape(1, 1, -1, 5),)
