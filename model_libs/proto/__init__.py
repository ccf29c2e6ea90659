"""The project's Caffe schema (``caffe.proto``) and its generated Python bindings.

``caffe_pb2.py`` is generated from ``caffe.proto`` with the pinned ``grpcio-tools`` protoc
(``python -m model_libs.proto.regen``); ``tests/test_proto.py`` fails when it is stale.
"""

from pathlib import Path

PROTO_PATH = Path(__file__).with_name("caffe.proto")
