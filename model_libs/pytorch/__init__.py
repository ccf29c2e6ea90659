"""The PyTorch engine: the very Caffe nets this toolkit emits, run and trained in PyTorch
with SSD Caffe's semantics, reading and writing ``.caffemodel`` files.

``import model_libs`` never imports this package; importing it needs ``torch`` (the
``torch`` extra, ``torch==2.13.0``). Contracts between its modules:

- ``layers.py``: one ``nn.Module`` per Caffe layer type, registered by type name in
  ``LAYERS`` through ``@register("Type")``. A builder is called as
  ``builder(layer: LayerParameter, bottom_shapes: list[list[int]], phase: str)`` and
  returns a :class:`~model_libs.pytorch.layers.CaffeLayer` whose ``forward(*bottoms)``
  returns a tuple with one tensor per top. The layer's stored blobs are its attributes
  ``blob0``, ``blob1``, ... in Caffe's order: ``nn.Parameter`` for learned blobs,
  buffers for BatchNorm's statistics; ``lr_mult(i)``/``decay_mult(i)`` give each blob's
  ``param { }`` multipliers (Caffe's defaults 1/1 when absent).
- ``net.py``: ``CaffeNet(net: NetParameter, phase="TRAIN"|"TEST")`` keeps the layers whose
  include/exclude rules admit the phase, in prototxt order; data layers (AnnotatedData,
  Data, Input, ``input:``) become named inputs. ``forward(inputs: dict[str, Tensor]) ->
  dict[str, Tensor]`` returns every top by name; ``losses`` lists (top, loss_weight).
  Module names are the Caffe layer names, so the state dict key of blob i of layer L is
  ``layers.L.blob<i>``. Shapes come from :func:`model_libs.summary.summarize`.
- ``weights.py``: state dict <-> caffemodel ``NetParameter`` through
  :mod:`model_libs.engines.caffemodel` (read/write) - one to one, both ways.
- ``ssd_layers.py``: PriorBox-free SSD layers registered in ``LAYERS``: MultiBoxLoss,
  DetectionOutput, DetectionEvaluate, with Caffe's blob formats: the label blob is
  ``(1, 1, G, 8)`` rows ``[item_id, group_label, instance_id, xmin, ymin, xmax, ymax,
  difficult]``; DetectionOutput gives ``(1, 1, D, 7)`` rows ``[image_id, label, score, xmin,
  ymin, xmax, ymax]``; DetectionEvaluate gives ``(1, 1, R, 5)`` rows as Caffe's.
- ``bbox.py``: SSD Caffe's box arithmetic on batched tensors (overlap, encode/decode,
  ``MatchBBox``), float32 operation for operation; used by ``ssd_layers.py``.
- ``transform.py`` (numpy/OpenCV only) and ``data.py``: the AnnotatedData layer's reading
  and augmentation (``transform_param``, ``batch_sampler``) as the project's Caffe does it;
  ``data.py`` yields ``(data (N,3,H,W) float32, label (1,1,G,8))`` batches from DataLoader
  workers, seeded, each DDP rank reading a disjoint share.
- ``solver.py`` / ``trainer.py``: SGD with Caffe's update rule from a ``SolverParameter``;
  training, testing (detection mAP), snapshots (``.caffemodel`` + ``.solverstate``) and
  resume; DDP through ``torchrun``.
"""
