"""Semantic-projection classifier: the classic embedding baseline for zero-shot detection.

A box feature is projected into the class-embedding space and scored by cosine similarity with
each class embedding; background gets its own learned embedding. Trained on seen classes only,
it scores unseen classes through their embeddings alone, which makes it the baseline the
synthesis-retrained linear classifier is compared with on the same detector.
"""
import torch
import torch.nn.functional as F
from torch import nn


class SemanticProjectionClassifier(nn.Module):
    """Logits ``cos(P x, e_k) / T`` for every class k, plus a background logit last.

    Args:
        feature_dim: d, size of the box feature.
        class_embeddings: (K, a) float tensor, one row per class in ``thing_classes`` order.
        temperature: T > 0, divides the cosine similarities.

    ``forward(x: (N, d)) -> (N, K + 1)`` logits, background in the last column as detectron2's
    ``FastRCNNOutputLayers`` expects.
    """

    def __init__(self, feature_dim: int, class_embeddings: torch.Tensor, temperature: float = 0.05):
        super().__init__()
        if class_embeddings.dim() != 2:
            raise ValueError(f"class_embeddings must be (K, a), got {tuple(class_embeddings.shape)}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        emb_dim = class_embeddings.shape[1]
        self.projection = nn.Linear(feature_dim, emb_dim)
        self.register_buffer("class_embeddings", F.normalize(class_embeddings.float(), dim=1))
        self.background_embedding = nn.Parameter(torch.randn(emb_dim) / emb_dim**0.5)
        self.temperature = temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.projection(x), dim=1)
        emb = torch.cat([self.class_embeddings, F.normalize(self.background_embedding, dim=0)[None]])
        return z @ emb.t() / self.temperature
