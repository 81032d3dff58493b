"""Real multi-view classification sets read from MATLAB files (one registered loader per set).

Each set is described by one :class:`MultiviewSource` entry of :data:`SOURCES`: the registry name, the sub-folder of
the data directory, the exact file name and SHA-256, the public origin of the file (a pinned GitHub commit), the view
names and a reader that turns the ``scipy.io.loadmat`` dict into ``[N, d]`` views and 0-based labels (taking care of
the transposed / cell layouts of each file). The file is always checksummed before it is read.

Splits (:func:`robult.data.splits.train_val_test_split`): the file's fixed test split where one exists
(handwritten: 1600/400), else a seeded stratified 80/20 train/test split; ``split: random`` (an ``extra`` option,
``--set dataset.options.split=random``) ignores the fixed split and draws a seeded stratified 80/20 train/test split
for every seed (the protocol of the TMC paper). Validation is carved from train (stratified, ``seed + 1``); each view
is z-scored with statistics of the training split only.
``train_missing_rate`` (an ``extra`` option) drops views of training samples at random (:func:`random_presence`) so
training with incomplete data can be exercised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import scipy.io
import scipy.sparse
import torch

from robult.data.dataset import MultimodalDataset
from robult.data.registry import (
    DatasetBundle,
    LoadOptions,
    cache_dir,
    default_metric,
    register_dataset,
    resolve_data_dir,
)
from robult.data.splits import Standardizer, train_val_test_split
from robult.specs import ModalitySpec, TaskSpec
from robult.utils.io import fetch_file, verify_sha256

__all__ = [
    "SOURCES",
    "MultiviewSource",
    "cache_dir_for",
    "load_multiview",
    "locate_file",
    "random_presence",
]


# ``dataset.options.split``: ``default`` (the file's fixed test split where it has one, else a seeded stratified
# 80/20), ``random`` (a seeded stratified 80/20 train/test split for every seed, the protocol of TMC's paper)
MULTIVIEW_SPLITS = ("default", "random")

# A reader returns (views [N, d_v] in view order, 0-based labels [N], fixed test indices or None).
Reader = Callable[[dict[str, Any]], tuple[list[np.ndarray], np.ndarray, np.ndarray | None]]


@dataclass(frozen=True)
class MultiviewSource:
    """One real multi-view set.

    Attributes:
        name: registry name.
        description: one line for ``robult datasets``.
        folder: sub-folder of the data directory.
        file: exact file name inside ``folder``.
        sha256: SHA-256 of the file.
        repo, commit, path: where the public copy lives on GitHub (``path`` inside the repository).
        views: view names, in the file's view order.
        dims: feature width of each view (checked after reading).
        num_samples, num_classes: documented totals (checked after reading).
        reader: turns the ``loadmat`` dict into views, labels and an optional fixed test split.
        names_note: where the view names come from (they are not stored in every file).
        label_names: class names where the source states them.
    """

    name: str
    description: str
    folder: str
    file: str
    sha256: str
    repo: str
    commit: str
    path: str
    views: tuple[str, ...]
    dims: tuple[int, ...]
    num_samples: int
    num_classes: int
    reader: Reader
    names_note: str = ""
    label_names: tuple[str, ...] = field(default=())

    @property
    def url(self) -> str:
        """Raw download URL of the pinned public copy."""
        return f"https://raw.githubusercontent.com/{self.repo}/{self.commit}/{quote(self.path)}"


# ---------------------------------------------------------------------------------------------------------- readers


def _dense(x: Any) -> np.ndarray:
    """A dense float32 array from a dense or sparse matrix."""
    if scipy.sparse.issparse(x):
        x = x.toarray()
    return np.asarray(x, dtype=np.float32)


def _labels(y: Any) -> np.ndarray:
    """0-based int64 labels from a MATLAB 1-based label vector of any orientation."""
    return np.asarray(y).astype(np.int64).ravel() - 1


def _read_handwritten(m: dict[str, Any]) -> tuple[list[np.ndarray], np.ndarray, np.ndarray | None]:
    views = [np.concatenate([_dense(m[f"x{v}_train"]), _dense(m[f"x{v}_test"])]) for v in range(1, 7)]
    y_train, y_test = _labels(m["gt_train"]), _labels(m["gt_test"])
    test = np.arange(len(y_train), len(y_train) + len(y_test))
    return views, np.concatenate([y_train, y_test]), test


def _cell_reader(key: str, label_key: str, axis: int, transpose: bool = False) -> Reader:
    """Views in a cell array ``m[key]`` (laid out along ``axis``: 1 for ``1×V``, 0 for ``V×1``)."""

    def read(m: dict[str, Any]) -> tuple[list[np.ndarray], np.ndarray, np.ndarray | None]:
        cell = m[key]
        n_views = cell.shape[axis]
        views = []
        for v in range(n_views):
            x = cell[0, v] if axis == 1 else cell[v, 0]
            views.append(_dense(x.T if transpose else x))
        return views, _labels(m[label_key]), None

    return read


def _read_bbcsport(m: dict[str, Any]) -> tuple[list[np.ndarray], np.ndarray, np.ndarray | None]:
    views = [_dense(m["data"][0, v].T) for v in range(m["data"].shape[1])]  # terms × docs, sparse
    labels = [_labels(m["truelabel"][0, v]) for v in range(m["truelabel"].shape[1])]
    for v, other in enumerate(labels[1:], start=1):
        if not np.array_equal(labels[0], other):
            raise ValueError(f"BBCSport.mat: truelabel cell {v} differs from cell 0")
    return views, labels[0], None


def _read_msrc(m: dict[str, Any]) -> tuple[list[np.ndarray], np.ndarray, np.ndarray | None]:
    return [_dense(m[f"msr{v}"]) for v in range(1, 6)], _labels(m["truth"]), None


_XIYU = ("xiyu1007/Multi-view-datasets", "7a9df6db09f098919ce24457b791df2500fbd320")
_COMPLETER = ("XLearning-SCU/2021-CVPR-Completer", "ad37110046234341dab63b0ed0c862680a69e27a")
_UNNAMED_GLP = (
    "the file does not name its views; by their widths they are most likely GIST (reduced, 20), LBP (59) and "
    "PHOG (40), so neutral names view0..view2 are used"
)

SOURCES: dict[str, MultiviewSource] = {
    s.name: s
    for s in (
        MultiviewSource(
            "handwritten",
            "UCI Multiple Features digits: 6 views (pix, fou, fac, zer, kar, mor), 2000 samples, 10 classes",
            "handwritten",
            "handwritten_6views.mat",
            "d731ec02aaa97cf9a5826df68b0dd1e73ba61a82ba3c8f64606ba402926c885b",
            "hanmenghan/TMC",
            "08d0ca4c4461b6de1cf73514d8c621598bc2b504",
            "TMC ICLR/datasets/handwritten_6views.mat",
            ("pix", "fou", "fac", "zer", "kar", "mor"),
            (240, 76, 216, 47, 64, 6),
            2000,
            10,
            _read_handwritten,
            "UCI mfeat feature files (keys x1..x6)",
            tuple(str(d) for d in range(10)),
        ),
        MultiviewSource(
            "cub",
            "CUB-200 10-class subset: image (GoogLeNet 1024) + text (doc2vec 300), 600 samples, 10 classes",
            "cub",
            "cub_googlenet_doc2vec_c10.mat",
            "3ab7dc9917c520e6931fa3338cb9c6e8b2f6a4050ca8a25c97360e87d7bbfc3a",
            "XLearning-SCU/2023-IJCAI-ProImp",
            "7f993ecc3e3ca29aa2d7d6a6c3bea0bac0e932c1",
            "data/cub_googlenet_doc2vec_c10.mat",
            ("image", "text"),
            (1024, 300),
            600,
            10,
            _cell_reader("X", "gt", axis=1),
            "CPM-Nets preprocessing: X[0] GoogLeNet image features, X[1] doc2vec text features",
        ),
        MultiviewSource(
            "pie",
            "CMU PIE faces: 3 views (intensity 484, LBP 256, Gabor 279), 680 samples, 68 classes",
            "pie",
            "PIE_face_10.mat",
            "7b7f5b73b140c9e00d6d9a4ed78e0292b298bd12fbcfb2c96125795c7f8150f8",
            "jiajunsi/RCML",
            "c9c5ab41e6fe62a85e5f6441a4dc7b568e1fa421",
            "data/PIE_face_10.mat",
            ("intensity", "lbp", "gabor"),
            (484, 256, 279),
            680,
            68,
            _cell_reader("X", "gt", axis=1, transpose=True),  # stored features × samples
            "CPM-Nets description of the file (intensity, LBP, Gabor)",
        ),
        MultiviewSource(
            "scene15",
            "15 scene categories: 3 unnamed descriptor views (20, 59, 40), 4485 samples, 15 classes",
            "scene15",
            "Scene-15.mat",
            "ec33b5e1f53eea04ccacc8b7bdfc6091ed490b04214eb41fd83c05a0a173221f",
            *_COMPLETER,
            "data/Scene-15.mat",
            ("view0", "view1", "view2"),
            (20, 59, 40),
            4485,
            15,
            _cell_reader("X", "Y", axis=1),
            _UNNAMED_GLP,
        ),
        MultiviewSource(
            "landuse21",
            "UC Merced land use: 3 unnamed descriptor views (20, 59, 40), 2100 samples, 21 classes",
            "landuse21",
            "LandUse-21.mat",
            "6441fc42e84a83729e5a6436f4c1544dcc3fe115558458495b165677a732b67f",
            *_COMPLETER,
            "data/LandUse-21.mat",
            ("view0", "view1", "view2"),
            (20, 59, 40),
            2100,
            21,
            _cell_reader("X", "Y", axis=1),
            _UNNAMED_GLP,
        ),
        MultiviewSource(
            "bbcsport",
            "BBC Sport articles: 2 bag-of-words segment views (3183, 3203), 544 documents, 5 classes",
            "bbcsport",
            "BBCSport.mat",
            "73d5afadcc4d32f35ce85174af900a9ddb227e383ee163a192b4ee9f6c3d74fe",
            *_XIYU,
            "Datasets/BBCSport/BBCSport.mat",
            ("segment0", "segment1"),
            (3183, 3203),
            544,
            5,
            _read_bbcsport,
            "each article is split into two segments, one bag-of-words view each (sparse terms × docs in the file)",
        ),
        MultiviewSource(
            "3sources",
            "3Sources news stories: 3 bag-of-words views (3560, 3631, 3068), 169 stories, 6 classes",
            "3sources",
            "3Sources.mat",
            "8a94f0e554c5782bc87561314f1bad8ca206910125734f4dbe2492956528c9ae",
            *_XIYU,
            "Datasets/3Sources/3Sources.mat",
            ("view0", "view1", "view2"),
            (3560, 3631, 3068),
            169,
            6,
            _cell_reader("X", "y", axis=0),
            "the views are the BBC, Reuters and Guardian reports of each story; the file does not state which "
            "cell is which source, so neutral names view0..view2 are used",
        ),
        MultiviewSource(
            "msrc_v1",
            "MSRC-v1 objects: 5 views (cm 24, hog 576, gist 512, lbp 256, centrist 254), 210 images, 7 classes",
            "msrc_v1",
            "MSRC_v1.mat",
            "b224957807d3fa04dfcd2a7dc92829ecc5c470e3ceabcd240898618fa39646dc",
            *_XIYU,
            "Datasets/MSRC_v1/MSRC_v1.mat",
            ("cm", "hog", "gist", "lbp", "centrist"),
            (24, 576, 512, 256, 254),
            210,
            7,
            _read_msrc,
            "names follow the usual description by width (colour moments 24, HOG 576, GIST 512, LBP 256, "
            "CENTRIST 254); the file stores msr1..msr5 without names",
        ),
        MultiviewSource(
            "100leaves",
            "UCI 100 plant species leaves: 3 unnamed 64-d views (shape / margin / texture), 1600 samples, 100 classes",
            "100leaves",
            "100Leaves.mat",
            "90ba0a141ed07302109deebd7df935108e3413687c4bf71931001dc87acb1196",
            *_XIYU,
            "Datasets/Leaves/100Leaves.mat",
            ("view0", "view1", "view2"),
            (64, 64, 64),
            1600,
            100,
            _cell_reader("X", "Y", axis=1),
            "the views are shape, fine-scale margin and texture histograms, order not stated in the file",
        ),
        MultiviewSource(
            "webkb",
            "WebKB course pages: 2 binary bag-of-words views (1840, 3000), 1051 pages, 2 classes (230/821)",
            "webkb",
            "webkb.mat",
            "a1a3e7c50dac79ade224d556e1ff371a190fbb56c174eadfe05bad74bcec52ea",
            *_XIYU,
            "Datasets/Webkb/webkb.mat",
            ("view0", "view1"),
            (1840, 3000),
            1051,
            2,
            _cell_reader("X", "y", axis=0),
            "the views are page words and anchor-text words (Blum & Mitchell); the file does not state which is which",
        ),
    )
}


# ------------------------------------------------------------------------------------------------ file resolution


def cache_dir_for(source: MultiviewSource, opts: LoadOptions) -> Path:
    """Download cache of ``source``: ``extra["cache_dir"]``, else ``$ROBULT_CACHE_DIR/<folder>``, else
    ``~/.cache/robult/<folder>``."""
    given = opts.extra.get("cache_dir")
    if given:
        return Path(given).expanduser()
    return cache_dir() / source.folder


def locate_file(source: MultiviewSource, opts: LoadOptions) -> Path:
    """Find (or, with ``extra["download"]``, fetch) the file of ``source`` and verify its SHA-256.

    Args:
        source: the table entry.
        opts: loader options (``data_dir``, ``extra["download"]``, ``extra["cache_dir"]``).

    Returns:
        The path of a verified copy: ``<data_dir>/<folder>/<file>``, else the cached download.

    Raises:
        FileNotFoundError: no copy and no download requested (the message names the path and the URL).
        robult.utils.io.ChecksumError: a copy whose SHA-256 differs (corrupted, truncated, other version).
    """
    download = bool(opts.extra.get("download"))
    cached = cache_dir_for(source, opts) / source.file
    try:
        data_dir: Path | None = resolve_data_dir(opts.data_dir)
    except FileNotFoundError:
        if not (download or cached.is_file()):
            raise
        data_dir = None
    expected = data_dir / source.folder / source.file if data_dir is not None else None
    if expected is not None and expected.is_file():
        path = expected
    elif cached.is_file():
        path = cached
    elif download:
        path = fetch_file(source.url, cached, source.sha256)
    else:
        where = expected if expected is not None else f"<data dir>/{source.folder}/{source.file}"
        raise FileNotFoundError(
            f"dataset {source.name!r}: file {where} not found. Download {source.url} and place it there "
            f"(SHA-256 {source.sha256}), or load with download=True to fetch it into {cached.parent}"
        )
    verify_sha256(path, source.sha256)
    return path


# ------------------------------------------------------------------------------------------------------- loading


def random_presence(n: int, m: int, rate: float, seed: int) -> np.ndarray:
    """A random presence mask with ``round(rate * n * m)`` entries dropped and at least one view per sample.

    Every sample first keeps one view drawn uniformly; the entries to drop are then drawn uniformly from the
    remaining ``n * (m - 1)`` sample-view entries. (COMPLETER/DCP's missing rate ``p`` on ``V`` views is
    ``rate = p / V``.)

    Args:
        n: number of samples.
        m: number of views.
        rate: share of all sample-view entries to drop, in ``[0, (m - 1) / m]``.
        seed: random seed.

    Returns:
        ``bool[n, m]``, ``True`` where the view is present.
    """
    if n < 0 or m < 1:
        raise ValueError(f"random_presence needs n >= 0 and m >= 1, got n={n}, m={m}")
    max_rate = (m - 1) / m
    if not 0.0 <= rate <= max_rate + 1e-12:
        raise ValueError(
            f"missing rate {rate} must lie in [0, {max_rate:g}] for {m} views (each sample keeps at least one view)"
        )
    present = np.ones((n, m), dtype=bool)
    k = round(rate * n * m)
    if k == 0 or n == 0:
        return present
    rng = np.random.default_rng(seed)
    keep = rng.integers(0, m, size=n)
    # candidate entries: every (sample, view) but the guaranteed one, as flat indices in [0, n*m)
    flat = np.arange(n * m).reshape(n, m)
    candidates = flat[np.arange(m)[None, :] != keep[:, None]]
    drop = rng.choice(candidates, size=min(k, len(candidates)), replace=False)
    present.reshape(-1)[drop] = False
    return present


def _check_read(source: MultiviewSource, views: list[np.ndarray], y: np.ndarray, path: Path) -> None:
    if len(views) != len(source.views):
        raise ValueError(f"{path}: read {len(views)} views, expected {len(source.views)} ({list(source.views)})")
    for name, d, x in zip(source.views, source.dims, views, strict=True):
        if x.shape != (source.num_samples, d):
            raise ValueError(f"{path}: view {name!r} has shape {x.shape}, expected ({source.num_samples}, {d})")
        if not np.isfinite(x).all():
            raise ValueError(f"{path}: view {name!r} holds NaN or Inf")
    if y.shape != (source.num_samples,):
        raise ValueError(f"{path}: labels have shape {y.shape}, expected ({source.num_samples},)")
    classes = np.unique(y)
    if classes.min() != 0 or classes.max() != source.num_classes - 1 or len(classes) != source.num_classes:
        raise ValueError(
            f"{path}: labels cover {len(classes)} classes in [{classes.min()}, {classes.max()}], expected "
            f"0..{source.num_classes - 1}"
        )


def load_multiview(source: MultiviewSource, opts: LoadOptions) -> DatasetBundle:
    """Load ``source`` into a :class:`DatasetBundle` (see the module docstring for the split rule).

    Args:
        source: the table entry.
        opts: loader options; ``extra`` may hold ``download`` (bool), ``cache_dir`` (path),
            ``train_missing_rate`` (float, share of training sample-view entries dropped, default 0) and ``split``
            (``default`` or ``random``, see the module docstring).

    Returns:
        The bundle; every split carries a presence mask (all ``True`` except training views dropped by
        ``train_missing_rate``; dropped entries are zero-filled).
    """
    path = locate_file(source, opts)
    mat = scipy.io.loadmat(str(path))
    views, y, fixed_test = source.reader(mat)
    _check_read(source, views, y, path)

    mode = opts.extra.get("split", "default")
    if mode not in MULTIVIEW_SPLITS:
        raise ValueError(
            f"dataset {source.name!r}: dataset.options.split={mode!r} is not a split of this set; "
            f"use one of {list(MULTIVIEW_SPLITS)}"
        )
    if mode == "random":  # a seeded stratified 80/20 train/test split, even where the file fixes a test split
        fixed_test = None
    split = train_val_test_split(y, opts.seed, opts.val_fraction, fixed_test=fixed_test)
    train_idx, val_idx, test_idx = split.train, split.val, split.test

    rate = float(opts.extra.get("train_missing_rate", 0.0) or 0.0)
    m = len(source.views)
    train_present = random_presence(len(train_idx), m, rate, seed=opts.seed + 2)

    def views_of(idx: np.ndarray) -> dict[str, np.ndarray]:
        return {name: x[idx] for name, x in zip(source.views, views, strict=True)}

    scaler = Standardizer().fit(views_of(train_idx), present=train_present)
    modalities = [ModalitySpec(name, "vector", (d,)) for name, d in zip(source.views, source.dims, strict=True)]
    task = TaskSpec("multiclass", num_classes=source.num_classes, label_names=source.label_names)

    def build(idx: np.ndarray, present: np.ndarray | None = None) -> MultimodalDataset:
        xs = scaler.transform(views_of(idx))
        if present is None:
            present = np.ones((len(idx), m), dtype=bool)
        else:
            for j, name in enumerate(source.views):
                xs[name][~present[:, j]] = 0.0
        return MultimodalDataset(
            modalities,
            task,
            {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in xs.items()},
            torch.from_numpy(y[idx]),
            present=torch.from_numpy(present),
        )

    train, val, test = build(train_idx, train_present), build(val_idx), build(test_idx)
    notes = {
        "split": split.rule,
        "sizes": split.sizes,
        "standardisation": "per-view z-score fitted on the training split only (present rows)",
        "view_names": source.names_note,
        "train_missing_rate": rate,
        "file": source.file,
        "sha256": source.sha256,
        "origin": source.url,
    }
    stats = {name: (scaler.mean[name], scaler.std[name]) for name in source.views}
    return DatasetBundle(
        source.name,
        modalities,
        task,
        default_metric(task),
        train,
        val,
        test,
        source=str(path),
        notes=notes,
        normalization=stats,
    )


def _register(source: MultiviewSource) -> None:
    @register_dataset(source.name, source.description, folder=source.folder, group="multiview")
    def loader(opts: LoadOptions) -> DatasetBundle:
        return load_multiview(source, opts)

    loader.__name__ = f"load_{source.name}"
    loader.__doc__ = f"Load {source.name!r}: {source.description}."


for _source in SOURCES.values():
    _register(_source)
