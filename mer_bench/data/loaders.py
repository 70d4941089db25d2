"""Where each data setting's files live, and loading them into a ``DatasetBundle``.

Layout under the data root (``--data-root ROOT`` or env ``MER_BENCH_DATA``; docs/architecture.md):

- IID: ``ROOT/CMU-<NAME>/Processed/{aligned,unaligned}_50.pkl``; MMSA's own tree
  ``ROOT/<NAME>/Processed/...`` is tried second.
- OOD (CIDer): ``ROOT/OOD_<NAME>/{binary,seven}/<NAME>_{aligned,unaligned}_50.pkl`` (joblib).
  The task picks the file, because CIDer re-partitions each task separately (docs/cider.md, Q-22);
  the regression task, which CIDer does not define, uses the ``binary`` re-partition.
- Cross-dataset (aligned only): ``ROOT/MSA_cross_datasets/<name>.pkl`` gives train and valid;
  the test split is the partner file's test split (mosi ↔ mosei; synth → synth_b).

Cross-dataset files differ in text length (44 for MOSI, 75 for MOSEI), so the test split is
brought to the training file's length n along time (``fit_time_length``):

- shorter: padded at the end with [PAD] ids, mask 0, segment 0 and zero features;
- longer: a sample whose text fits in n keeps its first n positions (the rest is padding);
  a longer sample keeps its first n − 1 positions and then its last valid position (its
  [SEP]) at n − 1, in every time-aligned array (ids, mask, segments, text features, audio,
  vision). The text therefore still ends with [SEP] at its last valid position, and each
  aligned audio/vision frame stays paired with its token. Lengths become min(length, n).

Files are read through the import cache (``mer_bench.data.cache``): parsed once in a sandbox,
then memory-mapped. Loaded files are also cached in-process (keyed by resolved path, mtime, size
and the file's role), so the settings that share a file validate it once. Cached splits are
shared and their big arrays are copy-on-write memory maps: never write into them (a write
stays in this process but changes the split every setting sharing it sees).

Each bundle names the files it read with their SHA-256 (``DatasetBundle.files``, taken from
the import cache); ``data_files`` gives the same without loading, for the runner's resume
check (docs/architecture.md, results store).
"""

from __future__ import annotations

import importlib
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mer_bench.data import cache
from mer_bench.data.schema import inspect_file
from mer_bench.data.types import DataFile, DatasetBundle, DataSpec, Split
from mer_bench.errors import DataError
from mer_bench.protocol import Alignment, Dataset, DataSetting, Distribution, Task

ENV_DATA_ROOT = "MER_BENCH_DATA"
CACHE_MAX_FILES = 2
"""Files kept in the in-process cache, least recently used dropped first. Two covers a
cross-dataset pair; more would pin several GB once MOSEI files are involved."""


@dataclass(frozen=True)
class DatasetLayout:
    """How one dataset's files are named under the data root."""

    name: str
    """Upper-case stem: ``MOSI`` in ``CMU-MOSI``, ``OOD_MOSI``, ``MOSI_aligned_50.pkl``."""
    iid_dirs: tuple[str, ...]
    """IID folders, tried in order."""
    cross_file: str
    """Stem of its cross-dataset file (train/valid when training on it)."""
    cross_partner: str
    """Stem of the cross-dataset file whose test split it is tested on."""
    synthetic: bool = False


LAYOUTS: dict[Dataset, DatasetLayout] = {
    Dataset.MOSI: DatasetLayout("MOSI", ("CMU-MOSI", "MOSI"), "mosi", "mosei"),
    Dataset.MOSEI: DatasetLayout("MOSEI", ("CMU-MOSEI", "MOSEI"), "mosei", "mosi"),
    Dataset.SYNTH: DatasetLayout("SYNTH", ("CMU-SYNTH", "SYNTH"), "synth", "synth_b", True),
}

OOD_TASK_DIR: dict[Task, str] = {
    Task.BINARY: "binary",
    Task.SEVEN: "seven",
    Task.REGRESSION: "binary",
}
"""OOD re-partition used by each task (regression has none of its own: binary's)."""

CROSS_DIR = "MSA_cross_datasets"

WHERE_TO_GET: dict[Distribution, str] = {
    Distribution.IID: (
        "download MMSA's processed MOSI/MOSEI features (BERT, aligned_50/unaligned_50) from the "
        "links in https://github.com/thuiar/MMSA (README, section Datasets)"
    ),
    Distribution.OOD: (
        "download CIDer's OOD re-partitions from the links in https://github.com/gw-zhong/CIDer "
        "(README, 'Download the datasets')"
    ),
    Distribution.CROSS: (
        "get CIDer's cross-dataset pickles (MSA_cross_datasets/mosi.pkl, mosei.pkl) as described "
        "in https://github.com/gw-zhong/CIDer"
    ),
}
SYNTH_HINT = (
    "write the synthetic files with `python -m mer_bench data synth --out ROOT`, or omit "
    "--data-root to use the built-in cache"
)


