"""Loaders for the paper's benchmarks in their public release formats, one module per dataset family:

- :mod:`robult.data.paper.affect`: CMU-MOSI / CMU-MOSEI (MMSA or MultiBench pickles), sentiment regression;
- :mod:`robult.data.paper.mmimdb`: MM-IMDb (``multimodal_imdb.hdf5``), 23-genre multilabel.

(Food-101 and Hateful Memes, which ship raw images and text, are encoded by the preparation step,
:mod:`robult.prepare`.) Importing this package registers ``mosi``, ``mosei`` and ``mmimdb`` (group ``paper``); each
reads ``<data_dir>/<folder>/``, or ``load_dataset(name, path=FILE)`` an explicit file.
"""

from robult.data.paper.affect import MOSEI_FILES, MOSI_FILES, detect_affect_format, load_mosei, load_mosi
from robult.data.paper.mmimdb import MMIMDB_MULTIBENCH_SPLIT, load_mmimdb

__all__ = [
    "MMIMDB_MULTIBENCH_SPLIT",
    "MOSEI_FILES",
    "MOSI_FILES",
    "detect_affect_format",
    "load_mmimdb",
    "load_mosei",
    "load_mosi",
]
