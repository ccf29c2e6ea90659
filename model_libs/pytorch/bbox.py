"""SSD Caffe's box arithmetic (``src/caffe/util/bbox_util.cpp``) on batched tensors.

Every function works on float32 tensors whose last axis is ``[xmin, ymin, xmax, ymax]`` and
repeats Caffe's float32 operations in Caffe's order, so overlaps, encodings and decodings are
the same floats Caffe computes (the project's Caffe is built with ``-O2`` for plain x86-64:
no fused multiply-add). Where Caffe loops over boxes, these functions run over whole batches.

Normalised boxes only (coordinates in [0, 1], sizes without Caffe's ``+1``): that is what the
MultiBox loss and the detection output use.
"""

from __future__ import annotations

import torch
from torch import Tensor

# PriorBoxParameter.CodeType
CORNER, CENTER_SIZE, CORNER_SIZE = 1, 2, 3
# MultiBoxLossParameter.MatchType
BIPARTITE, PER_PREDICTION = 0, 1


def bbox_size(b: Tensor) -> Tensor:
    """``BBoxSize`` (normalised): width * height, 0 for a box with xmax < xmin or ymax < ymin."""
    w = b[..., 2] - b[..., 0]
    h = b[..., 3] - b[..., 1]
    bad = (b[..., 2] < b[..., 0]) | (b[..., 3] < b[..., 1])
    return torch.where(bad, torch.zeros_like(w), w * h)


def jaccard(a: Tensor, b: Tensor, size_a: Tensor | None = None, size_b: Tensor | None = None) -> Tensor:
    """``JaccardOverlap`` (normalised) of broadcast boxes ``a`` and ``b``.

    ``size_a``/``size_b`` are the boxes' stored sizes (``BBoxSize`` when omitted), as Caffe
    keeps them in ``NormalizedBBox.size``. No intersection, or an empty one, gives 0.
    """
    if size_a is None:
        size_a = bbox_size(a)
    if size_b is None:
        size_b = bbox_size(b)
    # Caffe first tests whether the boxes are apart; apart boxes always have iw < 0 or ih < 0,
    # so testing iw > 0 and ih > 0 alone gives the same zeros.
    iw = torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])
    ih = torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])
    inter = iw * ih
    iou = inter / (size_a + size_b - inter)
    return torch.where((iw > 0) & (ih > 0), iou, torch.zeros_like(iou))


