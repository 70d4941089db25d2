"""Building blocks that several baselines share (each keeps its own parameter names)."""
