"""The data layer: samples and tasks, the dataset contract and its families, image I/O, splits, supports, checks, and
the framing of new images."""
