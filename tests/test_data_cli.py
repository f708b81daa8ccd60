"""``densescale data`` subcommand (run through densescale.data.cli.main)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from densescale.data import read_oracle
from densescale.data.cli import main

SMALL = [
    "--num-passages",
    "2000",
    "--num-train-queries",
    "500",
    "--num-dev",
    "50",
    "--num-test",
    "50",
    "--set",
    "vocab_size=1500",
    "--set",
    "num_topics=40",
    "--set",
    "rare_start=400",
    "--set",
    "repeats=2",
]


def test_synthetic_then_info(tmp_path: Path, capsys):
    out = tmp_path / "syn"
    assert main(["data", "synthetic", str(out), *SMALL]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["path"] == str(out)
    assert made["oracle_ce"]["test"] == read_oracle(out)["splits"]["test"]["oracle_ce"]
    assert read_oracle(out)["config"]["vocab_size"] == 1500
    assert main(["data", "info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["passages"] == 2000 and info["queries"] == 600
    assert info["splits"]["train"] == {"queries": 500, "pairs": 500}
    assert info["oracle_ce"] == made["oracle_ce"]


def test_bad_arguments(tmp_path: Path, capsys):
    with pytest.raises(SystemExit):
        main(["data", "synthetic", str(tmp_path / "x"), "--set", "nonsense=1"])
    assert "FIELD=VALUE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "info", str(tmp_path / "absent")])
    assert "does not exist" in capsys.readouterr().err
