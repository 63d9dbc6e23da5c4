"""Dataset contract: label parsing, Ultralytics path rules, reading a data.yaml into rows."""

import io

import pyarrow as pa
import pytest
import yaml
from PIL import Image

from ssl_ray.core import schema
from ssl_ray.errors import DatasetError
from ssl_ray.io.dataset import label_path_for, load_data_yaml, parse_label_text, parse_names, read_split
from ssl_ray.io.storage import Store


@pytest.mark.parametrize(
    "text, n_boxes, problems",
    [
        ("0 0.5 0.5 0.2 0.2\n", 1, []),
        ("0 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.1 0.1\n\n", 2, []),
        ("", 0, []),
        ("2 0.5 0.5 0.2 0.2", 1, []),
        ("0 0.1 0.1 0.3 0.1 0.3 0.3 0.1 0.3", 1, []),  # polygon -> bbox
        ("3 0.5 0.5 0.2 0.2", 0, [(1, "class id 3 outside 0..2")]),
        ("-1 0.5 0.5 0.2 0.2", 0, [(1, "class id -1 outside 0..2")]),
        ("0.5 0.5 0.5 0.2 0.2", 0, [(1, "class id 0.5 outside")]),
        ("0 0.5 0.5 0.2", 0, [(1, "expected 'cls x y w h'")]),
        ("0 1.5 0.5 0.2 0.2", 0, [(1, "coordinates outside [0, 1]")]),
        ("0 0.95 0.5 0.2 0.2", 0, [(1, "coordinates outside [0, 1]")]),  # box pokes out
        ("0 0.5 0.5 0 0.2", 0, [(1, "box with zero or negative width/height")]),
        ("0 a b c d", 0, [(1, "not numbers")]),
        ("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2 0.1", 1, [(2, "expected 'cls x y w h'")]),
    ],
)
def test_parse_label_text(text, n_boxes, problems):
    boxes, found = parse_label_text(text, num_classes=3)
    assert len(boxes) == n_boxes
    assert [(line, msg[: len(expected)]) for (line, msg), (_, expected) in zip(found, problems)] == problems
    assert len(found) == len(problems)
    assert all(b["score"] == 1.0 for b in boxes)


def test_polygon_becomes_its_bounding_box():
    (b,), _ = parse_label_text("1 0.1 0.2 0.5 0.2 0.5 0.6 0.1 0.6", 2)
    assert (b["cls"], b["x"], b["y"], round(b["w"], 6), round(b["h"], 6)) == (1, 0.3, 0.4, 0.4, 0.4)


@pytest.mark.parametrize(
    "image, label",
    [
        ("images/train/a.jpg", "labels/train/a.txt"),
        ("data/images/train/sub/a.b.png", "data/labels/train/sub/a.b.txt"),
        ("images/x/images/y.jpg", "images/x/labels/y.txt"),  # only the last /images/
        ("train/a.jpg", "train/a.txt"),  # no /images/: next to the image
    ],
)
def test_label_path_for(image, label):
    assert label_path_for(image) == label


@pytest.mark.parametrize(
    "names, expected",
    [
        (["a", "b"], ["a", "b"]),
        ({0: "a", 1: "b"}, ["a", "b"]),
        ({"1": "b", "0": "a"}, ["a", "b"]),
    ],
)
def test_parse_names(names, expected):
    assert parse_names(names, "x") == expected


@pytest.mark.parametrize("names", [None, [], {1: "a"}, {0: "a", 2: "b"}, "abc"])
def test_parse_names_rejects(names):
    with pytest.raises(DatasetError, match="'names' must be"):
        parse_names(names, "x")


