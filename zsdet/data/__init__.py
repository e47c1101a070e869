"""zsdet's data layer (imports only :mod:`zsdet.utils`; ``docs/architecture.md``).

* :mod:`.embeddings` (with :mod:`.embedding_lookup`): class embeddings from files (tables, word
  vectors, .npy, NUS-WIDE pickle).
* :mod:`.shipped`: ``zsdet://`` paths of the data files shipped in the repository's ``datasets/``.
* :mod:`.datasets`: the zero-shot detection datasets, registered in detectron2's catalogs when
  ``zsdet.data.datasets`` is imported (``import zsdet`` does it).
* :mod:`.zsd_split`: :class:`ZeroShotSplit`, the one seen / unseen class-split type.
* :mod:`.feature_bank`, :mod:`.mixtures`, :mod:`.roi_stream`, :mod:`.row_sampling`: the detection
  pipeline's RoI data (bank parts, mixtures, the generator's streamed source, per-class caps).
* :mod:`.feature_source`: the ``FeatureSource`` protocol the generator trains on.
* :mod:`.mlzsl`: the multi-label classification benchmarks' data.
* :mod:`.train_stream`, :mod:`.seeded_rng`: the detector's training batches and every random draw
  as a function of (seed, keys), ``derive_seed`` and its fixed keys, for exact resume.
"""
