"""The output contract of every shipped method, and `main.py eval` / `main.py methods`."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from engine.methods.base import registry
from engine.methods.factory import create
from engine.paths import PROJECT_ROOT, weights_path

SHIPPED = [n for n, info in registry().items() if weights_path(info.weights).exists()]


@pytest.fixture(scope="module")
def dev_crops(dev_dir):
    from engine.evaluation.aflw2000 import crop_image, load_set

    ds = load_set(dev_dir)
    idx = [int(np.argmin(np.abs(ds.yaw - y))) for y in (0, 45, -45)]
    return ds, idx, [crop_image(cv2.imread(str(ds.image_path(i))), ds.roi_box[i]) for i in idx]


def test_shipped_methods_present():
    assert "mediapipe" in SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_output_contract(name, dev_crops):
    from engine.evaluation.nme import nme_per_image
    from engine.geometry.projection import crop_to_image

    ds, idx, crops = dev_crops
    m = create(name)
    for i, crop in zip(idx, crops):
        r = m.align(crop)
        assert r.landmarks.shape == (68, 3) and r.mesh.shape == (468, 3) and r.visible.shape == (68,)
        assert r.visible.dtype == bool and r.pose.shape == (3,)
        assert np.isfinite(r.landmarks).all() and np.isfinite(r.mesh).all()
        assert {"network", "visibility", "total"} <= set(r.timings)
        # a real alignment: close to the ground truth (a mean shape would not be, at +-45 degrees)
        err = nme_per_image(crop_to_image(r.landmarks, ds.roi_box[i])[:, :2], ds.pts68[i, :, :2])
        assert err < 10.0, f"{name} NME {err:.1f} on image {ds.names[i]}"
        # the turned-away side of the face is reported hidden
        if abs(ds.yaw[i]) > 40:
            assert not r.visible.all()
        # yaw sign agrees with the label
        if abs(ds.yaw[i]) > 30:
            assert np.sign(r.pose[0]) == np.sign(ds.yaw[i])
    m.close()


def test_eval_command_json(dev_dir):
    out = subprocess.run([sys.executable, "main.py", "eval", "--method", "mediapipe", "--data", str(dev_dir),
                          "--json", "--limit", "30"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(res) >= {"method", "mode", "nme", "n", "failures", "pose_mae"}
    assert set(res["nme"]) == {"0-30", "30-60", "60-90", "balanced", "overall"}
    assert res["n"]["overall"] == 30 and 0 < res["nme"]["0-30"] < 10


def test_eval_rejects_a_folder_without_images(tmp_path):
    out = subprocess.run([sys.executable, "main.py", "eval", "--method", "mediapipe", "--data", str(tmp_path)],
                         cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "error:" in out.stderr and "Traceback" not in out.stderr


def test_methods_command_lists_providers():
    out = subprocess.run([sys.executable, "main.py", "methods"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "mediapipe" in out.stdout and "baseline" in out.stdout
