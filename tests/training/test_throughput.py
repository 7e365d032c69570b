"""Training throughput (issue 11): the validated crop cache, numerics of the new data path and channels_last, the
resumable learning-rate schedule, and training from a pack."""
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")


# --- the uint8 cache -------------------------------------------------------------------------------------------

def _sources(tmp_path, n=3):
    files = []
    for i in range(n):
        f = tmp_path / f"src{i}.bin"
        f.write_bytes(bytes([i]) * (10 + i))
        files.append(f)
    return files


def _counting_fill(calls, value=7):
    def fill(out):
        calls.append(1)
        out[:] = (np.arange(out.size) % 251).reshape(out.shape).astype(np.uint8) + value
    return fill


def test_cache_is_reused_when_valid(tmp_path):
    from engine.training.cache import cached_uint8, files_fingerprint

    fp = files_fingerprint(_sources(tmp_path))
    calls = []
    a = np.array(cached_uint8(tmp_path / "c.u8", fp, (4, 5, 6), _counting_fill(calls)))
    b = cached_uint8(tmp_path / "c.u8", fp, (4, 5, 6), _counting_fill(calls))
    assert len(calls) == 1 and isinstance(b, np.memmap) and (np.asarray(b) == a).all()
    assert not list(tmp_path.glob(".*.tmp"))  # nothing half-written left behind


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "garbage_header", "wrong_shape"])
def test_corrupted_cache_is_rebuilt_not_trusted(tmp_path, damage):
    from engine.training.cache import HEADER_BYTES, cached_uint8, files_fingerprint, validate

    fp = files_fingerprint(_sources(tmp_path))
    path = tmp_path / "c.u8"
    calls = []
    want = np.array(cached_uint8(path, fp, (4, 5, 6), _counting_fill(calls)))
    raw = bytearray(path.read_bytes())
    shape = (4, 5, 6)
    if damage == "flip_byte":
        raw[HEADER_BYTES + 37] ^= 0xFF
    elif damage == "truncate":
        raw = raw[:-10]
    elif damage == "garbage_header":
        raw[:40] = b"x" * 40
    else:
        shape = (4, 5, 7)
    path.write_bytes(bytes(raw))
    mm, why = validate(path, fp, shape)
    assert mm is None and why
    got = cached_uint8(path, fp, shape, _counting_fill(calls))
    assert len(calls) == 2
    if shape == (4, 5, 6):
        assert (np.asarray(got) == want).all()


def test_stale_cache_is_rebuilt_when_a_source_changes(tmp_path):
    from engine.training.cache import cached_uint8, files_fingerprint

    files = _sources(tmp_path)
    path = tmp_path / "c.u8"
    calls = []
    cached_uint8(path, files_fingerprint(files), (2, 3), _counting_fill(calls, 1))
    st = files[1].stat()
    os.utime(files[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))  # touched, same bytes (a fresh clone)
    cached_uint8(path, files_fingerprint(files), (2, 3), _counting_fill(calls, 9))
    assert len(calls) == 1                                                # reused
    files[1].write_bytes(bytes([7]) * 11)                                 # same size, other bytes
    got = cached_uint8(path, files_fingerprint(files), (2, 3), _counting_fill(calls, 2))
    assert len(calls) == 2 and int(np.asarray(got)[0, 0]) == 2
    files[2].write_bytes(b"longer content than before")
    cached_uint8(path, files_fingerprint(files), (2, 3), _counting_fill(calls, 3))
    cached_uint8(path, files_fingerprint(files[:2]), (2, 3), _counting_fill(calls, 4))  # a source removed
    assert len(calls) == 4


def test_training_crops_from_the_cache_equal_fresh_decoding(train_dir):
    from engine.training.targets import load_images, load_training_set

    ts = load_training_set(limit=12)
    assert isinstance(ts.images, np.memmap) and ts.images.dtype == np.uint8
    assert (np.asarray(ts.images) == load_images(train_dir / "images", ts.names)).all()


# --- numerics of the new path ----------------------------------------------------------------------------------

# PRNet on the face-model layout: the recipe whose per-sample numpy targets the benchmark's "old" path keeps
FACE_MODEL_PRNET = "engine.methods.prnet.train"


def _recipe_names():
    from engine.training.recipes import trainable

    return sorted(trainable()) + [FACE_MODEL_PRNET]


def _one_batch(recipe, ts, n=8, legacy=False):
    from torch.utils.data import default_collate

    recipe.legacy_data_path = legacy
    ds = recipe.make_dataset(ts, 0)
    return recipe.batch_targets(default_collate([ds[i] for i in range(n)]))


