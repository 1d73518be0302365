"""Fixtures for fine-tuning tests: a small pretrained CNN at 64 px and small real data sets."""

import pytest


@pytest.fixture(scope="session")
def mnist_200():
    """200 real MNIST digits (20 per class)."""
    from transferkit import datasets
    from transferkit.data import stratified_sample

    ds = datasets.load("mnist")
    return ds.subset(stratified_sample(ds.labels, 200, seed=0))


@pytest.fixture(scope="session")
def tweets_240():
    """240 real tweets labelled positive/negative (VADER |score| ≥ 0.5)."""
    from transferkit import datasets
    from transferkit.data import stratified_sample

    ds = datasets.load("sentiment-tweets")
    return ds.subset(stratified_sample(ds.labels, 240, seed=0))


@pytest.fixture
def lite0_64():
    """A fresh EfficientNet-Lite0 (ImageNet weights) at 64 px: fine-tuning changes it, so one per test.

    (At 32 px its last feature map is 1×1 and full fine-tuning on 140 images barely moves; 64 px learns.)"""
    from transferkit.backbones import load_backbone

    return load_backbone("effnet:lite0", image_size=64)


@pytest.fixture
def minilm_fresh():
    """A fresh all-MiniLM-L6-v2 (bundled copy): fine-tuning changes it, so one per test."""
    from transferkit.backbones import load_backbone

    return load_backbone("st:all-MiniLM-L6-v2")