def data_root(value: str | Path | None) -> Path:
    """The data root: the CLI value, else env ``MER_BENCH_DATA``; DataError if neither is set."""
    if value is None or str(value) == "":
        value = os.environ.get(ENV_DATA_ROOT) or None
    if value is None:
        raise DataError(
            f"no data root given: pass --data-root ROOT or set {ENV_DATA_ROOT}=ROOT, where ROOT "
            "holds CMU-MOSI/, CMU-MOSEI/, OOD_MOSI/, OOD_MOSEI/ and MSA_cross_datasets/ "
            "(the built-in synthetic dataset, --dataset synth, needs none)"
        )
    root = Path(value).expanduser()
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist or is not a folder")
    return root


def _layout(dataset: Dataset) -> DatasetLayout:
    try:
        return LAYOUTS[dataset]
    except KeyError:
        raise DataError(f"no file layout is known for dataset {dataset.value!r}") from None


def candidate_paths(setting: DataSetting, root: Path) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    """Paths tried, in order, for (train/valid file, test file) of a setting."""
    lay = _layout(setting.dataset)
    align = setting.alignment.value
    dist = setting.distribution
    if dist is Distribution.IID:
        paths = tuple(root / d / "Processed" / f"{align}_50.pkl" for d in lay.iid_dirs)
        return paths, paths
    if dist is Distribution.OOD:
        folder = root / f"OOD_{lay.name}" / OOD_TASK_DIR[setting.task]
        paths = (folder / f"{lay.name}_{align}_50.pkl",)
        return paths, paths
    return (root / CROSS_DIR / f"{lay.cross_file}.pkl",), (
        root / CROSS_DIR / f"{lay.cross_partner}.pkl",
    )


def resolve_files(setting: DataSetting, root: Path, *, need_test: bool = True) -> tuple[Path, Path]:
    """(train/valid file, test file) of a setting; DataError naming every path tried if absent.

    With ``need_test=False`` the test file is located but not required: a missing one is
    returned as its first candidate path (for ``load_bundle(..., test=False)``).
    """
    found: list[Path] = []
    for role, paths in zip(("train/valid", "test"), candidate_paths(setting, Path(root))):
        if role == "test" and not need_test:
            found.append(next((p for p in paths if p.is_file()), paths[0]))
            continue
        hit = next((p for p in paths if p.is_file()), None)
        if hit is None:
            hint = (
                SYNTH_HINT
                if _layout(setting.dataset).synthetic
                else WHERE_TO_GET[setting.distribution]
            )
            raise DataError(
                f"{role} data file for {setting.id} not found; looked for "
                f"{' and '.join(str(p) for p in paths)}; {hint}"
            )
        found.append(hit)
    return found[0], found[1]


def check_plan_data(
    settings: Iterable[DataSetting], root: Path | str | None = None
) -> dict[DataSetting, tuple[DataFile, ...]]:
    """Resolve and validate every data file that ``settings`` need, before anything is trained.

    First every file is located: all missing files are reported together, in one ``DataError``
    that says where to get each kind. Then every file is loaded and validated (schema, shapes,
    cross-dataset widths) through :func:`load_bundle`, and all failures are reported together.
    Loaded files stay in the in-process cache, so the first setting does not read its file again.
    Returns the files each setting reads, with their SHA-256.
    """
    unique = sorted(set(settings))
    missing: list[str] = []
    seen: set[tuple[Path, ...]] = set()
    hints: dict[str, None] = {}
    bases: dict[DataSetting, Path] = {}
    for setting in unique:
        layout = _layout(setting.dataset)
        if layout.synthetic and (root is None or str(root) == ""):
            continue  # generated on demand into its cache folder
        base = bases[setting] = data_root(root)
        train_paths, test_paths = candidate_paths(setting, base)
        roles = (
            {train_paths: "data"}
            if train_paths == test_paths
            else {
                train_paths: "train/valid",
                test_paths: "test",
            }
        )
        for paths, role in roles.items():
            if paths in seen or any(p.is_file() for p in paths):
                continue
            seen.add(paths)
            missing.append(f"{role} file for {setting.id} ({' or '.join(map(str, paths))})")
            hints[SYNTH_HINT if layout.synthetic else WHERE_TO_GET[setting.distribution]] = None
    if missing:
        raise DataError(
            f"{len(missing)} data file(s) missing, nothing was trained: {'; '.join(missing)}. "
            f"Where to get them: {' | '.join(hints)}"
        )
    problems = []
    files: dict[DataSetting, tuple[DataFile, ...]] = {}
    for setting in unique:
        try:
            files[setting] = load_bundle(setting, bases.get(setting, root)).files
        except DataError as exc:
            problems.append(f"{setting.id}: {exc}")
    if problems:
        raise DataError(f"invalid data, nothing was trained: {'; '.join(problems)}")
    return files


