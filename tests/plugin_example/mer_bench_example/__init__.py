"""A minimal external mer_bench adapter: masked mean pooling per modality and a linear head."""
