"""Seeded augmentation of image training items: the same (seed, epoch, item) gives the same image, whatever came
before; another epoch gives another; a run with augmentation resumes to exactly the uninterrupted run."""

import numpy as np
import pytest

from transferkit.finetune import FinetuneConfig, FinetuneError, finetune
from transferkit.finetune.augment import Augment, resolve_augment


def test_the_same_seed_epoch_and_item_give_the_same_image(mnist_200):
    item = mnist_200.items[0]
    a, b = Augment("strong", 0), Augment("strong", 0)
    first = np.asarray(a(item, 1, 7))
    for i in range(5):  # other draws in between change nothing
        a(mnist_200.items[i], 1, i)
    assert np.array_equal(np.asarray(a(item, 1, 7)), first) and np.array_equal(np.asarray(b(item, 1, 7)), first)
    others = [np.asarray(a(item, e, 7)) for e in range(2, 6)] + [np.asarray(Augment("strong", 1)(item, 1, 7))]
    assert not any(np.array_equal(o, first) for o in others)
    from transferkit.backbones.preprocess import to_pil

    assert Augment("light", 0)(item, 0, 0).size == to_pil(item).size  # the backbone's preprocessing comes after


def test_auto_means_light_for_images_and_nothing_for_text():
    assert resolve_augment("auto", "image") == "light" and resolve_augment("auto", "text") == "none"
    with pytest.raises(FinetuneError, match="augment"):
        FinetuneConfig(augment="heavy")


def test_an_augmented_run_resumes_exactly(lite0_64, mnist_200, tmp_path):
    from transferkit.backbones import load_backbone

    config = FinetuneConfig(strategy="last-k", last_k=1, epochs=2, batch_size=16, lr=1e-3, augment="light",
                            checkpoint_every=1)
    whole = finetune(lite0_64, mnist_200, tmp_path / "whole", config, backbone_options={"image_size": 64},
                     progress=False)
    from transferkit.errors import Interrupted

    with pytest.raises(Interrupted):
        finetune(load_backbone("effnet:lite0", image_size=64), mnist_200, tmp_path / "cut", config,
                 backbone_options={"image_size": 64}, progress=False, stop_after_steps=9)
    resumed = finetune(load_backbone("effnet:lite0", image_size=64), mnist_200, tmp_path / "cut", config,
                       resume=True, backbone_options={"image_size": 64}, progress=False)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in whole.history]
    assert resumed.metrics == whole.metrics