def test_new_data_path_gives_the_legacy_targets(train_dir):
    from engine.training.recipes import get_recipe
    from engine.training.targets import load_training_set

    ts = load_training_set(limit=8)
    old = _one_batch(get_recipe(FACE_MODEL_PRNET), ts, legacy=True)   # per-sample numpy maps
    new = _one_batch(get_recipe(FACE_MODEL_PRNET), ts, legacy=False)  # batched torch maps
    assert set(old) == set(new)
    for k in old:
        assert torch.allclose(old[k].float(), new[k].float(), atol=1e-6), k
    lm = ts.points[new["index"].numpy()]
    a = new["affine"].numpy()
    xy = np.einsum("bij,bpj->bpi", a[:, :, :2], lm[..., :2]) + a[:, None, :, 2]
    unflipped = ~new["flipped"].numpy()
    assert np.abs(xy[unflipped] - new["points"].numpy()[unflipped][..., :2]).max() < 1e-3


@pytest.mark.parametrize("overlap", ["thread", "worker"])
def test_overlapped_batches_equal_the_in_loop_ones(train_dir, overlap):
    from engine.training.batches import batches, make_loader
    from engine.training.recipes import get_recipe
    from engine.training.targets import load_training_set

    ts = load_training_set(limit=12)
    recipe = get_recipe(FACE_MODEL_PRNET)
    ds = recipe.make_dataset(ts, 0)

    def epoch(mode):
        g = torch.Generator()
        g.manual_seed(3)
        loader = make_loader(ds, 4, g, mode, recipe.batch_targets)
        return list(batches(loader, recipe.batch_targets, torch.device("cpu"), mode, channels_last=False))

    ref, got = epoch("none"), epoch(overlap)
    assert len(ref) == len(got) == 3
    for a, b in zip(ref, got):
        assert (a["index"] == b["index"]).all()
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["position_map"], b["position_map"])


@pytest.mark.parametrize("name", _recipe_names())
def test_one_step_gives_the_same_loss_channels_last(train_dir, name):
    from engine.training.batches import prepare_model
    from engine.training.harness import seed_everything
    from engine.training.recipes import get_recipe
    from engine.training.targets import load_training_set

    torch.set_num_threads(2)
    ts = load_training_set(limit=8)
    losses = {}
    for cl in (False, True):
        recipe = get_recipe(name)
        seed_everything(0)
        model = prepare_model(recipe.build(ts), torch.device("cpu"), cl)
        model.train()
        seed_everything(1)
        batch = _one_batch(recipe, ts)
        if cl:
            batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        got = []
        for _ in range(2):  # the loss, then the loss after one optimizer step
            loss, _ = recipe.loss(model, batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            got.append(loss.item())
        losses[cl] = got
    np.testing.assert_allclose(losses[True], losses[False], rtol=2e-4, atol=1e-6)


# --- the learning-rate schedule -------------------------------------------------------------------------------

def test_fresh_schedule_warms_up_holds_then_anneals_to_the_floor():
    from engine.training.schedule import plan

    s = plan(2e-3, steps_per_epoch=100, epochs=10)
    lrs = np.array([s.lr(t) for t in range(1000)])
    assert lrs[0] < lrs[50] < 2e-3 and lrs[s.warmup_steps] == 2e-3
    assert (lrs[s.warmup_steps:s.anneal_start] == 2e-3).all() and s.anneal_start == 700
    assert (np.diff(lrs[s.warmup_steps:]) <= 1e-12).all()
    assert lrs[-1] == pytest.approx(2e-3 * 0.02)


def test_extending_in_the_constant_phase_is_the_fresh_longer_schedule():
    from engine.training.schedule import plan

    short = plan(2e-3, 100, 10)
    stopped_at = 500   # interrupted before its anneal (which would have started at 700)
    resumed = plan(2e-3, 100, 20, resume_step=stopped_at, last_lr=short.lr(stopped_at - 1),
                   warmup_steps=short.warmup_steps)
    fresh = plan(2e-3, 100, 20)
    assert [resumed.lr(t) for t in range(stopped_at, 2000)] == [fresh.lr(t) for t in range(stopped_at, 2000)]
    assert fresh.anneal_start == 1400  # the anneal moved with N


@pytest.mark.parametrize("stopped_at", [800, 1000])  # inside its anneal / after finishing it
def test_extending_an_annealed_run_never_restarts_warm(stopped_at):
    from engine.training.schedule import plan

    short = plan(2e-3, 100, 10)
    last = short.lr(stopped_at - 1)
    resumed = plan(2e-3, 100, 20, resume_step=stopped_at, last_lr=last, warmup_steps=short.warmup_steps)
    lrs = np.array([resumed.lr(t) for t in range(stopped_at, 2000)])
    assert lrs.max() <= last + 1e-12 and (np.diff(lrs) <= 1e-12).all()
    assert abs(lrs[0] - last) < 0.01 * 2e-3  # continuous at the resume point
    assert lrs[-1] == pytest.approx(2e-3 * 0.02)
    rewarmed = plan(2e-3, 100, 20, resume_step=stopped_at, last_lr=last, warmup_steps=short.warmup_steps,
                    rewarm=True)
    ramp = np.array([rewarmed.lr(t) for t in range(stopped_at, stopped_at + rewarmed.rewarm_steps)])
    assert ramp[0] < 0.1 * 2e-3 + last and ramp[-1] == pytest.approx(2e-3) and (np.diff(ramp) > 0).all()


def test_legacy_checkpoints_resume_from_where_their_cosine_ended():
    from engine.training.harness import _resume_point
    from engine.training.schedule import LEGACY_KIND

    hist = [{"epoch": i + 1} for i in range(12)]
    last, segs = _resume_point({"history": hist, "optimizer": None}, 100, 2e-3)  # shipped, pre-issue-11
    assert last == pytest.approx(2e-3 * 0.02, rel=0.01)
    assert segs == [{"epochs": [1, 12], "kind": LEGACY_KIND, "legacy": True}]
    last, _ = _resume_point({"history": hist, "optimizer": {"param_groups": [{"lr": 1.5e-3}]}}, 100, 2e-3)
    assert last == 1.5e-3


def test_resumed_run_continues_its_schedule_and_records_it(train_dir, tmp_path):
    from engine.training.harness import train
    from engine.training.recipes import get_recipe

    kw = dict(limit=32, val_limit=10, batch_size=4, threads=1, out_dir=tmp_path, export=False, log=lambda s: None)
    first = train(get_recipe("baseline"), epochs=2, **kw)
    ck = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=False)
    assert ck["last_lr"] == first["history"][-1]["lr"] and ck["schedule"]["segments"][0]["epochs"] == [1, 2]
    more = train(get_recipe("baseline"), epochs=4, resume=True, **kw)
    lrs = [h["lr"] for h in more["history"]]
    assert more["history"][:2] == first["history"]
    assert max(lrs[2:]) <= lrs[1] + 1e-12  # the finished anneal continued: no warm restart
    segs = more["schedule"]
    assert [s["epochs"] for s in segs] == [[1, 2], [3, 4]] and segs[1]["resume_lr"] == pytest.approx(lrs[1])


