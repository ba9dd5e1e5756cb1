"""Isolated sign language recognition on WLASL as a DVC pipeline.

Modules follow the data: params -> data (metadata, synthetic, video, preprocess, dataset) -> models -> train ->
metrics -> shuffle -> evaluate -> plots.
"""
