"""Retrieval data in BEIR's format: an embedded default (``nave-kjv``), any BEIR folder by path,
or BEIR's public datasets by name when online.

    >>> from maw_gym.data import load_split
    >>> test = load_split("nave-kjv", "test")  # doctest: +SKIP
    >>> len(test.queries), len(test.corpus)  # doctest: +SKIP
    (1139, 31102)
"""

from maw_gym.data.beir_adapter import Split, available_splits, load_split
from maw_gym.data.sources import BEIR_PUBLIC_DATASETS, EMBEDDED_DATASETS, resolve_dataset
from maw_gym.data.validate import DatasetError
from maw_gym.data.writer import write_beir_folder

__all__ = [
    "BEIR_PUBLIC_DATASETS",
    "EMBEDDED_DATASETS",
    "DatasetError",
    "Split",
    "available_splits",
    "load_split",
    "resolve_dataset",
    "write_beir_folder",
]
