"""The blog's CIFAR-10 MLP experiment (``modman cifar``, its sweep) and lr transfer across width
(``modman lr-transfer``)."""

from .cifar import UPDATES, CifarConfig, CifarMLP, download_cifar10, load_cifar10, result_name, run_cifar

__all__ = ["CifarConfig", "CifarMLP", "UPDATES", "download_cifar10", "load_cifar10", "run_cifar", "result_name"]
