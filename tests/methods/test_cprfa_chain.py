"""CPR-H as the app's `cprfa`: the fused graph's export (the other method's landmarks as a second input), the chained
method (mtcnn3d's ONNX, then the fused graph), the unfused variant `cprfa-unfused`, and promoting CPR-H while
keeping the unfused weights."""
import json
import os
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from engine.facemodel import N_MESH  # noqa: E402
from engine.paths import WEIGHTS_DIR  # noqa: E402


def _unfused_source() -> tuple:
    """(checkpoint, ONNX) of the unfused CPRFA in the checkout: cprfa-unfused.* once CPR-H was promoted, before
    that the shipped cprfa.* (whose graph then has no landmarks input)."""
    import onnxruntime as ort

    for name in ("cprfa-unfused", "cprfa"):
        pt, graph = WEIGHTS_DIR / f"{name}.pt", WEIGHTS_DIR / f"{name}.onnx"
        if pt.exists() and graph.exists():
            sess = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
            if [i.name for i in sess.get_inputs()] == ["image"]:
                return pt, graph
    pytest.skip("no unfused CPRFA weights (weights/cprfa-unfused.* or an unfused weights/cprfa.*)")


@pytest.fixture(scope="module")
def warm_fused(train_dir, tmp_path_factory):
    """A weights folder whose cprfa.onnx is CPR-H warm-started from the unfused CPRFA (the fused projections' new
    columns zero) and whose cprfa-unfused.onnx is the unfused graph; every other file linked from weights/."""
    from engine.methods.cprfa.train import warm_start
    from engine.training.export import export_onnx
    from engine.training.recipes import get_recipe
    from engine.training.targets import load_training_set

    for need in ("mtcnn3d.onnx", "cprfa-dafi.pt"):
        if not (WEIGHTS_DIR / need).exists():
            pytest.skip(f"weights/{need} missing")
    pt, graph = _unfused_source()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("weights")
    for f in WEIGHTS_DIR.iterdir():
        if not f.name.startswith(("cprfa.", "cprfa-unfused", "visibility_cprfa-unfused")):
            os.symlink(f.resolve(), folder / f.name)
    shutil.copyfile(graph, folder / "cprfa-unfused.onnx")
    if (WEIGHTS_DIR / "visibility_cprfa.npz").exists():   # as promote keeps it: both rows see the same visibility
        (folder / "visibility_cprfa-unfused.npz").symlink_to((WEIGHTS_DIR / "visibility_cprfa.npz").resolve())
    recipe = get_recipe("cprfa")
    recipe.init_from = None
    ts = load_training_set(limit=8)
    model = recipe.build(ts)
    source = torch.load(pt, map_location="cpu", weights_only=False)["model"]
    warm_start(model, source)
    model.eval()
    export_onnx(recipe, model, folder / "cprfa.onnx")
    old_width = source["round1.regressors.rxry.proj.0.weight"].shape[1]
    return folder, [np.asarray(ts.images[i]) for i in range(4)], old_width


