"""zsdet's data layer.

* :mod:`.embeddings`: class embeddings from files (tables, word vectors, .npy, NUS-WIDE pickle).
* :mod:`.shipped`: ``zsdet://`` paths of the data files shipped in the repository's ``datasets/``.
* :mod:`.datasets`: the zero-shot detection datasets, registered in detectron2's catalogs when
  ``zsdet.data.datasets`` is imported (``import zsdet`` does it).
* :mod:`.zsd_split`, :mod:`.feature_bank`, :mod:`.mixtures`: the detection pipeline's data pieces.
"""
