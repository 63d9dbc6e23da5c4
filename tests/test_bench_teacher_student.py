"""`bench.teacher_student` reads the round's last checkpoint, the one Ray Train wrote after
the final epoch, and says so plainly when a round has none."""

import pytest

from bench.teacher_student import last_checkpoint


def test_the_newest_checkpoint_with_both_models_is_read(tmp_path):
    ray = tmp_path / "rounds" / "r002" / "ray" / "r002"
    for stamp, files in (("2026-12-07_10-00-00.1", ["online.pt"]), ("2026-12-07_10-05-00.2", ["online.pt"])):
        (ray / f"checkpoint_{stamp}").mkdir(parents=True)
        for name in files:
            (ray / f"checkpoint_{stamp}" / name).write_bytes(b"")
    (ray / "checkpoint_2026-12-07_10-06-00.3").mkdir()  # the final report: best.pt only, no online.pt
    assert last_checkpoint(tmp_path, 2).name == "checkpoint_2026-12-07_10-05-00.2"


def test_a_round_without_online_checkpoints_is_one_clear_error(tmp_path):
    (tmp_path / "rounds" / "r001" / "ray").mkdir(parents=True)
    with pytest.raises(SystemExit, match="r001/ray: no checkpoint with online.pt"):
        last_checkpoint(tmp_path, 1)
