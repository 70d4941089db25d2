from __future__ import annotations

import pytest

from mer_bench.errors import ProtocolError
from mer_bench.protocol import (
    CONDITIONS,
    RATES,
    Alignment,
    Cell,
    Dataset,
    DataSetting,
    Distribution,
    Mode,
    Selector,
    Task,
    TrainingSetting,
    cells_for,
    data_settings,
    select_cells,
)


def test_rates_and_conditions() -> None:
    assert RATES == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    assert len(CONDITIONS) == 7


def test_cell_ids_round_trip() -> None:
    data = DataSetting(Dataset.MOSI, Distribution.IID, Alignment.ALIGNED, Task.BINARY)
    cell = Cell(data, Mode.RMFM, 0.3)
    assert cell.id == "mosi/iid/aligned/binary/RMFM@0.3"
    smm = Cell(
        DataSetting(Dataset.MOSI, Distribution.OOD, Alignment.UNALIGNED, Task.SEVEN),
        Mode.SMM,
        None,
        "at",
    )
    assert smm.id == "mosi/ood/unaligned/seven/SMM[TA]"
    for c in (cell, smm):
        assert Cell.parse(c.id) == c


def test_training_setting_id() -> None:
    data = DataSetting(Dataset.SYNTH, Distribution.CROSS, Alignment.ALIGNED, Task.SEVEN)
    assert TrainingSetting("cider", data, 1111).id == "cider/synth/cross/aligned/seven/seed1111"


def test_validity_rules() -> None:
    unaligned = DataSetting(Dataset.MOSI, Distribution.IID, Alignment.UNALIGNED, Task.BINARY)
    with pytest.raises(ProtocolError):
        Cell(unaligned, Mode.TMFM, 0.1)
    with pytest.raises(ProtocolError):
        Cell(unaligned, Mode.STMFM, 0.1)
    with pytest.raises(ProtocolError):
        DataSetting(Dataset.MOSI, Distribution.CROSS, Alignment.UNALIGNED, Task.BINARY)
    with pytest.raises(ProtocolError):
        Cell(unaligned, Mode.SMM, 0.5)
    with pytest.raises(ProtocolError):
        Cell(unaligned, Mode.RMFM, 0.35)
    with pytest.raises(ProtocolError):
        Cell(unaligned, Mode.SMM, None, "TX")


def test_grid_counts() -> None:
    aligned = DataSetting(Dataset.MOSI, Distribution.IID, Alignment.ALIGNED, Task.BINARY)
    unaligned = DataSetting(Dataset.MOSI, Distribution.IID, Alignment.UNALIGNED, Task.BINARY)
    assert len(cells_for(aligned)) == 5 * 11 + 7
    assert len(cells_for(unaligned)) == 3 * 11 + 7
    # iid + ood (aligned, unaligned) and cross (aligned only) per task
    assert len(data_settings([Dataset.MOSI], [Task.BINARY])) == 5
    per_task = 2 * (62 + 40) + 62
    assert len(select_cells("all", [Dataset.MOSI], [Task.BINARY])) == per_task
    assert len(select_cells(None, [Dataset.SYNTH])) == 3 * per_task


def test_selector_narrows() -> None:
    cells = select_cells(
        "distribution=ood,alignment=unaligned,mode=RMFM|RMM,rate=0.0|0.5",
        [Dataset.MOSI],
        [Task.BINARY],
    )
    assert sorted(c.id for c in cells) == sorted(
        [
            "mosi/ood/unaligned/binary/RMFM@0.0",
            "mosi/ood/unaligned/binary/RMFM@0.5",
            "mosi/ood/unaligned/binary/RMM@0.0",
            "mosi/ood/unaligned/binary/RMM@0.5",
        ]
    )
    smm = select_cells("mode=SMM,condition=T|av", [Dataset.MOSEI], [Task.SEVEN])
    assert {c.condition for c in smm} == {"T", "AV"}
    assert str(Selector.parse("mode=rmfm")) == "mode=RMFM"


@pytest.mark.parametrize(
    "bad",
    [
        "mode=XYZ",
        "colour=red",
        "rate=2",
        "mode",
        "mode=SMM,rate=0.5",
        "alignment=unaligned,mode=TMFM",
    ],
)
def test_invalid_selectors_raise_with_valid_values(bad: str) -> None:
    with pytest.raises(ProtocolError) as info:
        select_cells(bad, [Dataset.MOSI])
    assert "valid" in str(info.value).lower()


def test_task_info_table() -> None:
    assert Task.BINARY.info.num_classes == 3
    assert Task.SEVEN.info.selection_metric == "acc7"
    assert Task.REGRESSION.info.selection_metric == "mae"
    assert not hasattr(Task.REGRESSION.info, "higher_is_better")  # direction lives in metrics


def test_training_regimes_parse_round_trip_and_reject_nonsense() -> None:
    from mer_bench.protocol import Regime, TrainingRegime

    mix = TrainingRegime.parse("mixture(p_complete=0.25,r_max=0.8)")
    assert (mix.kind, mix.p_complete, mix.r_max) == (Regime.MIXTURE, 0.25, 0.8)
    assert TrainingRegime.parse(mix.id) == mix and mix.label == "mixture(p_complete=0.25,r_max=0.8)"
    assert TrainingRegime.parse("mixture") == TrainingRegime(Regime.MIXTURE)
    assert TrainingRegime.parse("matched@0.3").id == "matched@0.3"
    assert TrainingRegime.parse("CLEAN").kind is Regime.CLEAN and TrainingRegime().is_default
    for bad in ("mixture(p_complete=2)", "clean(r_max=1)", "native@0.5", "mixture(x=1)", "dirty"):
        with pytest.raises(ProtocolError):
            TrainingRegime.parse(bad)


def test_selector_regime_terms_keep_their_commas() -> None:
    from mer_bench.protocol import Regime, Selector, TrainingRegime

    sel = Selector.parse("mode=RMFM,regime=clean|mixture(p_complete=0.5,r_max=0.5),rate=0.0")
    assert [r.kind for r in sel.regimes()] == [Regime.CLEAN, Regime.MIXTURE]
    assert sel.regimes()[1] == TrainingRegime(Regime.MIXTURE, 0.5, 0.5)
    assert sel.cells_only() == Selector.parse("mode=RMFM,rate=0.0")
    assert Selector.parse("all").regimes() == [TrainingRegime()]
    assert Selector.parse(str(sel)) == sel


def test_data_setting_flattens_and_round_trips() -> None:
    data = DataSetting.parse("mosi/cross/aligned/seven")
    assert data.values() == ("mosi", "cross", "aligned", "seven")
    assert data.as_dict() == {
        "dataset": "mosi",
        "distribution": "cross",
        "alignment": "aligned",
        "task": "seven",
    }
    assert DataSetting.from_dict(data.as_dict()) == data
    assert Cell.parse(f"{data.id}/RMFM@0.3").data == data
    with pytest.raises(ProtocolError, match="lacks task"):
        DataSetting.from_dict({"dataset": "mosi", "distribution": "iid", "alignment": "aligned"})
