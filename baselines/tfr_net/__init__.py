"""TFR-Net baseline: the original (``tfr_net``) and its batch-independent form (``tfr_net_fixed``)."""
