"""Data: CIFAR-10 download/verify/load (``cifar10``), folders of your own images, transforms, loaders.

    from minidl.data import load_cifar10, build_transform, DataLoader
    data = load_cifar10(data_dir="../shared/data")
    train = DataLoader(data.train_images, data.train_labels, 128, device="cuda",
                       transform=build_transform(224, augment=True))

    from minidl.data import load_image_folder, ImageFolderLoader, RandomResizedCrop
    splits = load_image_folder("photos/", val_fraction=0.1, test_fraction=0.1)
    train = ImageFolderLoader(splits.train, 64, RandomResizedCrop(224), device="cuda",
                              mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

    from minidl.data import imagenet     # ImageNet-1k: CLASS_NAMES (1,000), MEAN, STD, crop sizes
"""
from .cifar10 import (CIFAR10, CIFAR10_MD5, CIFAR10_URL, DatasetError, data_dir_from_env, default_cache_dir,
                      download_and_extract, load_batch, load_cifar10, safe_extract, verify_md5)
from .folder import IMAGE_EXTENSIONS, FolderSplits, ImageFolder, load_image_folder, split_by_fraction
from . import imagenet
from .folder_loader import ImageFolderLoader, channel_mean_std, default_workers, folder_loaders
from .image_ops import RandomResizedCrop, ResizeCenterCrop, decode_crop
from .loader import DataLoader, SeededBatches
from .transforms import (Transform, build_transform, normalize, per_image_standardization, random_crop,
                         random_horizontal_flip, resize_bilinear)

__all__ = ["CIFAR10", "CIFAR10_MD5", "CIFAR10_URL", "DataLoader", "DatasetError", "FolderSplits", "IMAGE_EXTENSIONS",
           "ImageFolder", "ImageFolderLoader", "RandomResizedCrop", "ResizeCenterCrop", "SeededBatches", "Transform",
           "build_transform", "channel_mean_std", "data_dir_from_env", "decode_crop", "default_cache_dir",
           "default_workers", "download_and_extract", "folder_loaders", "imagenet", "load_batch", "load_cifar10",
           "load_image_folder", "normalize",
           "per_image_standardization", "random_crop", "random_horizontal_flip", "resize_bilinear", "safe_extract",
           "split_by_fraction", "verify_md5"]
