"""Data layer: MMSA file formats, safe loading, loaders, the synthetic dataset."""
