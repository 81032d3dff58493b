"""The user's own data: a directory with ``dataset.yaml`` and one ``.npy`` file per array.

Format (paths are relative to the YAML file's directory)::

    name: my_data
    description: optional free text
    task: {kind: multiclass, num_classes: 5}   # binary | multilabel (num_classes = labels) | regression
                                               # (optional target_range: [-3, 3]); optional label_names: [...]
    primary_metric: accuracy                   # optional; default per task kind (registry.DEFAULT_METRICS)
    modalities:
      - {name: audio, kind: vector, file: audio.npy}                       # [N, d]
      - {name: text, kind: sequence, file: text.npy, lengths: text_len.npy} # [N, T, d] + lengths [N]
      - {name: image, kind: image, file: image.npy}                       # [N, C, H, W]
      - {name: ids, kind: tokens, file: ids.npy, lengths: ids_len.npy}    # [N, T] integers + lengths [N]
    labels: labels.npy      # [N] (multiclass ids 0..C-1, binary 0/1, regression) or [N, L] 0/1 (multilabel)
    split: split.npy        # optional: integer [N], 0 = train, 1 = val, 2 = test
    present: present.npy    # optional: bool [N, M] presence mask, columns in modality order
    labeled: labeled.npy    # optional: bool [N], which labels training may use (others may hold anything)
    standardize: false      # optional: z-score float modalities with train statistics computed by chunks

Modality arrays are never loaded whole: their headers are read when the dataset is opened, and a batch reads only
its rows, with positional reads into the batch's buffer (see :class:`MappedArray`), so the resident memory stays at
the size of the batches in flight however large the files are. Labels, split, presence, labeled and lengths files
are small and read in full.

Modules: :mod:`~robult.data.user.schema` (``dataset.yaml`` validated), :mod:`~robult.data.user.npy` (``.npy``
headers, small arrays), :mod:`~robult.data.user.rows` (row reads), :mod:`~robult.data.user.stats` (standardisation
statistics by chunks), :mod:`~robult.data.user.reader` (the loader, registered as dataset ``user``) and
:mod:`~robult.data.user.writer` (arrays or a bundle written in this format).
"""

from robult.data.user.reader import load_user, load_user_dataset, read_labels
from robult.data.user.rows import MappedArray
from robult.data.user.schema import (
    YAML_NAME,
    MissingFileError,
    ModalityConfig,
    TaskConfig,
    UserDatasetConfig,
    read_config,
)
from robult.data.user.writer import write_bundle, write_user_dataset

__all__ = [
    "YAML_NAME",
    "MappedArray",
    "MissingFileError",
    "ModalityConfig",
    "TaskConfig",
    "UserDatasetConfig",
    "load_user",
    "load_user_dataset",
    "read_config",
    "read_labels",
    "write_bundle",
    "write_user_dataset",
]
