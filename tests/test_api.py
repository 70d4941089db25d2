"""``mer_bench.api``: the README's Python example runs as written; options are checked like the
CLI's; ``build_adapter`` builds what ``run`` would."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mer_bench import api
from mer_bench.errors import ConfigError, MerBenchError, ProtocolError
from mer_bench.protocol import DataSetting
from tests.conftest import MEANPOOL, ROOT


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"^## From Python\n.*?^```python\n(.*?)^```", text, re.S | re.M)
    assert match, "README has no Python example under 'From Python'"
    return match.group(1)


def test_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(_readme_example(), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "synth/iid/aligned/binary/RMFM@0.5" in out and "parameters" in out
    assert (tmp_path / "results-py" / "results.sqlite").is_file()


def test_run_checks_options_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown run option\(s\) epochs; valid: .*overrides"):
        api.run("mult", out=str(tmp_path), epochs=3)
    with pytest.raises(ConfigError, match="fixes the protocol"):
        api.run("mult", "mode=RMFM", suite="lnln", out=str(tmp_path))
    with pytest.raises(ProtocolError, match="invalid precision 'fp8'"):
        api.run("mult", out=str(tmp_path), precision="fp8")
    with pytest.raises(ConfigError, match="at least one model"):
        api.run(" , ", out=str(tmp_path))
    assert not (tmp_path / "results.sqlite").exists()
    with pytest.raises(MerBenchError, match="no results store"):
        api.load_results(tmp_path / "nothing here")


def test_protocol_and_seeds_follow_the_cli_rules() -> None:
    assert api.protocol_and_seeds(None, None, None) == ("all", (1111, 1112, 1113), None)
    assert api.protocol_and_seeds("mode=SMM", [7], None) == ("mode=SMM", (7,), None)
    selector, seeds, name = api.protocol_and_seeds(None, None, "lnln")
    assert name == "lnln" and selector and seeds
    assert api.protocol_and_seeds(None, (5,), "lnln")[1] == (5,)


def test_build_adapter_resolves_preset_and_params(tiny_synth_root: Path) -> None:
    data = "synth/iid/aligned/binary"
    adapter = api.build_adapter(MEANPOOL, data, data_root=tiny_synth_root, params={"hidden": 32})
    assert adapter.ctx.data == DataSetting.parse(data)
    assert adapter.ctx.params["hidden"] == 32 and adapter.ctx.params["lr"] == 1e-2  # synth preset
    assert adapter.model.token.embedding_dim == 32
    default = api.build_adapter(
        MEANPOOL, DataSetting.parse(data), data_root=tiny_synth_root, preset="default"
    )
    assert default.ctx.params["lr"] == 3e-3