# ----------------------------------------------------------------------------- loading

_cache: OrderedDict[tuple[str, int, int, Distribution], dict[str, Split]] = OrderedDict()
_cache_lock = threading.Lock()
_digests: dict[tuple[str, int, int], str] = {}
"""SHA-256 of each file seen by this process, keyed by (resolved path, mtime, size)."""


def clear_cache() -> None:
    """Drop every cached file (frees their arrays once no bundle refers to them)."""
    with _cache_lock:
        _cache.clear()
        _digests.clear()


def _file_key(path: Path) -> tuple[str, int, int]:
    try:
        st = path.stat()
    except OSError as exc:
        raise DataError(f"{path}: cannot read data file ({exc.strerror or exc})") from None
    return (str(path.resolve()), st.st_mtime_ns, st.st_size)


def load_file(path: Path, kind: Distribution) -> dict[str, Split]:
    """Safely load and strictly validate one data file: ``{"train", "valid", "test"}`` splits.

    ``kind`` is the file's role (IID, OOD or cross-dataset), which sets the label rules.
    Cached by (resolved path, mtime, size, kind).
    """
    path = Path(path)
    key = (*_file_key(path), kind)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return dict(_cache[key])
    imported = cache.load(path)
    splits = inspect_file(imported.content, path, kind=kind).splits
    sha256 = imported.sha256
    del imported
    with _cache_lock:
        _digests[key[:3]] = sha256
        _cache[key] = splits
        while len(_cache) > CACHE_MAX_FILES:
            _cache.popitem(last=False)
    return dict(splits)


def file_sha256(path: Path) -> str:
    """SHA-256 of a data file: remembered from its load in this process, else from the import
    cache, else computed (see ``cache.digest``)."""
    path = Path(path)
    key = _file_key(path)
    with _cache_lock:
        known = _digests.get(key)
    if known is None:
        known = cache.digest(path)
        with _cache_lock:
            _digests[key] = known
    return known


def _files(train_path: Path, test_path: Path | None) -> tuple[DataFile, ...]:
    """The files a bundle reads, each with its role and digest."""
    if test_path is None:
        return (DataFile("train/valid", train_path.name, file_sha256(train_path)),)
    if train_path.resolve() == test_path.resolve():
        return (DataFile("train/valid/test", train_path.name, file_sha256(train_path)),)
    return (
        DataFile("train/valid", train_path.name, file_sha256(train_path)),
        DataFile("test", test_path.name, file_sha256(test_path)),
    )


def data_files(
    setting: DataSetting, root: Path | str | None = None, *, test: bool = True
) -> tuple[DataFile, ...]:
    """The files ``load_bundle(setting, root, test=test)`` reads, with their SHA-256, without
    loading them (digests come from this process's loads or the import cache)."""
    train_path, test_path = resolve_files(setting, _base(setting, root), need_test=test)
    return _files(train_path, test_path if test else None)