def _center_size(b: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    w = b[..., 2] - b[..., 0]
    h = b[..., 3] - b[..., 1]
    # Caffe: (xmin + xmax) / 2. in double, stored as float: the same float as float / 2.
    cx = (b[..., 0] + b[..., 2]) / 2
    cy = (b[..., 1] + b[..., 3]) / 2
    return w, h, cx, cy


def encode(prior: Tensor, var: Tensor, box: Tensor, code_type: int, variance_in_target: bool) -> Tensor:
    """``EncodeBBox``: the regression target of ``box`` relative to ``prior`` (broadcast).

    ``variance_in_target`` is ``encode_variance_in_target``: when true the variances are not
    applied here (the caller divides prediction and target by them, as Caffe does).
    """
    if code_type == CORNER:
        d = box - prior
        return d if variance_in_target else d / var
    pw, ph, pcx, pcy = _center_size(prior)
    if code_type == CENTER_SIZE:
        bw, bh, bcx, bcy = _center_size(box)
        x = (bcx - pcx) / pw
        y = (bcy - pcy) / ph
        w = torch.log(bw / pw)
        h = torch.log(bh / ph)
        out = torch.stack([x, y, w, h], dim=-1)
        return out if variance_in_target else out / var
    if code_type == CORNER_SIZE:
        size = torch.stack([pw, ph, pw, ph], dim=-1)
        out = (box - prior) / size
        return out if variance_in_target else out / var
    raise ValueError(f"unknown code_type {code_type}")


def decode(prior: Tensor, var: Tensor, loc: Tensor, code_type: int, variance_in_target: bool) -> Tensor:
    """``DecodeBBox`` without clipping: the box that ``loc`` predicts relative to ``prior``."""
    if code_type == CORNER:
        return prior + loc if variance_in_target else prior + var * loc
    pw, ph, pcx, pcy = _center_size(prior)
    if code_type == CENTER_SIZE:
        if variance_in_target:
            cx = loc[..., 0] * pw + pcx
            cy = loc[..., 1] * ph + pcy
            w = torch.exp(loc[..., 2]) * pw
            h = torch.exp(loc[..., 3]) * ph
        else:
            cx = var[..., 0] * loc[..., 0] * pw + pcx
            cy = var[..., 1] * loc[..., 1] * ph + pcy
            w = torch.exp(var[..., 2] * loc[..., 2]) * pw
            h = torch.exp(var[..., 3] * loc[..., 3]) * ph
        return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
    if code_type == CORNER_SIZE:
        size = torch.stack([pw, ph, pw, ph], dim=-1)
        return prior + loc * size if variance_in_target else prior + var * loc * size
    raise ValueError(f"unknown code_type {code_type}")


def match(
    pred: Tensor,
    gt: Tensor,
    gt_valid: Tensor,
    match_type: int,
    overlap_threshold: float,
    ignore_cross_boundary: bool = False,
) -> tuple[Tensor, Tensor]:
    """``MatchBBox`` for a batch: predictions ``pred`` (B, P, 4) against ground truth ``gt``
    (B, G, 4) of which ``gt_valid`` (B, G) are real.

    Returns ``(index, overlap)``, both (B, P): the matched ground-truth column (-1 none, -2 a
    cross-boundary prediction when ``ignore_cross_boundary``) and Caffe's ``match_overlaps``.

    Caffe's rules, kept exactly: only overlaps above 1e-6 count; the bipartite stage repeatedly
    takes the largest remaining overlap over unmatched predictions and unused ground truth
    (strictly larger wins, so ties go to the lowest prediction, then the lowest ground truth)
    and records that overlap; ``PER_PREDICTION`` then gives every still unmatched prediction
    its best ground truth among those with overlap ``>= overlap_threshold`` (lowest index on
    ties). A prediction's overlap is otherwise its largest overlap with any ground truth.
    """
    B, P, _ = pred.shape
    G = gt.shape[1]
    index = torch.full((B, P), -1, dtype=torch.long, device=pred.device)
    if G == 0:
        return index, torch.zeros((B, P), dtype=pred.dtype, device=pred.device)
    ov = jaccard(pred[:, :, None, :], gt[:, None, :, :])  # (B, P, G)
    # Caffe compares the float overlap with the double 1e-6; no float lies between 1e-6 and
    # its float rounding, so the float comparison decides alike.
    present = (ov > 1e-6) & gt_valid[:, None, :]
    if ignore_cross_boundary:
        cross = ((pred < 0) | (pred > 1)).any(-1)
        index[cross] = -2
        present &= ~cross[:, :, None]
    score = torch.where(present, ov, torch.full_like(ov, -1.0))
    overlap = score.amax(-1).clamp_min(0)  # max over present overlaps, 0 when none

    # Bipartite stage, all images at once. For each ground truth keep its best free prediction
    # (first index on ties); the global pick is the largest of those, ties to the lowest
    # (prediction, ground truth) pair - Caffe's scan order.
    free_row = index == -1
    free_col = gt_valid.clone()
    col_val, col_row = score.max(dim=1)  # (B, G)
    col_val = torch.where(free_col, col_val, torch.full_like(col_val, -1.0))
    gidx = torch.arange(G, device=pred.device)
    bidx = torch.arange(B, device=pred.device)
    big = torch.iinfo(torch.long).max
    for _ in range(G):
        best = col_val.amax(1)  # (B,)
        found = best > -1
        if not bool(found.any()):
            break
        tie = (col_val == best[:, None]) & free_col & found[:, None]
        key = torch.where(tie, col_row * G + gidx, torch.full_like(col_row, big)).amin(1)
        key = torch.where(found, key, torch.zeros_like(key))
        i, j = key // G, key % G
        b = bidx[found]
        i, j = i[found], j[found]
        index[b, i] = j
        overlap[b, i] = best[found]
        free_row[b, i] = False
        free_col[b, j] = False
        col_val[b, j] = -1.0
        # Ground truth whose best free prediction was just taken: find the next best.
        stale = free_col & (col_row == torch.where(found, key // G, torch.full_like(key, -1))[:, None])
        if bool(stale.any()):
            sb, sj = stale.nonzero(as_tuple=True)
            s = score[sb, :, sj]  # (A, P)
            s = torch.where(free_row[sb], s, torch.full_like(s, -1.0))
            v, r = s.max(dim=1)
            col_val[sb, sj] = v
            col_row[sb, sj] = r

    if match_type == PER_PREDICTION:
        above = present & (ov >= overlap_threshold)
        cand = torch.where(above, ov, torch.full_like(ov, -1.0))
        v, j = cand.max(dim=-1)  # first index on ties
        take = (index == -1) & (v > -1)
        index = torch.where(take, j, index)
        overlap = torch.where(take, v, overlap)
    elif match_type != BIPARTITE:
        raise ValueError(f"unknown match_type {match_type}")
    return index, overlap
