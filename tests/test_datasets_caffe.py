"""Interoperability with SSD Caffe itself: its AnnotatedDataLayer reads our LMDB.

Marked ``caffe``: needs a built SSD Caffe with pycaffe, the one the toolkit uses
(``CAFFE_ROOT`` or the project's build: the ``caffe_install`` fixture of conftest.py);
``CAFFE_LIB_DIR`` adds a folder holding ``libcaffe.so`` to the loader path. Skipped when no
Caffe is found, which under CI is a failure (the guard in ``conftest.py``).

Caffe runs in a subprocess: pycaffe registers its own ``caffe.proto`` in protobuf's default
descriptor pool, which clashes with ``model_libs.proto`` in one process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from model_libs.datasets.annotated_datum import decode_annotated_datum
from model_libs.datasets.lmdb_io import iter_records
from model_libs.datasets.synthetic import build_synthetic_lmdbs

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.caffe

READER = textwrap.dedent(
    """
    import sys, types
    def stub(name, **attrs):  # pycaffe.io's optional imaging deps, unused here
        mod = types.ModuleType(name); mod.__dict__.update(attrs); sys.modules[name] = mod
    for name in ("skimage", "skimage.io", "skimage.transform", "scipy", "scipy.ndimage"):
        try:
            __import__(name)
        except ImportError:
            stub(name, zoom=None, resize=None)
    try:
        import six  # noqa: F401
    except ImportError:
        stub("six", string_types=(str,), moves=types.SimpleNamespace(range=range, zip=zip))
    import numpy as np
    import caffe
    caffe.set_mode_cpu()
    net = caffe.Net(sys.argv[1], caffe.TEST)
    net.forward()
    np.save(sys.argv[2], net.blobs["label"].data.reshape(-1, 8))
    np.save(sys.argv[3], net.blobs["data"].data)
    """
)

NET = """
name: "read"
layer {{
  name: "data" type: "AnnotatedData" top: "data" top: "label"
  include {{ phase: TEST }}
  transform_param {{
    resize_param {{ prob: 1 resize_mode: WARP height: 300 width: 300 interp_mode: LINEAR }}
  }}
  data_param {{ source: "{source}" batch_size: {batch} backend: LMDB }}
  annotated_data_param {{ label_map_file: "{labelmap}" }}
}}
"""


def test_caffe_annotated_data_layer_reads_our_lmdb(tmp_path, caffe_install):
    assert caffe_install.python_dir is not None, f"{caffe_install.root}: no pycaffe"
    pydir = caffe_install.python_dir
    libdirs = [str(caffe_install.library.parent)] if caffe_install.library else []
    if os.environ.get("CAFFE_LIB_DIR"):
        libdirs.insert(0, os.environ["CAFFE_LIB_DIR"])
    b = build_synthetic_lmdbs(tmp_path / "syn", seed=3, n_train=2, n_test=4)
    net = tmp_path / "net.prototxt"
    net.write_text(NET.format(source=b.test_lmdb, batch=4, labelmap=b.labelmap))
    (tmp_path / "reader.py").write_text(READER)
    env = dict(os.environ, PYTHONPATH=str(pydir), GLOG_minloglevel="2")
    env["LD_LIBRARY_PATH"] = os.pathsep.join([*libdirs, env.get("LD_LIBRARY_PATH", "")])
    r = subprocess.run(
        [sys.executable, str(tmp_path / "reader.py"), str(net), str(tmp_path / "label.npy"),
         str(tmp_path / "data.npy")],
        env=env, capture_output=True, text=True, check=False, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    label = np.load(tmp_path / "label.npy")
    data = np.load(tmp_path / "data.npy")
    want = []
    for i, (_key, raw) in enumerate(iter_records(b.test_lmdb)):
        img, boxes = decode_annotated_datum(raw)
        seen: dict[int, int] = {}
        for box in boxes:
            inst = seen.get(box.label, 0)
            seen[box.label] = inst + 1
            want.append([i, box.label, inst, box.xmin, box.ymin, box.xmax, box.ymax, box.difficult])
        resized = cv2.resize(img, (300, 300), interpolation=cv2.INTER_LINEAR)
        assert np.array_equal(data[i], resized.transpose(2, 0, 1).astype(np.float32))
    # Caffe's label blob rows: item, label, instance, xmin, ymin, xmax, ymax, difficult
    assert np.array_equal(label, np.array(want, np.float32))
