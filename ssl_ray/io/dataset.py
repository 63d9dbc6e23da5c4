"""Read an Ultralytics detection dataset (`data.yaml`, local or S3) into contract rows.

Layout follows Ultralytics: `train`/`val` are directories of images, lists of them, or `.txt`
files listing images; each image's label file is found by replacing the last `/images/` with
`/labels/` and the extension with `.txt`. An image without a label file is a negative.
Polygon lines (segmentation labels) become their bounding box, as Ultralytics does.

Problems (bad lines, unknown classes, coordinates outside [0, 1], unreadable images) are
collected with file and line. With `on_error="fail"` they raise one `DatasetError`; with
`"skip"` the affected image is left out and recorded as a reject row.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

import yaml

from ssl_ray.core import schema
from ssl_ray.errors import DatasetError, StorageError
from ssl_ray.io.images import IMAGE_EXTENSIONS, BadImage, inspect_image
from ssl_ray.io.storage import Store


@dataclass
class DatasetSplit:
    names: list[str]
    rows: list[dict] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)


def parse_label_text(text: str, num_classes: int) -> tuple[list[dict], list[tuple[int, str]]]:
    """Parse one YOLO label file. Returns (boxes, [(line number, problem), ...])."""
    boxes, problems = [], []
    for lineno, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            values = [float(p) for p in parts]
        except ValueError:
            problems.append((lineno, f"not numbers: {line.strip()[:80]!r}"))
            continue
        cls = values[0]
        coords = values[1:]
        if cls != int(cls) or not 0 <= cls < num_classes:
            problems.append((lineno, f"class id {parts[0]} outside 0..{num_classes - 1} (names)"))
            continue
        if len(coords) == 4:
            x, y, w, h = coords
            bounds = [x, y, w, h, x - w / 2, y - h / 2, x + w / 2, y + h / 2]
        elif len(coords) >= 6 and len(coords) % 2 == 0:  # polygon -> its bounding box
            xs, ys = coords[0::2], coords[1::2]
            x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
            x, y, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
            bounds = coords
        else:
            problems.append((lineno, f"expected 'cls x y w h' (or a polygon), found {len(parts)} fields"))
            continue
        eps = 1e-6
        if any(v < -eps or v > 1 + eps for v in bounds):
            problems.append((lineno, "coordinates outside [0, 1] (labels must be normalized)"))
            continue
        if w <= 0 or h <= 0:
            problems.append((lineno, "box with zero or negative width/height"))
            continue
        boxes.append(schema.box(int(cls), x, y, w, h, 1.0))
    return boxes, problems


def parse_names(names, where: str) -> list[str]:
    """`names` as a list or {id: name} mapping with ids 0..N-1."""
    if isinstance(names, list) and names and all(isinstance(n, (str, int)) for n in names):
        return [str(n) for n in names]
    if isinstance(names, dict) and names:
        try:
            ids = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            ids = []
        if ids == list(range(len(names))):
            return [str(names[k] if k in names else names[str(k)]) for k in ids]
    raise DatasetError(f"{where}: 'names' must be a list of class names or a mapping 0..N-1 -> name")


def label_path_for(image_rel: str) -> str:
    """Ultralytics' rule: the last '/images/' becomes '/labels/', the extension '.txt'."""
    head, sep, tail = ("/" + image_rel).rpartition("/images/")
    swapped = (head + "/labels/" + tail) if sep else "/" + image_rel
    return posixpath.splitext(swapped.lstrip("/"))[0] + ".txt"


@dataclass(frozen=True)
class DataYaml:
    """A parsed data.yaml: where it is, the dataset root, its entries and class names."""

    uri: str
    root: Store
    meta: dict
    names: list[str]


