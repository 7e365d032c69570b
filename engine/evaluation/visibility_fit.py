"""Fit each method's visibility model (engine/visibility_model.py) on the training split's human flags.

    python -m engine.evaluation.visibility_fit --methods mtcnn3d pifa prnet 3dstn cprfa baseline mediapipe

Two stages, both on aflw_train's training split (never the held-out split, never aflw2000_dev):
  1. the patch CNN (engine/visibility_patches), shared by every method, learns the annotators' flags at the 19 AFLW
     sites from image patches placed by the teacher's landmarks on the 15,126 training-split crops outside stage
     2's (torch, one thread, PATCH_NET_EPOCHS passes; cached in runs/visibility/patch_net.npz);
  2. each method runs on FIT_CROPS other crops drawn (seeded) from the training split, its raw outputs kept in
     runs/visibility/ (reused on a re-run), and per landmark a logistic regression combines its geometry with the
     CNN's logits at its own landmarks' sites; written to weights/visibility_<method>.npz with the CNN's ONNX
     export.
"""
from __future__ import annotations

import argparse

import numpy as np

from engine.evaluation.visibility_bench import RAW_DIR, LabelledCrops, MethodOutputs, load_labelled, raw_outputs
from engine.paths import data_path
from engine.visibility_model import VisibilityModel, model_file

FIT_CROPS = 3000


def fit_rows(n_labels: int, count: int = FIT_CROPS, seed: int = 0) -> np.ndarray:
    """``count`` training-split rows, a seeded draw (sorted)."""
    from engine.training.split import training_rows

    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(training_rows(n_labels), size=count, replace=False))


PATCH_NET_EPOCHS = 12


def patch_net_rows(n_labels: int) -> np.ndarray:
    """The training-split rows the patch CNN learns from: all but the held-out split and the FIT_CROPS rows the
    per-method models are fitted on (there the CNN's output must be what it is on unseen faces)."""
    from engine.training.split import training_rows

    return np.setdiff1d(training_rows(n_labels), fit_rows(n_labels))


def patch_net_module():
    """engine/visibility_patches' CNN as a torch module: forward(patches (N, 3, PATCH, PATCH)) -> (N, N_KINDS)
    logits, one per site kind (``kind`` (N,) picks each patch's own)."""
    import torch
    from torch import nn

    from engine.visibility_patches import N_KINDS, PATCH

    class PatchNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
            self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
            self.hidden = nn.Linear(16 * (PATCH // 4) ** 2, 32)
            self.out = nn.Linear(32, N_KINDS)

        def forward(self, x: torch.Tensor, kind: torch.Tensor | None = None) -> torch.Tensor:
            x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
            x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
            y = self.out(torch.relu(self.hidden(x.flatten(1))))
            return y if kind is None else y.gather(1, kind[:, None])[:, 0]

    return PatchNet()


def export_patch_net(arrays: dict[str, np.ndarray]) -> bytes:
    """The trained CNN's arrays as an ONNX model (input "patches", output "logits"), checked against the numpy
    reference ``patch_logits`` on random patches."""
    import io

    import onnxruntime  # noqa: F401  (the check below needs it; fail before exporting)
    import torch

    from engine.visibility_patches import PATCH, SITE_POINTS, PatchNetRunner, patch_logits

    module = patch_net_module().eval()
    module.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()})
    buf = io.BytesIO()
    torch.onnx.export(module, (torch.zeros(len(SITE_POINTS), 3, PATCH, PATCH),), buf, input_names=["patches"],
                      output_names=["logits"], dynamic_axes={"patches": {0: "n"}, "logits": {0: "n"}},
                      opset_version=17, dynamo=False)
    patches = np.random.default_rng(0).normal(size=(4, len(SITE_POINTS), 3, PATCH, PATCH)).astype(np.float32)
    err = np.abs(PatchNetRunner(buf.getvalue()).logits(patches) - patch_logits(arrays, patches)).max()
    if err > 1e-3:
        raise RuntimeError(f"the exported patch CNN differs from the numpy reference by {err:.2e}")
    return buf.getvalue()


