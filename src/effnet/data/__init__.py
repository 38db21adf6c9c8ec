"""Datasets for training and evaluation: image folders (skip-and-count of unreadable files), Fashion-MNIST, the
paper's training augmentation and the model's eval preprocessing, and deterministic, resumable loading."""

from effnet.data.loader import ResumableSampler, ShardSampler, Skipped, TransformedSource, collate, mix_seed
from effnet.data.sources import (
    FASHION_MNIST_CLASSES,
    DataError,
    FashionMNISTSource,
    ImageFolderSource,
    ImageSource,
    SourcePair,
    UnreadableImage,
    check_usable,
    is_fashion_mnist,
    open_source,
    open_sources,
)
from effnet.data.transforms import AUGMENTATIONS, GreyToRGB, eval_transform, train_transform

__all__ = [
    "AUGMENTATIONS", "FASHION_MNIST_CLASSES", "DataError", "FashionMNISTSource", "GreyToRGB", "ImageFolderSource",
    "ImageSource", "ResumableSampler", "ShardSampler", "Skipped", "SourcePair", "TransformedSource", "UnreadableImage",
    "check_usable", "collate", "eval_transform", "is_fashion_mnist", "mix_seed", "open_source", "open_sources",
    "train_transform",
]
