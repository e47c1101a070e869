"""Multi-label zero-shot classification data: the benchmark of a config (classes, embeddings, files),
HDF5 feature files (streamed), source concatenation and a generated benchmark in the real formats."""
from .benchmark import MLZSLBenchmark, load_benchmark, open_source
from .concat import ConcatSource
from .h5_features import H5FeatureSource, open_feature_file, to_signed_labels
from .synthetic import SyntheticBenchmarkSpec, synthetic_benchmark_paths, write_synthetic_benchmark

__all__ = ["MLZSLBenchmark", "load_benchmark", "open_source", "ConcatSource", "H5FeatureSource", "open_feature_file", "to_signed_labels",
           "SyntheticBenchmarkSpec", "synthetic_benchmark_paths", "write_synthetic_benchmark"]
