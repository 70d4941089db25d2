from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mer_bench.cli import main
from tests.conftest import MEANPOOL

COMMANDS = [
    "run",
    "plot",
    "table",
    "protocols",
    "data",
    "masks",
    "export",
    "leaderboard",
    "tune",
    "adapters",
    "check-adapter",
    "describe",
    "import-checkpoint",
]


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out


def test_protocols_prints_ids_then_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["protocols", "distribution=cross,mode=STMFM,rate=0.5", "--dataset", "mosi"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [
        "mosi/cross/aligned/binary/STMFM@0.5",
        "mosi/cross/aligned/seven/STMFM@0.5",
        "mosi/cross/aligned/regression/STMFM@0.5",
        "3 cells",
    ]


def test_invalid_selector_is_an_error_listing_valid_values(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["protocols", "mode=RMFX"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "RMFM_same" in err and "\n" == err[-1]


def test_usage_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["masks", "--mode", "RMFM"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


def test_data_check_valid_and_invalid(
    tiny_synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tiny_synth_root / "CMU-SYNTH" / "Processed" / "aligned_50.pkl"
    assert main(["data", "check", str(good)]) == 0
    out = capsys.readouterr().out
    assert "sha256" in out and "[test]" in out
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(good.read_bytes()[:1000])  # truncated
    assert main(["data", "check", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


def test_data_synth_writes_loadable_files(tmp_path: Path, capsys) -> None:
    from mer_bench.data.loaders import load_bundle
    from mer_bench.protocol import DataSetting

    assert main(["data", "synth", "--out", str(tmp_path), "--seed", "3"]) == 0
    bundle = load_bundle(DataSetting.parse("synth/ood/unaligned/seven"), tmp_path)
    assert bundle.spec.audio_len == 80 and bundle.spec.vision_len == 100
    assert bundle.spec.audio_dim == 5 and bundle.spec.vision_dim == 20


@pytest.mark.parametrize(
    ("mode", "arg"),
    [("RMFM", ["--rate", "0.3"]), ("SMM", ["--condition", "TA"]), ("STMFM", ["--rate", "1.0"])],
)
def test_masks_command_writes_the_design_npz(
    tiny_synth_root: Path, tmp_path: Path, mode: str, arg: list[str]
) -> None:
    out = tmp_path / "m.npz"
    alignment = "aligned" if mode == "STMFM" else "unaligned"
    argv = [
        "masks",
        "--dataset",
        "synth",
        "--data-root",
        str(tiny_synth_root),
        "--alignment",
        alignment,
        "--split",
        "test",
        "--mode",
        mode,
        *arg,
        "--seed",
        "5",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    first = dict(np.load(out))
    assert set(first) == {
        "text_input_mask",
        "audio_input_mask",
        "vision_input_mask",
        "text_keep",
        "audio_keep",
        "vision_keep",
        "text_ids",
        "text_ids_missing",
    }
    for m in ("text", "audio", "vision"):
        assert not (first[f"{m}_keep"].astype(bool) & ~first[f"{m}_input_mask"].astype(bool)).any()
    dropped = first["text_input_mask"].astype(bool) & ~first["text_keep"].astype(bool)
    assert (first["text_ids_missing"][dropped] == 100).all()
    assert main(argv) == 0  # same seed → identical masks
    second = dict(np.load(out))
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])


def test_masks_refuses_tmfm_on_unaligned(tiny_synth_root: Path, tmp_path: Path, capsys) -> None:
    argv = [
        "masks",
        "--dataset",
        "synth",
        "--data-root",
        str(tiny_synth_root),
        "--mode",
        "TMFM",
        "--rate",
        "0.3",
        "--out",
        str(tmp_path / "x.npz"),
    ]
    assert main(argv) == 2
    assert "aligned" in capsys.readouterr().err


def test_adapters_lists_builtins(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["adapters"]) == 0
    out = capsys.readouterr().out
    for name in ("cider", "cider_fixed", "mult", "self_mm", "tfr_net", "tfr_net_fixed"):
        assert f"{name}\t" in out


def test_unknown_model_suggests(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["describe", "cidr", "--dataset", "mosi", "--alignment", "aligned"]) == 2
    assert "did you mean 'cider'" in capsys.readouterr().err


def test_check_adapter_passes_for_example_plugin(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-adapter", MEANPOOL]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and " 0 failed" in out


def test_export_without_store_is_an_error(tmp_path: Path, capsys) -> None:
    assert main(["export", "--results", str(tmp_path / "none"), "--what", "metrics"]) == 2
    assert "no results store" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("model", "argv", "table"),
    [
        (
            "cider",
            ["--alignment", "unaligned", "--task", "binary"],
            "cider_state_dict_mosi_unaligned_binary_L3.tsv",
        ),
        (
            "self_mm",
            ["--alignment", "unaligned", "--task", "regression"],
            "selfmm_state_dict_mmsa_mosi_unaligned.tsv",
        ),
        (
            "mult",
            ["--alignment", "aligned", "--task", "regression"],
            "mult_state_dict_mmsa_mosi_aligned.tsv",
        ),
        (
            "lnln",
            ["--alignment", "unaligned", "--task", "regression"],
            "lnln_state_dict_mosi_unaligned.tsv",
        ),
        (
            "tfr_net",
            ["--alignment", "unaligned", "--task", "regression"],
            "tfrnet_state_dict_mosi_unaligned.tsv",
        ),
    ],
)
def test_describe_state_dict_matches_reference_tables(
    model: str, argv: list[str], table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without any data file or weights: the published MOSI dimensions and bert-base shapes."""
    from tests.conftest import REFERENCE_DIR

    assert main(["describe", model, "--dataset", "mosi", *argv, "--state-dict"]) == 0
    assert capsys.readouterr().out == (REFERENCE_DIR / table).read_text()


def test_describe_lnln_mosei_uses_the_depth_4_fusion(capsys: pytest.CaptureFixture[str]) -> None:
    """MOSEI's preset: 74-d audio over 500 frames, 35-d vision, 4 fusion layers (2 on MOSI)."""
    argv = ["describe", "lnln", "--dataset", "mosei", "--alignment", "unaligned"]
    assert main([*argv, "--task", "regression"]) == 0
    out = capsys.readouterr().out
    assert "preset\tmosei" in out and "non_bert_state_entries\t454" in out
    assert "non_bert_parameters\t7102404" in out and "bert_parameters\t109482240" in out


def test_describe_counts_and_set(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["describe", "cider", "--dataset", "mosi", "--alignment", "unaligned"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "non_bert_parameters\t276566" in out and "bert_parameters\t109482240" in out
    assert main([*argv, "--task", "seven", "--set", "multimodal_layers=1,num_heads=2"]) == 0
    assert "non_bert_state_entries\t117" in capsys.readouterr().out  # 71 + 32·1 + 2·7


def test_describe_tfr_net_mosei_and_head_check(capsys: pytest.CaptureFixture[str]) -> None:
    """MMSA's MOSEI config: 500 audio frames widen trans_a_final; the fixed form has the same
    parameters; a head count that does not divide a sequence length is a usage error."""
    argv = ["--dataset", "mosei", "--alignment", "unaligned", "--task", "regression"]
    for model in ("tfr_net", "tfr_net_fixed"):
        assert main(["describe", model, *argv]) == 0
        out = capsys.readouterr().out
        assert "preset\tmosei" in out and "non_bert_parameters\t18812589" in out
        assert "non_bert_state_entries\t579" in out
    assert main(["describe", "tfr_net", *argv, "--set", "num_temporal_head=7"]) == 2
    assert "num_temporal_head (7) must divide" in capsys.readouterr().err


def test_preset_choice_and_unknown_preset(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["describe", "mult", "--dataset", "mosi", "--alignment", "aligned", "--task", "binary"]
    assert main([*argv, "--preset", "paper"]) == 0
    assert "preset\tpaper" in capsys.readouterr().out
    assert main([*argv, "--preset", "nope"]) == 2
    assert "has no preset 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("dataset", ["mosi", "mosei"])
def test_describe_uses_the_typed_setting_for_cross_dataset_layouts(
    dataset: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Cross-dataset CIDer has LayerNorm-interleaved A/V prototype encoders (indices 0/3/6)."""
    argv = ["describe", "cider", "--dataset", dataset, "--alignment", "aligned", "--task"]
    assert main([*argv, "binary", "--distribution", "cross", "--state-dict"]) == 0
    cross = capsys.readouterr().out
    for key in ("cls_encoders_a.3.weight", "cls_encoders_a.6.weight", "cls_encoders_v.3.weight"):
        assert key in cross
    assert "cls_encoders_a.2.weight" not in cross and "cls_encoders_a.4.weight" not in cross
    assert main([*argv, "binary", "--distribution", "iid", "--state-dict"]) == 0
    iid = capsys.readouterr().out
    assert "cls_encoders_a.4.weight" in iid and "cls_encoders_a.3.weight" not in iid
    if dataset == "mosi":
        assert main([*argv, "binary", "--distribution", "cross"]) == 0
        assert "non_bert_parameters\t252488" in capsys.readouterr().out


@pytest.mark.parametrize("verbose", [False, True])
def test_run_silences_transformers_unless_verbose(
    verbose: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    from transformers.utils import logging as hf_logging

    from mer_bench.errors import ConfigError
    from mer_bench.text_encoder import THIRD_PARTY_QUIET_ENV

    for key in THIRD_PARTY_QUIET_ENV:
        monkeypatch.delenv(key, raising=False)
    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()

    def stop(args):  # the run itself is not needed: only what happens before it
        raise ConfigError("stopped")

    monkeypatch.setattr("mer_bench.cli.run.run_options", stop)
    hf_logging.set_verbosity_warning()
    hf_logging.enable_progress_bar()
    try:
        assert main(["run", *(["--verbose"] if verbose else [])]) == 2
        assert capsys.readouterr().err == "error: stopped\n"
        quiet = hf_logging.get_verbosity() == hf_logging.ERROR
        assert quiet is not verbose
        assert hf_logging.is_progress_bar_enabled() is verbose
        # worker processes inherit the environment
        assert (os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") == "1") is not verbose
    finally:
        hf_logging.set_verbosity(level)
        (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()