def _jpeg(color=(200, 10, 10), size=(32, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


def make_dataset(root, labels: dict[str, str], extra_images=()):
    """A tiny dataset: one image per label text (None = no label file)."""
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    for i, (name, text) in enumerate(labels.items()):
        (root / "images" / "train" / f"{name}.jpg").write_bytes(_jpeg((i * 40 % 255, 50, 90)))
        if text is not None:
            (root / "labels" / "train" / f"{name}.txt").write_text(text)
    for name, data in extra_images:
        (root / "images" / "train" / name).write_bytes(data)
    (root / "data.yaml").write_text(
        yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/train", "names": ["a", "b"]})
    )
    return str(root / "data.yaml")


def test_read_split_rows_follow_the_contract(tmp_path):
    data = make_dataset(tmp_path, {"one": "0 0.5 0.5 0.2 0.2\n1 0.2 0.2 0.1 0.1\n", "neg": None, "empty": ""})
    split = read_split(load_data_yaml(data, Store), "train")
    table = schema.rows_to_table(split.rows)
    assert table.schema == schema.ROW_SCHEMA
    assert split.names == ["a", "b"] and not split.rejects
    by_uri = {r["uri"].rsplit("/", 1)[1]: r for r in split.rows}
    assert len(by_uri["one.jpg"]["boxes"]) == 2 and by_uri["neg.jpg"]["boxes"] == []
    row = by_uri["one.jpg"]
    assert (row["width"], row["height"], row["source"], row["round"]) == (32, 24, "labeled", 0)
    assert row["image_id"] == schema.image_id_of_bytes((tmp_path / "images/train/one.jpg").read_bytes())
    assert row["video_uri"] is None and row["teacher"] is None


def test_bad_labels_fail_with_file_and_line(tmp_path):
    data = make_dataset(tmp_path, {"good": "0 0.5 0.5 0.2 0.2\n", "bad": "0 0.5 0.5 0.2 0.2\n5 0.5 0.5 0.1 0.1\n"})
    with pytest.raises(DatasetError) as err:
        read_split(load_data_yaml(data, Store), "train")
    msg = str(err.value)
    assert "labels/train/bad.txt:2: class id 5 outside 0..1" in msg and "\n" not in msg


def test_skip_policy_records_rejects(tmp_path):
    data = make_dataset(
        tmp_path,
        {"good": "0 0.5 0.5 0.2 0.2\n", "bad": "0 2 2 2 2\n"},
        extra_images=[("zero.jpg", b""), ("text.jpg", b"hello, not an image"), ("trunc.jpg", _jpeg()[:100])],
    )
    split = read_split(load_data_yaml(data, Store), "train", on_error="skip")
    assert [r["uri"].rsplit("/", 1)[1] for r in split.rows] == ["good.jpg"]
    reasons = {r["uri"].rsplit("/", 1)[1]: r["reason"] for r in split.rejects}
    assert reasons == {"bad.jpg": "bad_label", "zero.jpg": "empty", "text.jpg": "not_image", "trunc.jpg": "corrupt"}
    assert schema.rejects_to_table(split.rejects).schema == schema.REJECT_SCHEMA


def test_missing_split_and_missing_file(tmp_path):
    data = make_dataset(tmp_path, {"good": ""})
    with pytest.raises(DatasetError, match="no 'test' entry"):
        read_split(load_data_yaml(data, Store), "test")
    with pytest.raises(DatasetError, match="cannot read dataset file .*nope.yaml"):
        read_split(load_data_yaml(str(tmp_path / "nope.yaml"), Store), "train")
    (tmp_path / "broken.yaml").write_text("train: [unclosed\n")
    with pytest.raises(DatasetError, match="not valid YAML"):
        read_split(load_data_yaml(str(tmp_path / "broken.yaml"), Store), "train")


def test_txt_list_split(tmp_path):
    data = make_dataset(tmp_path, {"a1": "", "a2": "0 0.5 0.5 0.1 0.1"})
    (tmp_path / "train.txt").write_text("./images/train/a2.jpg\n")
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"train": "train.txt", "val": "train.txt", "names": ["x"]}))
    split = read_split(load_data_yaml(data, Store), "train")
    assert [len(r["boxes"]) for r in split.rows] == [1]


def test_shapes_dataset_reads_cleanly(shapes):
    split = read_split(load_data_yaml(str(shapes), Store), "train")
    assert len(split.rows) == 24 and not split.rejects
    assert sum(len(r["boxes"]) for r in split.rows) > 24
    assert pa.Table.from_pylist(split.rows, schema=schema.ROW_SCHEMA).num_rows == 24
