"""bench/teacher_profile.py: every phase of an inference call is timed, and the trained teacher
the profile compares against the untrained one really finds objects in its scenes."""

from bench import teacher_profile
from bench.common import untrained_teacher


def test_the_trained_teacher_finds_objects_and_every_phase_is_timed(tmp_path):
    images = teacher_profile.scenes(2, 128)
    assert images.shape == (2, 128, 128, 3) and images.dtype.name == "uint8"
    trained = teacher_profile.profile(str(teacher_profile.SOURCE_TEACHER), images, "cpu", 0.05, 1, tmp_path)
    untrained = teacher_profile.profile(untrained_teacher(tmp_path), images, "cpu", 0.05, 1, tmp_path)
    phases = {"upload", "forward", "nms", "predict", "views", "refine", "rows"}
    assert set(trained["ms_per_image"]) == set(untrained["ms_per_image"]) == phases
    assert trained["boxes_per_image"] >= 1 and untrained["boxes_per_image"] == 0
    assert all(ms >= 0 for ms in trained["ms_per_image"].values())
    assert trained["ms_per_image"]["predict"] > 0 and trained["ms_per_image"]["forward"] > 0
