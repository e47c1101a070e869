"""zsdet's data layer.

* :mod:`.embeddings`: class embeddings from files (tables, word vectors, .npy, NUS-WIDE pickle).
* :mod:`.shipped`: ``zsdet://`` paths of the data files shipped in the repository's ``datasets/``.
* :mod:`.datasets`: the zero-shot detection datasets, registered in detectron2's catalogs when
  ``zsdet.data.datasets`` is imported (``import zsdet`` does it).
* :mod:`.zsd_split`, :mod:`.feature_bank`, :mod:`.mixtures`, :mod:`.roi_stream`: the detection
  pipeline's data pieces (RoI bank parts, mixtures, the generator's streamed RoI source).
* :mod:`.train_stream`, :mod:`.seeded_rng`: the detector's training batches and every random draw
  of training and RoI extraction as functions of (seed, iteration / image id), for exact resume.
"""
