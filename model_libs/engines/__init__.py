"""Deploy without Caffe: caffemodel I/O, weight initialisation and inference engines.

- :mod:`.caffemodel`: read/write/list/check ``.caffemodel`` files;
- :mod:`.init`: fill a net's blobs from its fillers (untrained models without Caffe);
- :mod:`.opencv_engine` / :mod:`.caffe_engine`: run a deploy net with OpenCV DNN or pycaffe;
- :mod:`.detector`: ``Detector`` — images in, labelled pixel boxes out.
"""
