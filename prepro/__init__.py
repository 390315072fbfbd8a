"""faceblocks preprocessing: raw face images to prior-attention HDF5 shards.

Nothing heavy is imported here: dlib, OpenCV and h5py load inside the modules that use them.
"""

__version__ = "0.1.0"