def fit_time_length(split: Split, n: int) -> Split:
    """Pad or truncate a split's time axis to text length ``n`` (rule in the module docstring).

    Arrays whose time axis is not the text's (unaligned audio/vision) are left unchanged.
    """
    m = split.text_bert.shape[2]
    if m == n:
        return split
    lengths = split.text_lengths
    if m < n:

        def fit(a: np.ndarray, axis: int) -> np.ndarray:
            widths = [(0, 0)] * a.ndim
            widths[axis] = (0, n - m)
            # Zeros are right for every array: [PAD] id, mask 0, segment 0, silent frames.
            return np.pad(a, widths)

    else:
        index = np.broadcast_to(np.arange(n), (split.size, n)).copy()
        index[:, n - 1] = np.where(lengths > n, lengths - 1, n - 1)

        def fit(a: np.ndarray, axis: int) -> np.ndarray:
            shape = [1] * a.ndim
            shape[0], shape[axis] = split.size, n
            return np.take_along_axis(a, index.reshape(shape), axis=axis)

    def fit_frames(a: np.ndarray, frame_lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if a.shape[1] != m:
            return a, frame_lengths
        return fit(a, 1), np.minimum(frame_lengths, n)

    audio, audio_lengths = fit_frames(split.audio, split.audio_lengths)
    vision, vision_lengths = fit_frames(split.vision, split.vision_lengths)
    return replace(
        split,
        text_bert=fit(split.text_bert, 2),
        text_feats=None if split.text_feats is None else fit(split.text_feats, 1),
        audio=audio,
        vision=vision,
        audio_lengths=audio_lengths,
        vision_lengths=vision_lengths,
    )


def _check_test_matches(train: Split, test: Split, train_path: Path, test_path: Path) -> None:
    """The cross-dataset test file must share the training file's feature widths."""
    pairs = (
        ("audio", train.audio.shape[2], test.audio.shape[2]),
        ("vision", train.vision.shape[2], test.vision.shape[2]),
        (
            "text",
            None if train.text_feats is None else train.text_feats.shape[2],
            None if test.text_feats is None else test.text_feats.shape[2],
        ),
    )
    for key, want, got in pairs:
        if want != got:
            raise DataError(
                f"{test_path}: split 'test', key {key!r}: expected feature width {want} as in "
                f"{train_path}, found {got}"
            )


def _as_aligned(split: Split, path: Path) -> Split:
    """Aligned data: check one shared time axis; audio/vision lengths = text lengths."""
    n = split.text_bert.shape[2]
    for key, a in (("audio", split.audio), ("vision", split.vision)):
        if a.shape[1] != n:
            raise DataError(
                f"{path}: split {split.name!r}, key {key!r}: expected {n} time steps (aligned "
                f"to the text), found shape {list(a.shape)}"
            )
    lengths = split.text_lengths
    if np.array_equal(split.audio_lengths, lengths) and np.array_equal(
        split.vision_lengths, lengths
    ):
        return split
    return replace(split, audio_lengths=lengths, vision_lengths=lengths)


class SealedSplit(Split):
    """Stands in for a split that must not be read (the test split while tuning).

    Every attribute read raises ``DataError``, so a code path that would touch the split fails
    loudly instead of silently leaking its labels or features.
    """

    def __init__(self, name: str, reason: str) -> None:
        object.__setattr__(self, "_sealed", (name, reason))

    def __getattribute__(self, attr: str) -> object:
        if attr in ("_sealed", "__class__", "__repr__", "__dict__"):
            return object.__getattribute__(self, attr)
        name, reason = object.__getattribute__(self, "_sealed")
        raise DataError(f"the {name} split is sealed ({reason}); reading {attr!r} is refused")

    def __repr__(self) -> str:
        name, reason = object.__getattribute__(self, "_sealed")
        return f"SealedSplit({name!r}, {reason!r})"


def load_bundle(
    setting: DataSetting, root: Path | str | None = None, *, test: bool = True
) -> DatasetBundle:
    """Load a data setting's train/valid/test splits and the spec models are built for.

    Synthetic data without a root comes from ``mer_bench.data.synth.ensure_synth()`` (its cache
    folder); real data needs ``root`` or ``MER_BENCH_DATA``.

    ``test=False`` (hyperparameter tuning) returns a bundle whose test split is a
    ``SealedSplit``: any read raises, and a cross-dataset partner file is never opened.
    """
    train_path, test_path = resolve_files(setting, _base(setting, root), need_test=test)
    kind = setting.distribution
    splits = load_file(train_path, kind)
    train, valid = splits["train"], splits["valid"]
    if not test:
        aligned = setting.alignment is Alignment.ALIGNED
        if aligned:
            train, valid = _as_aligned(train, train_path), _as_aligned(valid, train_path)
        return DatasetBundle(
            setting=setting,
            train=train,
            valid=valid,
            test=SealedSplit("test", "test=False: validation-only use"),
            spec=_spec(setting, train, aligned),
            sources={"train": train_path, "valid": train_path},
            files=_files(train_path, None),
        )
    if kind is Distribution.CROSS:
        n = train.text_bert.shape[2]
        test = load_file(test_path, kind)["test"]
        _check_test_matches(train, test, train_path, test_path)
        test = fit_time_length(test, n)
    else:
        test = splits["test"]
    aligned = setting.alignment is Alignment.ALIGNED
    if aligned:
        train, valid = _as_aligned(train, train_path), _as_aligned(valid, train_path)
        test = _as_aligned(test, test_path)
    return DatasetBundle(
        setting=setting,
        train=train,
        valid=valid,
        test=test,
        spec=_spec(setting, train, aligned),
        sources={"train": train_path, "valid": train_path, "test": test_path},
        files=_files(train_path, test_path),
    )


def _base(setting: DataSetting, root: Path | str | None) -> Path:
    """The folder a setting's files are looked up in: the synthetic cache when no root is given
    for the synthetic dataset (generated on first use), else the data root."""
    if _layout(setting.dataset).synthetic and (root is None or str(root) == ""):
        synth = importlib.import_module("mer_bench.data.synth")
        return Path(synth.ensure_synth())
    return data_root(root)


def _spec(setting: DataSetting, train: Split, aligned: bool) -> DataSpec:
    """The shapes a model is built for, taken from the training split."""
    return DataSpec.from_split(train, aligned, setting.task)
