"""Datasets, the fixed test split, federated partitions and per-client tints.

Note: the function `partition` shadows the submodule of the same name as an
attribute of this package; import the module's other names with
`from securediff.data.partition import ...`.
"""

from securediff.data.datasets import DATASETS, Dataset, DatasetLoader, load_dataset
from securediff.data.idx import read_idx
from securediff.data.medmnist import load_medmnist_npz
from securediff.data.partition import (
    SCHEMES,
    ClientSplit,
    Partition,
    majority_classes,
    minority_classes,
    partition,
    split_test,
)
from securediff.data.tint import apply_tint, client_tint

__all__ = [
    "DATASETS",
    "SCHEMES",
    "ClientSplit",
    "Dataset",
    "DatasetLoader",
    "Partition",
    "apply_tint",
    "client_tint",
    "load_dataset",
    "load_medmnist_npz",
    "majority_classes",
    "minority_classes",
    "partition",
    "read_idx",
    "split_test",
]
