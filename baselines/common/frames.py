"""Frame subsampling of the audio and vision streams (the baselines' ``downsample_to``)."""

from __future__ import annotations

from dataclasses import replace

from mer_bench.batch import Batch, KeepMasks


def thin_frames(batch: Batch, audio_stride: int, vision_stride: int) -> Batch:
    """Every k-th audio / vision frame of a batch (and of its complete view), with the lengths,
    validity masks and keep-masks that go with them; text is untouched. Strides of 1 return
    ``batch`` itself."""
    if audio_stride == vision_stride == 1:
        return batch
    a, v = audio_stride, vision_stride
    keep = batch.keep
    if keep is not None:
        keep = KeepMasks(keep.text, keep.audio[:, ::a], keep.vision[:, ::v])
    return replace(
        batch,
        audio=batch.audio[:, ::a],
        vision=batch.vision[:, ::v],
        audio_mask=batch.audio_mask[:, ::a],
        vision_mask=batch.vision_mask[:, ::v],
        audio_lengths=(batch.audio_lengths + a - 1) // a,
        vision_lengths=(batch.vision_lengths + v - 1) // v,
        keep=keep,
        complete=None if batch.complete is None else thin_frames(batch.complete, a, v),
    )
