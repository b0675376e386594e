"""Building blocks used by more than one project."""
from .batch_norm_folding import fold_batch_norms
from .losses import masked_cross_entropy
from .point_sampling import (
    binary_uncertainty,
    margin_uncertainty,
    point_sample,
    uncertain_grid_points,
    uncertain_points_with_randomness,
)

__all__ = [
    "fold_batch_norms",
    "masked_cross_entropy",
    "point_sample",
    "binary_uncertainty",
    "margin_uncertainty",
    "uncertain_points_with_randomness",
    "uncertain_grid_points",
]
