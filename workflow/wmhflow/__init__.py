"""wmhflow: white matter hyperintensity segmentation (Xu et al., MICCAI WMH Challenge 2017) and beyond."""

__version__ = "0.1.0"
