"""Compare tiles' region and layout (app/tiles.py: numpy only, no window)."""
import numpy as np

from app.tiles import ease_region, face_region, fit, grid_columns, tile_label


def test_region_holds_the_faces_at_the_tile_aspect_inside_the_frame():
    box = np.array([260.0, 65.0, 425.0, 230.0])
    for aspect in (0.8, 1.0, 1.6):
        x0, y0, x1, y1 = face_region([box], (360, 640, 3), aspect)
        assert 0 <= x0 <= box[0] and 0 <= y0 <= box[1] and box[2] <= x1 <= 640 and box[3] <= y1 <= 360
        w, h = x1 - x0, y1 - y0
        if w < 640 and h < 360:
            assert abs(w / h - aspect) < 0.02
        assert w * h < 0.6 * 640 * 360


def test_region_never_cuts_the_face_in_a_wide_short_tile():
    box = np.array([260.0, 65.0, 425.0, 230.0])
    x0, y0, x1, y1 = face_region([box], (360, 640, 3), 3.3)  # 443x135 tiles: the aspect does not fit
    assert y0 <= box[1] and y1 >= box[3] and x0 <= box[0] and x1 >= box[2]


def test_whole_frame_without_faces_and_union_of_several():
    assert face_region([], (360, 640, 3), 1.2) == (0, 0, 640, 360)
    a, b = np.array([10.0, 10, 60, 60]), np.array([500.0, 200, 560, 260])
    x0, y0, x1, y1 = face_region([a, b], (360, 640, 3), 1.5)
    assert x0 <= 10 and y0 <= 10 and x1 >= 560 and y1 >= 260


def test_ease_follows_small_moves_and_jumps_on_cuts():
    r = (100, 50, 300, 250)
    assert ease_region(None, r) == r
    moved = ease_region(r, (110, 50, 310, 250))
    assert 100 < moved[0] < 110
    assert ease_region(r, (400, 50, 600, 250)) == (400, 50, 600, 250)


def test_columns_make_faces_largest():
    assert grid_columns(7, 894, 560) == 4   # 224x280 tiles, not 447x140 in two columns
    assert grid_columns(2, 894, 560) == 2
    assert grid_columns(1, 894, 560) == 1


def test_label_fits_a_narrow_tile():
    tile = fit(np.full((360, 640, 3), 128, np.uint8), (200, 300))
    assert tile.shape[1] == 200
    out = tile_label(tile.copy(), "mtcnn3d  12.3 ms/face  |  shown 24.0 FPS")
    top = out[:20].astype(int)
    assert (top > 200).any()          # white text drawn
    assert (out[-20:] == 128).all()   # nothing below the band
