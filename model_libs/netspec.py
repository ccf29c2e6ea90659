"""A Caffe net specification in Python, with pycaffe's ``caffe.net_spec`` interface.

Nets are described by calling ``L.<LayerType>(*bottoms, **params)`` and assigning the
returned tops to a :class:`NetSpec`; :meth:`NetSpec.to_proto` gives a ``NetParameter``.
Keyword arguments are placed exactly as pycaffe places them, so the emitted text and the
automatic layer/top names (``Convolution1``, ``BatchNorm3``...) are identical to what
pycaffe on the SSD Caffe fork would produce:

- keys ending in ``param`` (``param``, ``transform_param``, ...) go on the LayerParameter;
- other keys go into the layer type's own ``<type>_param`` message when it has that field,
  else on the LayerParameter (``include``, ``name``, ``propagate_down``...);
- ``ntop`` sets the number of tops, ``in_place=True`` reuses the bottom as the top;
- lists fill repeated fields, dicts fill sub-messages, lists of dicts add repeated messages.

Example::

    from model_libs import NetSpec, L, P
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 32, 32]))
    n.conv = L.Convolution(n.data, num_output=8, kernel_size=3, weight_filler=dict(type="xavier"))
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    print(n.to_proto())
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Any

from google.protobuf import text_format

from .proto import caffe_pb2


def param_name_dict() -> dict[str, str]:
    """Map layer type names to their ``*_param`` field prefix (``"Convolution" -> "convolution"``).

    Derived from the schema as pycaffe does: a LayerParameter field ``foo_param`` of message
    type ``BarParameter`` makes layer type ``Bar`` use ``foo_param``.
    """
    layer = caffe_pb2.LayerParameter()
    names = {}
    for field in layer.DESCRIPTOR.fields:
        if field.name.endswith("_param") and field.message_type is not None:
            type_name = field.message_type.name
            if type_name.endswith("Parameter"):
                names[type_name[: -len("Parameter")]] = field.name[: -len("_param")]
    return names


_param_names = param_name_dict()


def assign_proto(proto: Any, name: str, val: Any) -> None:
    """Assign a Python value to field ``name`` of ``proto``, recursing into dicts and lists."""
    is_repeated = hasattr(getattr(proto, name), "extend")
    if is_repeated and not isinstance(val, list):
        val = [val]
    if isinstance(val, list):
        if val and isinstance(val[0], dict):
            for item in val:
                sub = getattr(proto, name).add()
                for k, v in item.items():
                    assign_proto(sub, k, v)
        else:
            getattr(proto, name).extend(val)
    elif isinstance(val, dict):
        for k, v in val.items():
            assign_proto(getattr(proto, name), k, v)
    else:
        setattr(proto, name, val)


class Top:
    """One output blob of a layer (``fn``), the ``n``-th of its tops."""

    def __init__(self, fn: Function, n: int):
        self.fn = fn
        self.n = n

    def to_proto(self) -> caffe_pb2.NetParameter:
        """A NetParameter holding this top and everything it depends on."""
        return to_proto(self)

    def _to_proto(self, layers, names, autonames) -> None:
        self.fn._to_proto(layers, names, autonames)


class Function:
    """A layer: its type, its bottoms and its parameters, before naming."""

    def __init__(self, type_name: str, inputs: tuple, params: dict):
        for i, inp in enumerate(inputs):
            if not isinstance(inp, Top):
                raise TypeError(
                    f"{type_name} input {i} is not a Top (got {type(inp).__name__}); "
                    "pass the blobs returned by other layers"
                )
        self.type_name = type_name
        self.inputs = inputs
        self.params = dict(params)
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _get_name(self, names, autonames) -> str:
        if self not in names and self.ntop > 0:
            names[self] = self._get_top_name(self.tops[0], names, autonames)
        elif self not in names:
            autonames[self.type_name] += 1
            names[self] = self.type_name + str(autonames[self.type_name])
        return names[self]

    def _get_top_name(self, top: Top, names, autonames) -> str:
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = top.fn.type_name + str(autonames[top.fn.type_name])
        return names[top]

    def _to_proto(self, layers, names, autonames) -> None:
        if self in layers:
            return
        bottom_names = []
        for inp in self.inputs:
            inp._to_proto(layers, names, autonames)
            bottom_names.append(layers[inp.fn].top[inp.n])
        layer = caffe_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottom_names)
        if self.in_place:
            layer.top.extend(layer.bottom)
        else:
            for top in self.tops:
                layer.top.append(self._get_top_name(top, names, autonames))
        layer.name = self._get_name(names, autonames)
        for k, v in self.params.items():
            if k.endswith("param"):
                assign_proto(layer, k, v)
            else:
                try:
                    assign_proto(getattr(layer, _param_names[self.type_name] + "_param"), k, v)
                except (AttributeError, KeyError):
                    assign_proto(layer, k, v)
        layers[self] = layer


class NetSpec:
    """An ordered collection of named tops; assigning a top names it (and its layer)."""

    def __init__(self):
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name: str, value: Top) -> None:
        self.tops[name] = value

    def __getattr__(self, name: str) -> Top:
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setitem__(self, key: str, value: Top) -> None:
        self.__setattr__(key, value)

    def __getitem__(self, item: str) -> Top:
        return self.tops[item]

    def __delitem__(self, name: str) -> None:
        del self.tops[name]

    def __contains__(self, name: str) -> bool:
        return name in self.tops

    def keys(self) -> list[str]:
        return list(self.tops.keys())

    def vals(self) -> list[Top]:
        return list(self.tops.values())

    def update(self, name: str, params: dict) -> None:
        """Add or replace parameters of the layer that produced top ``name``."""
        self.tops[name].fn.params.update(params)

    def to_proto(self) -> caffe_pb2.NetParameter:
        """The NetParameter of every named top, layers in dependency order."""
        names = {v: k for k, v in self.tops.items()}
        autonames: Counter = Counter()
        layers: OrderedDict = OrderedDict()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


def to_proto(*tops: Top | Function) -> caffe_pb2.NetParameter:
    """A NetParameter holding ``tops`` and all layers they depend on (auto-named).

    A layer without tops (``ntop=0``, e.g. Silence) may be passed as its Function.
    """
    layers: OrderedDict = OrderedDict()
    autonames: Counter = Counter()
    for top in tops:
        (top if isinstance(top, Function) else top.fn)._to_proto(layers, {}, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


class Layers:
    """``L.Type(*bottoms, **params)`` makes a layer of that type; returns its top(s)."""

    def __getattr__(self, name: str):
        def layer_fn(*args, **kwargs):
            fn = Function(name, args, kwargs)
            if fn.ntop == 0:
                return fn
            if fn.ntop == 1:
                return fn.tops[0]
            return fn.tops

        return layer_fn


class Parameters:
    """``P.Pooling.MAX`` is ``caffe_pb2.PoolingParameter.MAX`` (enum values by type name)."""

    def __getattr__(self, name: str):
        try:
            message = getattr(caffe_pb2, name + "Parameter")
        except AttributeError:
            raise AttributeError(f"no message {name}Parameter in the Caffe schema") from None

        class Param:
            def __getattr__(self, param_name: str):
                return getattr(message, param_name)

        return Param()


layers = Layers()
params = Parameters()
L = layers
P = params


def to_prototxt(message: Any) -> str:
    """Text-format a NetParameter/SolverParameter exactly as ``print(msg)`` does in pycaffe."""
    return text_format.MessageToString(message)
