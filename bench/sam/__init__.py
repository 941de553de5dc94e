"""The foundation model: SAM-family backbones, checkpoints, the shared mask decoder and the embedding cache."""