def train_patch_net(rows: np.ndarray, epochs: int = PATCH_NET_EPOCHS, seed: int = 0,
                    monitor: np.ndarray | None = None, log=print) -> dict[str, np.ndarray]:
    """Train engine/visibility_patches' CNN on aflw_train ``rows`` (the teacher's 68 landmarks place the patches,
    jittered by a few pixels and +-10% in scale as a method's would be; the targets are the annotators' flags at
    the 19 sites) with torch on one thread for ``epochs`` passes (about 2 minutes of CPU each); returns its arrays for numpy inference.
    ``monitor``: rows whose site accuracy is logged after each epoch (training-split rows, never the held-out
    split)."""
    import time

    import torch
    from torch import nn

    from engine.training.targets import load_images
    from engine.visibility_patches import PATCH, SITE_KIND, SITE_POINTS, patch_logits, site_patches

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    root = data_path("aflw_train")
    lab = np.load(root / "labels.npz")

    def load(r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (load_images(root / "images", lab["names"][r]), lab["teacher_lm68"][r].astype(np.float64),
                ~np.isnan(lab["pts21"][r][:, list(SITE_POINTS), 0]))

    images, landmarks, flags = load(np.asarray(rows))
    mon = load(np.asarray(monitor)) if monitor is not None else None

    net = patch_net_module()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    n, s = len(images), len(SITE_POINTS)
    batch = 128
    kinds = torch.from_numpy(np.tile(SITE_KIND, batch))
    start = time.process_time()
    for epoch in range(1, epochs + 1):
        order = rng.permutation(n)
        total, count = 0.0, 0
        for b0 in range(0, n - batch + 1, batch):
            idx = order[b0:b0 + batch]
            x = site_patches(images[idx], landmarks[idx], jitter=rng.normal(0.0, 1.5, (batch, s, 2)),
                             scale=rng.uniform(0.9, 1.1, batch))
            x = torch.from_numpy(x.reshape(batch * s, 3, PATCH, PATCH))
            y = torch.from_numpy(flags[idx].reshape(-1).astype(np.float32))
            loss = nn.functional.binary_cross_entropy_with_logits(net(x, kinds), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, count = total + float(loss.detach()) * len(idx), count + len(idx)
        for g in opt.param_groups:      # a step decay: later epochs refine
            g["lr"] *= 0.75
        arrays = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
        msg = f"[patch net] epoch {epoch}: loss {total / max(count, 1):.4f}, {time.process_time() - start:.0f} s of CPU"
        if mon is not None:
            logits = np.concatenate([patch_logits(arrays, site_patches(mon[0][i:i + 256], mon[1][i:i + 256]))
                                     for i in range(0, len(mon[0]), 256)])
            msg += f", site accuracy on the monitor rows {((logits > 0) == mon[2]).mean():.4f}"
        log(msg)
    return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


def patch_net(n_labels: int, log=print) -> dict[str, np.ndarray]:
    """The patch CNN trained on ``patch_net_rows`` (cached in runs/visibility/patch_net.npz, keyed by its rows,
    PATCH_NET_EPOCHS and the patch's size; delete the file to retrain)."""
    from engine.visibility_patches import PATCH, PATCH_HALF

    rows = patch_net_rows(n_labels)
    RAW_DIR.mkdir(parents=True, exist_ok=True)
    path = RAW_DIR / "patch_net.npz"
    if path.exists():
        z = np.load(path)
        if (np.array_equal(z["rows"], rows) and int(z["epochs"]) == PATCH_NET_EPOCHS
                and np.array_equal(z["patch"], [PATCH, PATCH_HALF])):
            return {k[4:]: z[k] for k in z.files if k.startswith("net.")}
    net = train_patch_net(rows, monitor=fit_rows(n_labels)[:1000], log=log)
    np.savez(path, rows=rows, epochs=PATCH_NET_EPOCHS, patch=[PATCH, PATCH_HALF],
             **{f"net.{k}": v for k, v in net.items()})
    return net


def logistic_fit(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, iters: int = 50) -> np.ndarray:
    """Coefficients of P(y) = sigmoid(x @ w) by Newton's method with an L2 penalty ``l2`` per sample on all but the
    first (bias) column. ``x`` (n, f), ``y`` (n,) 0/1."""
    n, f = x.shape
    w = np.zeros(f)
    pen = np.full(f, l2 * n)
    pen[0] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -30, 30)))
        grad = x.T @ (p - y) + pen * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(pen + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def fit_features(out: MethodOutputs, crops: LabelledCrops, net: dict[str, np.ndarray]) -> np.ndarray:
    """(N found, 68, len(FEATURES)) the model's features on the method's outputs ``out`` for ``crops``, with the
    patch CNN's arrays ``net`` (run in numpy here)."""
    from engine.facemodel import load_face_model
    from engine.visibility import visibility_terms
    from engine.visibility_model import design
    from engine.visibility_patches import patch_logits, site_patches

    found = out.found
    points = out.points[found].astype(np.float64)
    images = crops.images[found]
    terms = visibility_terms(load_face_model(), points, normal_z=None if out.normal_visibility is None
                             else out.normal_visibility[found])
    logits = np.concatenate([patch_logits(net, site_patches(images[s], points[s, 468:]))
                             for s in _slices(len(points), 256)])
    return design(terms, logits)


def _slices(n: int, step: int) -> list[slice]:
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def fit_model(name: str, out: MethodOutputs, crops: LabelledCrops, net: dict[str, np.ndarray],
              net_onnx: bytes = b"", features: np.ndarray | None = None) -> VisibilityModel:
    """The method's VisibilityModel fitted on its outputs ``out`` for the training-split ``crops`` (faces the method
    missed are left out): per landmark, a logistic regression on its features (``features``: ``fit_features``'
    output when already computed) against the human flag of its nearest AFLW point
    (engine/visibility_model.nearest_flags), over the patch CNN ``net`` (``net_onnx``: its export, shipped with
    the model)."""
    from engine.facemodel import N_MESH, load_face_model
    from engine.visibility_model import FEATURES, landmark_groups, nearest_flags

    groups = landmark_groups()
    flags = nearest_flags(load_face_model().mean[N_MESH:N_MESH + 68])
    x_all = fit_features(out, crops, net) if features is None else features
    human = crops.flags21[out.found]
    coef = np.zeros((68, x_all.shape[2]))
    for i in np.nonzero(groups >= 0)[0]:
        coef[i] = logistic_fit(x_all[:, i], human[:, flags[i]].astype(np.float64))
    return VisibilityModel(name, coef, groups, net, net_onnx)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", required=True)
    ap.add_argument("--collect-only", action="store_true", help="only run the methods (also on the held-out split)")
    args = ap.parse_args(argv)
    from engine.training.split import held_out_rows

    n = len(np.load(data_path("aflw_train", "labels.npz"))["names"])
    rows = fit_rows(n)
    train_crops = load_labelled(rows)
    held = held_out_rows(n)
    held_crops = load_labelled(held) if args.collect_only else None
    net = None if args.collect_only else patch_net(n)
    net_onnx = None if net is None else export_patch_net(net)
    for name in args.methods:
        out = raw_outputs(name, "fit", rows, train_crops)
        if args.collect_only:
            raw_outputs(name, "held", held, held_crops)
            continue
        model = fit_model(name, out, train_crops, net, net_onnx)
        model.save(model_file(name), fitted_on=f"{len(rows)} aflw_train training-split crops (seed 0); patch CNN on the "
                   f"other {len(patch_net_rows(n))} training-split crops",
                   command=f"python -m engine.evaluation.visibility_fit --methods {name}")
        print(f"[{name}] wrote {model_file(name)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
