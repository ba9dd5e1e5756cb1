"""Raw videos and metadata -> preprocessed uint8 clips -> batches."""
