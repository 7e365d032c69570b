"""How far the annotators' visibility flags follow the head pose at all: an oracle that knows the labelled pose.

For each of the 14 AFLW points with a 68-point twin and each 5-degree bin of the teacher's labelled yaw (optionally
also 15-degree bins of pitch), the majority flag among aflw_train's training rows; scored on the held-out split
(engine/training/split.py) like `python main.py visibility`. No method can read the true pose, so this bounds what
any pose-only visibility rule reaches; the rest of the flags follow hair, hands, glasses and the annotators.
    python -m research.visibility_pose_ceiling
"""
from __future__ import annotations


import numpy as np


from engine.evaluation.visibility_bench import facing_side, score, table, twins, LabelledCrops  # noqa: E402
from engine.paths import data_path  # noqa: E402
from engine.training.split import held_out_rows, training_rows  # noqa: E402


def main() -> None:
    lab = np.load(data_path("aflw_train", "labels.npz"))
    h21, l68 = twins()
    flags = ~np.isnan(lab["pts21"][:, h21, 0])
    yaw, pitch = lab["teacher_pose"][:, 0], lab["teacher_pose"][:, 1]
    n = len(yaw)
    held, train = held_out_rows(n), training_rows(n)
    crops = LabelledCrops(held, np.zeros((0,)), flags[held], lab["aflw_yaw"][held].astype(np.float64),
                          facing_side(lab["aflw_yaw"][held], h21), ~np.isnan(lab["pts21"][held, :, 0]))
    rows = {}
    for label, key in [("oracle: labelled yaw (5° bins)", np.digitize(yaw, np.arange(-180, 181, 5))),
                       ("oracle: labelled yaw x pitch (5° x 15° bins)",
                        np.digitize(yaw, np.arange(-180, 181, 5)) * 100 + np.digitize(pitch, np.arange(-90, 91, 15)))]:
        pred = np.ones((len(held), 68), bool)
        for k in np.unique(key[held]):
            members = train[key[train] == k]
            if len(members):
                pred[np.ix_(key[held] == k, l68)] = flags[members].mean(0) > 0.5
        rows[label] = score(pred, crops)
    print(table(rows))


if __name__ == "__main__":
    main()
