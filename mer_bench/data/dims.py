"""Published dimensions of the real data files (docs/architecture.md, Data), for commands that describe a
model without the data files at hand (``describe``)."""

from __future__ import annotations

from dataclasses import dataclass

from mer_bench.data.types import DataSpec
from mer_bench.errors import ConfigError
from mer_bench.protocol import Alignment, Dataset, DataSetting, Distribution


@dataclass(frozen=True)
class FileDims:
    text_len: int
    audio_dim: int
    vision_dim: int
    audio_len_unaligned: int
    vision_len_unaligned: int
    text_feat_dim: int = 768


IID_DIMS: dict[Dataset, FileDims] = {
    Dataset.MOSI: FileDims(50, 5, 20, 375, 500),
    Dataset.MOSEI: FileDims(50, 74, 35, 500, 500),
}
CROSS_DIMS: dict[Dataset, FileDims] = {
    # CASP features; aligned only; the text length is the training domain's.
    Dataset.MOSI: FileDims(44, 25, 171, 44, 44),
    Dataset.MOSEI: FileDims(75, 25, 171, 75, 75),
}


def published_spec(setting: DataSetting) -> DataSpec:
    """The DataSpec a model is built with for a real data setting, from the published file shapes."""
    table = CROSS_DIMS if setting.distribution is Distribution.CROSS else IID_DIMS
    if setting.dataset not in table:
        raise ConfigError(
            f"no published dimensions for {setting.dataset.value}; describe it from its files"
        )
    dims = table[setting.dataset]
    aligned = setting.alignment is Alignment.ALIGNED
    return DataSpec(
        text_len=dims.text_len,
        audio_len=dims.text_len if aligned else dims.audio_len_unaligned,
        vision_len=dims.text_len if aligned else dims.vision_len_unaligned,
        audio_dim=dims.audio_dim,
        vision_dim=dims.vision_dim,
        text_feat_dim=dims.text_feat_dim,
        aligned=aligned,
        task=setting.task,
    )
