"""The data section's own checks: a batch bound and a worker count that cannot work are refused at load."""

import pytest

from xtrans.config import ConfigError, load_config
from xtrans.testing.train_fixtures import tiny_train_config, write_yaml
from xtrans.train.config import TrainConfig


@pytest.mark.parametrize("key, value, message", [
    ("max_seconds", 0.0, r"max_seconds: expected > 0, found 0\.0"),
    ("num_workers", -1, r"num_workers: expected >= 0, found -1"),
])
def test_bad_batching_is_refused_naming_the_file(tmp_path, key, value, message):
    path = write_yaml(tiny_train_config(data={key: value}), tmp_path / "stage.yaml")
    with pytest.raises(ConfigError, match=rf"stage\.yaml: key 'data': {message}"):
        load_config(path, TrainConfig)
