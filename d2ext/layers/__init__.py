"""Building blocks used by more than one project."""
from .point_sampling import (
    binary_uncertainty,
    margin_uncertainty,
    point_sample,
    uncertain_grid_points,
    uncertain_points_with_randomness,
)

__all__ = [
    "point_sample",
    "binary_uncertainty",
    "margin_uncertainty",
    "uncertain_points_with_randomness",
    "uncertain_grid_points",
]
