"""The PyTorch data path's loader: seeding, DDP shares, Caffe's record order, resuming, the
decoded-image cache, worker processes, and clear errors for bad LMDBs and parameters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model_libs.dsod.data_layer import ssd_batch_sampler, train_transform
from model_libs.errors import ModelLibsError
from model_libs.proto import caffe_pb2
from tests.caffe_support import annotated_datum, scene, write_lmdb
from tests.data_engines import data_layer, data_net

torch = pytest.importorskip("torch")
from model_libs.pytorch.data import AnnotatedDataset, batches, make_loader  # noqa: E402

pytestmark = pytest.mark.torch

REPO = Path(__file__).resolve().parents[1]
WARP32 = {"resize_mode": caffe_pb2.ResizeParameter.WARP, "height": 32, "width": 32}


def numbered_lmdb(path: Path, n: int) -> Path:
    """n records; record k has one box whose label is k + 1 (so a label blob names records)."""
    return write_lmdb(path, _records(n))


def layer_for(tmp: Path, lmdb: Path, transform: dict, sampler=None, batch: int = 4, phase: str = "TRAIN"):
    return data_layer(data_net(tmp, lmdb, transform, sampler, batch=batch, phase=phase))


def ssd_layer(tmp: Path, n: int = 6, batch: int = 4):
    lmdb = numbered_lmdb(tmp / "lmdb", n)
    return layer_for(tmp, lmdb, train_transform(64, 64), ssd_batch_sampler(), batch)


def records_of(label: torch.Tensor) -> list[int]:
    """Record numbers of a batch, in order (one box per record, label k + 1)."""
    rows = label.reshape(-1, 8).numpy()
    return [int(r[1]) - 1 for r in rows]


def same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_same_seed_same_batches_whatever_the_workers(tmp_path):
    layer = ssd_layer(tmp_path)
    inline = list(make_loader(layer, seed=7, num_workers=0, num_batches=5))
    workers = list(make_loader(layer, seed=7, num_workers=2, num_batches=5))
    assert all(same(a, b) for a, b in zip(inline, workers))
    other = list(make_loader(layer, seed=8, num_workers=0, num_batches=5))
    assert not any(torch.equal(a[0], b[0]) for a, b in zip(inline, other))


def test_each_batch_and_each_pass_draws_anew(tmp_path):
    # 4 records in batches of 4: every batch holds the same records, augmented differently
    lmdb = numbered_lmdb(tmp_path / "lmdb", 4)
    layer = layer_for(tmp_path, lmdb, train_transform(64, 64), ssd_batch_sampler(), 4)
    ds = AnnotatedDataset(layer, seed=3)
    datas = [ds[b][0] for b in range(6)]
    for i in range(6):
        for j in range(i + 1, 6):
            assert not torch.equal(datas[i], datas[j])


def test_reads_in_key_order_looping_as_caffe(tmp_path):
    lmdb = numbered_lmdb(tmp_path / "lmdb", 5)
    ds = AnnotatedDataset(layer_for(tmp_path, lmdb, {"resize_param": WARP32}, batch=3))
    assert [records_of(ds[b][1]) for b in range(4)] == [[0, 1, 2], [3, 4, 0], [1, 2, 3], [4, 0, 1]]
    assert len(ds) == 2  # batches in one pass over the 5 records


def test_ddp_ranks_read_disjoint_shares_that_cover_the_lmdb(tmp_path):
    lmdb = numbered_lmdb(tmp_path / "lmdb", 11)
    layer = layer_for(tmp_path, lmdb, {"resize_param": WARP32}, batch=2)
    seen = []
    for rank in range(3):
        ds = AnnotatedDataset(layer, rank=rank, world_size=3)
        # one pass (and a bit) over the rank's share: records rank, rank + 3, ...
        recs = [r for b in range(len(ds)) for r in records_of(ds[b][1])]
        share = list(range(rank, 11, 3))
        assert recs[: len(share)] == share
        seen.append(set(recs))
    assert set.union(*seen) == set(range(11))
    assert all(not (seen[i] & seen[j]) for i in range(3) for j in range(i + 1, 3))


def test_loader_resumes_at_a_batch(tmp_path):
    layer = ssd_layer(tmp_path)
    ds = AnnotatedDataset(layer, seed=2)
    resumed = list(make_loader(layer, seed=2, num_workers=0, start_batch=3, num_batches=2))
    assert same(resumed[0], ds[3]) and same(resumed[1], ds[4])


def test_endless_loader_keeps_going(tmp_path):
    layer = ssd_layer(tmp_path, n=2, batch=2)
    it = iter(make_loader(layer, num_workers=1))
    shapes = {tuple(next(it)[0].shape) for _ in range(7)}  # 7 batches from 2 records
    assert shapes == {(2, 3, 64, 64)}


def test_decoded_image_cache_changes_nothing(tmp_path):
    layer = ssd_layer(tmp_path)
    cached = AnnotatedDataset(layer, seed=4)
    partly = AnnotatedDataset(layer, seed=4, cache_bytes=2 * 40 * 48 * 3)
    uncached = AnnotatedDataset(layer, seed=4, cache_bytes=0)
    assert len(cached.cache) == 6 and len(partly.cache) == 2 and not uncached.cache
    for b in range(3):
        assert same(cached[b], uncached[b]) and same(partly[b], uncached[b])


def test_phase_decides_the_crop_offsets(tmp_path):
    box = (1, 0.0, 0.0, 1.0, 1.0)
    img = np.arange(40 * 48 * 3, dtype=np.uint32).reshape(40, 48, 3).astype(np.uint8)
    lmdb = write_lmdb(tmp_path / "lmdb", [annotated_datum(img, [box])])
    t = {"crop_size": 16}
    test = AnnotatedDataset(layer_for(tmp_path, lmdb, t, batch=8, phase="TEST"), "TEST")[0][0]
    train = AnnotatedDataset(layer_for(tmp_path, lmdb, t, batch=8), "TRAIN")[0][0]
    centre = img[12:28, 16:32].transpose(2, 0, 1).astype(np.float32)
    assert all(np.array_equal(x.numpy(), centre) for x in test)
    assert len({x.numpy().tobytes() for x in train}) > 1  # random offsets
    lab = AnnotatedDataset(layer_for(tmp_path, lmdb, t, batch=1, phase="TEST"), "TEST")[0][1]
    # the box follows the crop window: [-16/16, -12/16, ...] clipped to the unit square
    np.testing.assert_allclose(lab.reshape(-1, 8)[0, 3:7].numpy(), [0, 0, 1, 1])


def test_transform_module_needs_no_torch():
    code = "import sys; sys.modules['torch'] = None; import model_libs.pytorch.transform; print('ok')"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


# -- errors


def test_missing_lmdb_is_one_clear_error(tmp_path):
    layer = layer_for(tmp_path, tmp_path / "nowhere", {"resize_param": WARP32})
    with pytest.raises(ModelLibsError, match=r"nowhere: LMDB not found"):
        AnnotatedDataset(layer)


def test_corrupt_lmdb_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad_lmdb"
    bad.mkdir()
    (bad / "data.mdb").write_bytes(b"this is no database" * 500)
    with pytest.raises(ModelLibsError, match=r"bad_lmdb/data.mdb: not an LMDB"):
        AnnotatedDataset(layer_for(tmp_path, bad, {"resize_param": WARP32}))
    # a cut file would be a SIGBUS once mapped: refused by its header check first
    cut = numbered_lmdb(tmp_path / "cut_lmdb", 40)
    data = cut / "data.mdb"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(ModelLibsError, match=r"cut_lmdb/data.mdb: truncated LMDB"):
        AnnotatedDataset(layer_for(tmp_path, cut, {"resize_param": WARP32}))


def test_corrupt_record_names_the_lmdb_and_the_key(tmp_path):
    lmdb = write_lmdb(tmp_path / "lmdb", [b"\xff\xff not a protobuf"])
    with pytest.raises(ModelLibsError, match=r"lmdb: record 00000000: not an AnnotatedDatum"):
        AnnotatedDataset(layer_for(tmp_path, lmdb, {"resize_param": WARP32}))


def test_empty_lmdb_and_empty_share_are_errors(tmp_path):
    empty = write_lmdb(tmp_path / "empty", [])
    with pytest.raises(ModelLibsError, match=r"empty: the LMDB holds no records"):
        AnnotatedDataset(layer_for(tmp_path, empty, {"resize_param": WARP32}))
    two = numbered_lmdb(tmp_path / "two", 2)
    with pytest.raises(ModelLibsError, match=r"2 records leave none to rank 2 of 3"):
        AnnotatedDataset(layer_for(tmp_path, two, {"resize_param": WARP32}), rank=2, world_size=3)


@pytest.mark.parametrize(
    "transform, message",
    [
        ({"noise_param": {"hist_eq": True}}, "noise_param is not supported"),
        ({"force_color": True, "force_gray": True}, "both force_color and force_gray"),
        ({"resize_param": {"height": 32}}, "resize_param needs a height and a width"),
        ({"mean_value": [1, 2]}, "give 1 value or 3"),
    ],
)
def test_bad_parameters_are_clear_errors(tmp_path, transform, message):
    lmdb = numbered_lmdb(tmp_path / "lmdb", 2)
    with pytest.raises(ModelLibsError, match=message):
        AnnotatedDataset(layer_for(tmp_path, lmdb, transform))[0]


def test_images_of_different_sizes_need_a_resize(tmp_path):
    recs = [annotated_datum(scene(40, 48, []), []), annotated_datum(scene(30, 48, []), [])]
    lmdb = write_lmdb(tmp_path / "lmdb", recs)
    with pytest.raises(ModelLibsError, match=r"images of one batch give input shapes"):
        AnnotatedDataset(layer_for(tmp_path, lmdb, {}, batch=2))[0]


def test_readers_of_one_lmdb_share_it_and_see_it_rebuilt(tmp_path):
    from model_libs.datasets.lmdb_io import count_records, iter_records
    from model_libs.datasets.lmdb_io import write_lmdb as build_lmdb

    path = tmp_path / "lmdb"
    build_lmdb(path, [(f"{k:08d}", rec) for k, rec in enumerate(_records(3))])
    a = AnnotatedDataset(layer_for(tmp_path, path, {"resize_param": WARP32}, batch=1))
    b = AnnotatedDataset(layer_for(tmp_path, path, {"resize_param": WARP32}, batch=1), "TEST")
    assert count_records(path) == 3 and len(list(iter_records(path))) == 3
    assert records_of(a[2][1]) == records_of(b[2][1]) == [2]
    build_lmdb(path, [(f"{k:08d}", rec) for k, rec in enumerate(_records(5))], force=True)
    assert count_records(path) == 5
    assert records_of(
        AnnotatedDataset(layer_for(tmp_path, path, {"resize_param": WARP32}, batch=1))[4][1]
    ) == [4]


def _records(n: int) -> list[bytes]:
    recs = []
    for k in range(n):
        box = (k + 1, 0.2, 0.2, 0.6, 0.7)
        recs.append(annotated_datum(scene(40, 48, [box]), [box], ext=".png"))
    return recs


def test_trainer_batches_pick_the_phase_and_name_the_tops(tmp_path):
    from model_libs.summary import load_net

    lmdb = numbered_lmdb(tmp_path / "lmdb", 3)
    train = data_net(tmp_path, lmdb, {"resize_param": WARP32}, batch=2, name="train.prototxt")
    test = data_net(
        tmp_path, Path("lmdb"), {"resize_param": WARP32}, batch=1, phase="TEST", name="test.prototxt"
    )
    net = load_net(train)
    net.layer.add().CopyFrom(load_net(test).layer[0])  # a TEST data layer with a relative source
    net.layer[1].top[:] = ["img", "gt"]
    got = batches(net, "TEST", workers=0, base=tmp_path)
    first = [next(got) for _ in range(4)]
    assert set(first[0]) == {"img", "gt"} and first[0]["img"].shape == (1, 3, 32, 32)
    assert [records_of(b["gt"]) for b in first] == [[0], [1], [2], [0]]  # endless, in order
    train_batch = next(batches(net, "TRAIN", workers=0))
    assert set(train_batch) == {"data", "label"} and train_batch["data"].shape[0] == 2
    with pytest.raises(ModelLibsError, match=r"LMDB not found"):
        batches(net, "TEST", workers=0)  # the relative source is not in the working folder
