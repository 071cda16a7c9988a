"""CIFAR-10 data: download/verify/load (``cifar10``), batch transforms, and a loader.

    from minidl.data import load_cifar10, build_transform, DataLoader
    data = load_cifar10(data_dir="../shared/data")
    train = DataLoader(data.train_images, data.train_labels, 128, device="cuda",
                       transform=build_transform(224, augment=True))
"""
from .cifar10 import (CIFAR10, CIFAR10_MD5, CIFAR10_URL, DatasetError, default_cache_dir, download_and_extract,
                      load_batch, load_cifar10, safe_extract, verify_md5)
from .loader import DataLoader
from .transforms import (Transform, build_transform, per_image_standardization, random_crop,
                         random_horizontal_flip, resize_bilinear)

__all__ = ["CIFAR10", "CIFAR10_MD5", "CIFAR10_URL", "DataLoader", "DatasetError", "Transform", "build_transform",
           "default_cache_dir", "download_and_extract", "load_batch", "load_cifar10", "per_image_standardization",
           "random_crop", "random_horizontal_flip", "resize_bilinear", "safe_extract", "verify_md5"]
