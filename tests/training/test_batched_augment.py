"""The batch-wise augmentation of the new data path (AlignmentDataset.batch, issue 11) against today's per-sample
one (``ds[i]`` + default_collate): the same random draws give the same image bytes, the same float images and the
same labels, bit for bit."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engine.training.augment import (AugmentConfig, add_occluder, add_occluder_inplace, augment_image_into,  # noqa: E402
                                     augment_with_affine, colour_jitter, colour_jitter_inplace, warp_point_batch)

SIZE = 120


def _crop(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)  # smooth content plus noise: every grey level and strong edges occur
    yy, xx = np.mgrid[:SIZE, :SIZE]
    base = (np.sin(xx / 7.0 + seed) + np.cos(yy / 11.0)) * 60 + 128
    img = base[..., None] + rng.normal(0, 40, (SIZE, SIZE, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("blur", [0.0, 1.0])
def test_colour_table_gives_the_per_pixel_jitter(blur):
    cfg = AugmentConfig(blur=blur, colour=(0.3, 1.9), brightness=60.0)  # wide: clipping at both ends happens
    for s in range(20):
        img = _crop(s)
        want = colour_jitter(img, np.random.default_rng(s), cfg)
        got = img.copy()
        colour_jitter_inplace(got, np.random.default_rng(s), cfg)
        assert np.array_equal(got, want), s


def test_inplace_steps_use_the_same_draws():
    cfg = AugmentConfig(blur=0.5)
    for s in range(40):
        img = _crop(s)
        a, b = np.random.default_rng(s), np.random.default_rng(s)
        want = add_occluder(colour_jitter(img, a, cfg), a)
        got = img.copy()
        colour_jitter_inplace(got, b, cfg)
        add_occluder_inplace(got, b)
        assert np.array_equal(got, want), s
        assert a.random() == b.random(), s  # both generators are at the same point of their stream


def test_image_and_points_match_augment_with_affine():
    cfg = AugmentConfig(occlude=0.6, blur=0.3)
    perm = np.roll(np.arange(30), 7)
    perm21 = np.arange(21)[::-1].copy()
    flips = set()
    for s in range(60):
        img = _crop(s)
        rs = np.random.default_rng(1000 + s)
        pts = rs.uniform(-10, 130, (30, 3)).astype(np.float32)
        p21 = rs.uniform(0, 120, (21, 2)).astype(np.float32)
        p21[rs.random(21) < 0.3] = np.nan
        want_img, (want_pts, want_21), want_m, want_flip = augment_with_affine(
            img, [pts, p21], [perm, perm21], np.random.default_rng(s), cfg)
        out = np.empty_like(img)
        m, flip = augment_image_into(img, out, np.random.default_rng(s), cfg)
        assert np.array_equal(out, want_img) and np.array_equal(m, want_m) and flip == want_flip, s
        got_pts = warp_point_batch(pts[None], m[None], np.array([flip]), perm)[0]
        got_21 = warp_point_batch(p21[None], m[None], np.array([flip]), perm21)[0]
        assert got_pts.dtype == np.float32 and np.array_equal(got_pts, want_pts), s
        assert np.array_equal(got_21, want_21, equal_nan=True), s
        flips.add(flip)
    assert flips == {True, False}


def _collated(ds, idx):
    from torch.utils.data import default_collate

    return default_collate([ds[i] for i in idx])


@pytest.mark.parametrize("cfg", ["default", "paper", "heavy", "none"])
def test_batched_dataset_equals_per_sample_collation(train_dir, cfg):
    from engine.methods.prnet.train import PAPER_AUGMENT
    from engine.training.dataset import AlignmentDataset, CollatedBatch, use_batched_augmentation
    from engine.training.targets import load_training_set

    ts = load_training_set(limit=48)
    config = {"default": AugmentConfig(), "paper": PAPER_AUGMENT, "none": None,
              "heavy": AugmentConfig(occlude=0.8, blur=0.5)}[cfg]
    ds = AlignmentDataset(ts, config, seed=3)
    idx = [int(i) for i in np.random.default_rng(0).permutation(len(ts))[:40]]
    for epoch in (0, 2):
        ds.set_epoch(epoch)
        ds.batched = False
        want = _collated(ds, idx)
        assert isinstance(ds.__getitems__(idx), list)  # per-sample unless turned on
        assert use_batched_augmentation(ds, True)
        got = ds.__getitems__(idx)
        assert isinstance(got, CollatedBatch) and set(got) == set(want)
        for k in want:
            assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
            assert torch.equal(got[k], want[k]), (k, epoch)
        if config is not None:
            assert 0 < int(got["flipped"].sum()) < len(idx)


def test_loader_batches_equal_with_and_without_batched_augmentation(train_dir):
    from engine.training.batches import batches, make_loader
    from engine.training.dataset import use_batched_augmentation
    from engine.training.recipes import get_recipe
    from engine.training.targets import load_training_set

    ts = load_training_set(limit=24)
    recipe = get_recipe("baseline")

    def epoch(batched, overlap):
        ds = recipe.make_dataset(ts, 0)
        use_batched_augmentation(ds, batched)
        g = torch.Generator()
        g.manual_seed(5)
        loader = make_loader(ds, 8, g, overlap, recipe.batch_targets)
        return list(batches(loader, recipe.batch_targets, torch.device("cpu"), overlap, channels_last=True))

    ref = epoch(False, "none")
    for batched, overlap in [(True, "none"), (True, "thread"), (True, "worker")]:
        got = epoch(batched, overlap)
        assert len(got) == len(ref) == 3
        for a, b in zip(ref, got):
            assert set(a) == set(b)
            assert b["image"].is_contiguous(memory_format=torch.channels_last)
            for k in a:
                assert torch.equal(a[k], b[k]), k


def test_subclass_with_its_own_samples_stays_per_sample(train_dir):
    from engine.methods.prnet.train import PositionMapDataset
    from engine.training.dataset import use_batched_augmentation
    from engine.training.targets import load_training_set

    ds = PositionMapDataset(load_training_set(limit=4), AugmentConfig(), seed=0)
    assert not use_batched_augmentation(ds, True)
    assert isinstance(ds.__getitems__([0, 1]), list) and "position_map" in ds.__getitems__([0, 1])[0]
