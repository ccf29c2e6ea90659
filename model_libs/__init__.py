"""model_libs: generate, train, evaluate and deploy DSOD detectors on SSD Caffe.

No Caffe is needed to generate nets::

    from model_libs import NetSpec, L, P, caffe_pb2
    from model_libs.dsod import recipe, deploy_net
    net = deploy_net(recipe("DSOD300"))     # a caffe_pb2.NetParameter
"""

from .errors import ModelLibsError
from .netspec import L, NetSpec, P, layers, params, to_proto, to_prototxt
from .proto import caffe_pb2

__version__ = "0.1.0"
__all__ = [
    "ModelLibsError",
    "L",
    "NetSpec",
    "P",
    "layers",
    "params",
    "to_proto",
    "to_prototxt",
    "caffe_pb2",
    "__version__",
]
