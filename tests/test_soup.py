"""Weight averaging (tsmojo/soup.py)."""

import json

import pytest
import torch

from tsmojo import TSMojoConfig, TSMojoModel
from tsmojo.soup import average_checkpoints


def saved(tmp_path, name: str, seed: int, **config) -> str:
    torch.manual_seed(seed)
    model = TSMojoModel(TSMojoConfig.tiny(**config))
    model.save_pretrained(tmp_path / name)
    summary = {"steps": seed, "pretrain_config": {"seed": seed}}
    (tmp_path / name / "training_summary.json").write_text(json.dumps(summary))
    return str(tmp_path / name)


def test_average_is_the_mean_of_the_weights_and_records_its_sources(tmp_path):
    first, second = saved(tmp_path, "a", 1), saved(tmp_path, "b", 2)
    averaged = average_checkpoints([first, second], tmp_path / "soup")
    a, b = TSMojoModel.from_pretrained(first), TSMojoModel.from_pretrained(second)
    reloaded = TSMojoModel.from_pretrained(tmp_path / "soup")
    for name, value in reloaded.state_dict().items():
        torch.testing.assert_close(value, (a.state_dict()[name] + b.state_dict()[name]) / 2)
        torch.testing.assert_close(value, averaged.state_dict()[name])
    summary = json.loads((tmp_path / "soup" / "training_summary.json").read_text())
    assert [item["steps"] for item in summary["averaged_from"]] == [1, 2]
    assert summary["pretrain_config"] == {"seed": 1}


def test_average_refuses_different_architectures_and_single_models(tmp_path):
    first, wider = saved(tmp_path, "a", 1), saved(tmp_path, "b", 2, d_model=64)
    with pytest.raises(ValueError, match="config differs"):
        average_checkpoints([first, wider], tmp_path / "soup")
    with pytest.raises(ValueError, match="at least two"):
        average_checkpoints([first], tmp_path / "soup")
