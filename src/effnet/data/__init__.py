"""Datasets for training and evaluation: image folders (skip-and-count of unreadable files), Fashion-MNIST, the
paper's training augmentation and the model's eval preprocessing, and deterministic, resumable loading."""

from effnet.data.images import IMAGE_SUFFIXES, Skipped, UnreadableImage, load_image
from effnet.data.loader import ResumableSampler, ShardSampler, TransformedSource, collate, mix_seed
from effnet.data.sources import (
    FASHION_MNIST_CLASSES,
    DataError,
    FashionMNISTSource,
    ImageFolderSource,
    ImageSource,
    SourcePair,
    check_usable,
    is_fashion_mnist,
    open_source,
    open_sources,
)
from effnet.data.transforms import AUGMENTATIONS, GreyToRGB, eval_transform, train_transform

__all__ = [
    "AUGMENTATIONS", "FASHION_MNIST_CLASSES", "IMAGE_SUFFIXES", "DataError", "FashionMNISTSource", "GreyToRGB",
    "ImageFolderSource", "ImageSource", "ResumableSampler", "ShardSampler", "Skipped", "SourcePair",
    "TransformedSource", "UnreadableImage", "check_usable", "collate", "eval_transform", "is_fashion_mnist",
    "load_image", "mix_seed", "open_source", "open_sources", "train_transform",
]