# --- the pack for the device machine ---------------------------------------------------------------------------

def test_training_from_a_pack_resumes_on_cpu(train_dir, tmp_path):
    import importlib.util

    from engine.paths import PROJECT_ROOT
    from engine.training.harness import train
    from engine.training.recipes import get_recipe
    from engine.training.targets import load_training_set

    spec = importlib.util.spec_from_file_location("pack", PROJECT_ROOT / "scripts" / "pack_training_set.py")
    pack_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pack_mod)
    pack = tmp_path / "pack"
    # the travel budget depends on the checkout's size, not on what this test checks
    assert pack_mod.main(["--out", str(pack), "--limit", "16", "--quality", "85", "--budget-mib", "4096"]) == 0
    manifest = json.loads((pack / "manifest.json").read_text())
    assert manifest["count"] == 16 and manifest["webp_quality"] == 85 and (pack / "dev" / "labels.npz").exists()

    packed, orig = load_training_set(pack=pack), load_training_set(limit=16)
    assert (packed.names == orig.names).all() and np.allclose(packed.params, orig.params)
    assert np.abs(packed.images.astype(int) - orig.images.astype(int)).mean() < 4  # lossy, but the same crops

    kw = dict(limit=16, val_limit=8, batch_size=8, threads=1, out_dir=tmp_path / "run", export=False,
              log=lambda s: None, pack=pack)
    first = train(get_recipe("baseline"), epochs=1, **kw)
    assert "val_nme" in first["history"][0]  # validated on the pack's dev crops
    more = train(get_recipe("baseline"), epochs=2, resume=True, **{**kw, "pack": None})  # back on shared data
    assert len(more["history"]) == 2 and more["history"][0] == first["history"][0]


def test_checkpoint_handed_over_in_weights_resumes_with_its_optimizer(train_dir, tmp_path, monkeypatch):
    """An unfinished run's checkpoint copied to weights/NAME.pt (a fresh clone has no runs/) resumes exactly:
    optimizer and sampler state come with it, and the history goes on from its last epoch."""
    import engine.training.harness as harness
    from engine.training.recipes import get_recipe

    monkeypatch.setattr(harness, "RUNS_DIR", tmp_path / "runs")
    monkeypatch.setattr(harness, "weights_path", lambda name: tmp_path / "weights" / name)
    (tmp_path / "weights").mkdir()
    kw = dict(limit=32, val_limit=10, batch_size=4, threads=1, export=False)
    harness.train(get_recipe("baseline"), epochs=1, log=lambda s: None, **kw)
    ck_path = tmp_path / "runs" / "baseline" / "last.pt"
    (tmp_path / "weights" / "baseline.pt").write_bytes(ck_path.read_bytes())
    ck_path.unlink()
    lines: list[str] = []
    more = harness.train(get_recipe("baseline"), epochs=2, resume=True, log=lines.append, **kw)
    assert any("resumed from baseline.pt after epoch 1 (its optimizer state)" in s for s in lines), lines[:3]
    assert len(more["history"]) == 2
