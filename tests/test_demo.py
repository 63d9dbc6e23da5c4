"""`ssl-ray demo`'s profile: what `make demo` runs is a valid run of the default mode on the
bundled data and checkpoint, and the same files every time."""

from pathlib import Path

from ssl_ray.config import Config
from ssl_ray.demo import INIT, demo_config


def test_the_demo_runs_the_default_mode_on_its_own_data_and_the_bundled_checkpoint(tmp_path):
    cfg = demo_config(tmp_path)
    defaults = Config()
    assert cfg.train.ssl == defaults.train.ssl  # the demo shows what users get
    assert Path(cfg.model.weights) == INIT and INIT.is_file()
    assert cfg.rounds.max_rounds == defaults.rounds.max_rounds and cfg.rounds.control == 1
    assert Path(cfg.labeled.data).is_file() and cfg.output.dir == str(tmp_path / "run")
    (pool,) = cfg.pool.sources
    assert len(list(Path(pool).iterdir())) == 200


def test_the_demo_data_is_the_same_every_time(tmp_path):
    demo_config(tmp_path / "a"), demo_config(tmp_path / "b")
    a, b = (sorted((tmp_path / x / "data").rglob("*.txt")) for x in "ab")
    assert [p.read_text() for p in a] == [p.read_text() for p in b] and a