def _run(path, x, landmarks=None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feeds = {"image": x} if landmarks is None else {"image": x, "landmarks": landmarks}
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def test_warm_started_cpr_h_export_equals_the_unfused_graph_whatever_the_landmarks(warm_fused):
    """The fused graph reads the landmarks as its second input; with the fused columns at zero it computes what the
    unfused graph computes for any landmarks, and once a fused weight is nonzero the landmarks move the output."""
    from engine.runtime import crop_to_input

    folder, crops, old_width = warm_fused
    x = crop_to_input(np.stack(crops))
    plain = _run(folder / "cprfa-unfused.onnx", x)
    rng = np.random.default_rng(0)
    a = (30 + 60 * rng.random((4, 68, 2))).astype(np.float32)
    b = (a + rng.normal(0, 8, a.shape)).astype(np.float32)
    for lm in (a, b):
        fused = _run(folder / "cprfa.onnx", x, lm)
        assert np.abs(fused["points"] - plain["points"]).max() < 1e-3          # pixels
        assert np.abs(fused["params"] - plain["params"]).max() < 1e-4
    # the fused projections' new columns made nonzero, in the graph itself: the landmarks input now matters
    proto = onnx.load(str(folder / "cprfa.onnx"))
    projections = [i for i in proto.graph.initializer if i.name.endswith("proj.0.weight")]
    assert len(projections) == 9                                         # 5 regressors in round 1, 4 in round 2
    for init in projections:
        w = onnx.numpy_helper.to_array(init).copy()
        assert w.shape[1] > old_width and not w[:, old_width:].any()      # warm start: the fused columns at zero
        w[:, old_width:] = rng.normal(0, 0.05, w[:, old_width:].shape)
        init.CopyFrom(onnx.numpy_helper.from_array(w, init.name))
    perturbed = folder.parent / "cprfa_perturbed.onnx"
    onnx.save(proto, str(perturbed))
    pa, pb = _run(perturbed, x, a), _run(perturbed, x, b)
    assert np.abs(pa["points"][:, N_MESH:] - pb["points"][:, N_MESH:]).max() > 0.1    # pixels
    assert np.abs(_run(perturbed, x, a)["points"] - pa["points"]).max() == 0          # and nothing else does


def test_cprfa_runs_mtcnn3d_first_and_feeds_its_landmarks(warm_fused, monkeypatch):
    import engine.paths
    from engine.methods.base import LANDMARK_STAGE, registry
    from engine.methods.factory import create
    from engine.runtime import crop_to_input

    folder, crops, _ = warm_fused
    monkeypatch.setenv(engine.paths.WEIGHTS_ENV, str(folder))
    method = create("cprfa", threads=1)
    assert method.fused and method.landmark_method == "mtcnn3d" and method.model.input_names == ["image", "landmarks"]
    calls = []
    run = method.landmark_model.session.run
    monkeypatch.setattr(method.landmark_model.session, "run", lambda *a, **k: calls.append(1) or run(*a, **k))
    results = method.align_batch(crops)
    assert len(calls) == 1                                             # one mtcnn3d call for the whole batch
    other = create("mtcnn3d", threads=1)
    feeds, stages = method.network_inputs(crop_to_input(np.stack(crops)))
    want = np.stack([r.landmarks[:, :2] for r in other.align_batch(crops)])
    assert np.allclose(feeds["landmarks"], want, atol=1e-4) and set(stages) == {LANDMARK_STAGE}
    unfused = create("cprfa-unfused", threads=1)
    assert not unfused.fused and registry()["cprfa-unfused"].factory.info.name == "cprfa-unfused"
    for r, u in zip(results, unfused.align_batch(crops)):
        assert r.landmarks.shape == (68, 3) and r.mesh.shape == (N_MESH, 3) and r.pose.shape == (3,)
        assert r.visible.shape == (68,) and r.visible.dtype == bool and r.method == "cprfa"
        assert np.isfinite(r.landmarks).all() and np.isfinite(r.pose).all()
        # the chain's cost is both networks'; the warm-started graph gives the unfused result
        assert r.timings[LANDMARK_STAGE] > 0 and r.timings["network"] > 0
        assert r.timings["total"] >= r.timings[LANDMARK_STAGE] + r.timings["network"]
        assert np.allclose(r.landmarks, u.landmarks, atol=1e-3) and np.array_equal(r.visible, u.visible)
    # flip averaging over the chain: the mirrored crop goes through mtcnn3d too, and the result is equivariant
    from engine.methods.flip import mirror_crop, unmirror_result

    flipped = create("cprfa", threads=1, flip=True)
    r, m = flipped.align_batch([crops[0], mirror_crop(crops[0])])
    back = unmirror_result(m, flipped.fm, 120)
    assert np.allclose(r.landmarks, back.landmarks, atol=1e-3) and LANDMARK_STAGE in r.timings
    # the unfused variant refuses a CPR-H graph, and CPR-H needs the other method's weights
    shutil.copyfile(folder / "cprfa.onnx", folder / "cprfa-unfused.onnx")
    with pytest.raises(ValueError, match="CPR-H graph"):
        create("cprfa-unfused", threads=1)
    (folder / "cprfa-unfused.onnx").unlink()
    (folder / "mtcnn3d.onnx").rename(folder / "mtcnn3d.away")
    try:
        from engine.methods.base import MethodUnavailable

        with pytest.raises(MethodUnavailable, match="mtcnn3d"):
            create("cprfa", threads=1)
    finally:
        (folder / "mtcnn3d.away").rename(folder / "mtcnn3d.onnx")


def test_keep_previous_weights_copies_the_model_and_refuses_to_overwrite(tmp_path, monkeypatch):
    from engine.methods import pose_output
    from engine.training import harness

    monkeypatch.setattr(harness, "weights_path", lambda name: tmp_path / name)
    monkeypatch.setattr(pose_output, "weights_path", lambda name: tmp_path / name)
    for f, data in (("m.onnx", b"graph"), ("m.pt", b"ckpt"), ("m.train.json", b"{}"), ("visibility_m.npz", b"v")):
        (tmp_path / f).write_bytes(data)
    sha = pose_output.file_sha256(tmp_path / "m.onnx")
    (tmp_path / "pose_calibration.json").write_text(json.dumps({"m": {"weights_sha256": sha, "x": 1}}))
    kept = harness.keep_previous_weights("m", "m-old", log=lambda s: None)
    assert sorted(kept) == ["m-old.onnx", "m-old.pt", "m-old.train.json", "visibility_m-old.npz"]
    assert (tmp_path / "m-old.pt").read_bytes() == b"ckpt" and not (tmp_path / "m-old.int8.onnx").exists()
    assert json.loads((tmp_path / "pose_calibration.json").read_text())["m-old"]["x"] == 1
    harness.keep_previous_weights("m", "m-old", log=lambda s: None)      # the same bytes again: nothing lost
    (tmp_path / "m.pt").write_bytes(b"the promoted model")
    with pytest.raises(ValueError, match="move it away"):
        harness.keep_previous_weights("m", "m-old", log=lambda s: None)
    assert (tmp_path / "m-old.pt").read_bytes() == b"ckpt"


def test_promoting_cpr_h_reads_its_start_as_the_kept_unfused_weights(tmp_path, monkeypatch):
    """The arm was fine-tuned from weights/cprfa.pt (then the unfused model); the recipe's default names the copy
    kept as cprfa-unfused, so promote accepts the arm only when it keeps the old weights under that name."""
    from engine.training import harness
    from engine.training.recipes import get_recipe

    recipe = get_recipe("cprfa")
    arm = {"overrides": {"fusion": True, "init_from": "weights/cprfa.pt", "epochs": 8, "lr": 3e-4},
           "description": recipe.description, "history": []}
    (tmp_path / "arm.json").write_text(json.dumps(arm))
    monkeypatch.setattr(harness, "ablation_path", lambda name, abl: tmp_path / "arm.json")
    with pytest.raises(ValueError, match="init_from"):
        harness.promote(recipe, "cpr-h-finetune-long", run_dir=tmp_path, log=lambda s: None)
    # the overrides now match; what stops it here is the missing checkpoint (nothing was written before)
    with pytest.raises(FileNotFoundError):
        harness.promote(recipe, "cpr-h-finetune-long", run_dir=tmp_path, log=lambda s: None,
                        previous_weights_as="cprfa-unfused")
    assert recipe.ablations["unfused"] == {"fusion": False, "init_from": None, "epochs": 12, "lr": 1e-3}
