"""Detection datasets for SSD Caffe: label maps, VOC/COCO/synthetic converters, LMDB I/O.

Records are ``AnnotatedDatum`` protos written the way SSD's ``convert_annoset`` writes them,
so LMDBs made here and by upstream are interchangeable. Submodules import lazily; OpenCV and
lmdb are needed only by the modules that touch images or databases.
"""
