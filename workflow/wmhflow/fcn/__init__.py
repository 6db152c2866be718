"""The FCN stage: network, its inputs, training, inference and mask post-processing."""
