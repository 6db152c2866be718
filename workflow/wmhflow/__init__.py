"""wmhflow: white matter hyperintensity segmentation (Xu et al., MICCAI WMH Challenge 2017) and beyond."""

__version__ = "0.2.0"