def load_data_yaml(data_uri: str, store_factory) -> DataYaml:
    """Read and check data.yaml once; `read_split` takes the result."""
    parent, _, fname = data_uri.rstrip("/").rpartition("/")
    yaml_store = store_factory(parent or ".")
    try:
        meta = yaml.safe_load(yaml_store.read_bytes(fname))
    except StorageError as e:
        raise DatasetError(f"cannot read dataset file {data_uri}: {e}") from None
    except yaml.YAMLError:
        raise DatasetError(f"{data_uri}: not valid YAML") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{data_uri}: expected a mapping with train, val and names")
    names = parse_names(meta.get("names"), data_uri)
    root = meta.get("path")
    if root and (str(root).startswith("s3://") or str(root).startswith("/")):
        root_store = store_factory(str(root))
    else:
        root_store = yaml_store.child(str(root)) if root else yaml_store
    return DataYaml(data_uri, root_store, meta, names)


def read_split(data: DataYaml, split: str, *, on_error: str = "fail", max_pixels: int = 64_000_000) -> DatasetSplit:
    """Rows (source 'labeled', round 0) for one split ('train' or 'val') of a dataset."""
    root, meta, names, data_uri = data.root, data.meta, data.names, data.uri
    if split not in meta or not meta[split]:
        raise DatasetError(f"{data_uri}: no '{split}' entry")
    result = DatasetSplit(names=names)
    problems: list[str] = []
    seen: set[str] = set()
    for image_rel in _split_images(root, meta[split], data_uri):
        uri = root.uri_of(image_rel)
        try:
            data_bytes = root.read_bytes(image_rel)
            width, height, _ = inspect_image(data_bytes, max_pixels)
        except (StorageError, BadImage) as e:
            reason = e.reason if isinstance(e, BadImage) else "unreadable"
            problems.append(f"{uri}: {e}")
            result.rejects.append(schema.make_reject(uri, reason, str(e)))
            continue
        label_rel = label_path_for(image_rel)
        label = root.read_bytes_if_exists(label_rel)  # no label file: a negative image
        boxes, bad_lines = parse_label_text(label.decode("utf-8", errors="replace"), len(names)) if label else ([], [])
        if bad_lines:
            detail = "; ".join(f"{root.uri_of(label_rel)}:{n}: {msg}" for n, msg in bad_lines)
            problems.append(detail)
            result.rejects.append(schema.make_reject(uri, "bad_label", detail))
            continue
        image_id = schema.image_id_of_bytes(data_bytes)
        if image_id in seen:
            continue  # the same bytes twice: one row (image_id is the identity)
        seen.add(image_id)
        result.rows.append(
            schema.make_row(
                image_id=image_id,
                uri=uri,
                width=width,
                height=height,
                source="labeled",
                round=0,
                boxes=boxes,
            )
        )
    if problems and on_error == "fail":
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise DatasetError(f"{data_uri} [{split}]: {' | '.join(problems[:3])}{more}")
    if not result.rows and not result.rejects:
        raise DatasetError(f"{data_uri} [{split}]: no images found")
    return result


def _split_images(root: Store, entry, data_uri: str) -> list[str]:
    """Image paths (relative to root) for a split entry: dir, .txt list, or a list of those."""
    entries = entry if isinstance(entry, list) else [entry]
    found: list[str] = []
    for item in entries:
        item = str(item)
        if item.endswith(".txt"):
            try:
                lines = root.read_bytes(item).decode().splitlines()
            except StorageError as e:
                raise DatasetError(f"{data_uri}: {e}") from None
            base = posixpath.dirname(item)
            for line in filter(None, (x.strip() for x in lines)):
                # Ultralytics: './x' is relative to the list file's folder; 'x' to the dataset root
                found.append(posixpath.join(base, line[2:]) if line.startswith("./") else line)
            continue
        if not root.exists(item):
            raise DatasetError(f"{data_uri}: split path {root.uri_of(item)} does not exist")
        prefix = item.strip("/")
        found.extend(
            f"{prefix}/{e.rel}" if prefix else e.rel
            for e in root.child(item).list()
            if posixpath.splitext(e.rel)[1].lower() in IMAGE_EXTENSIONS
        )
    return found
