"""Face maps (threeddx.facemaps): the one type of the renderer's result, the prediction and the meshers' input."""
import numpy as np
import pytest

from threeddx.facemaps import MIN_MESH_PIXELS, BoneFaces, FaceMaps


def _maps(faces: int = 2) -> FaceMaps:
    rng = np.random.default_rng(0)
    c, h, w = 3, 8, 8
    masks = np.zeros((c, h, w), bool)
    masks[0, 2:6, 2:6] = True
    masks[1, :1, :2] = True  # 2 pixels: too few to mesh
    masks[2, 1:7, 1:7] = True
    front = (800 + rng.random((c, h, w)) * 10).astype(np.float32) * masks
    back = front + 20 * masks
    inner = valid = None
    if faces > 2:
        inner = np.stack([front + 5, front + 10], 1) * masks[:, None]
        valid = masks[:, None].copy()
    return FaceMaps(["pelvis", "femur_left", "femur_right"], masks, front, back, inner, valid)


@pytest.mark.parametrize("faces", [2, 4])
def test_the_npz_round_trip_keeps_every_face(faces, tmp_path):
    m = _maps(faces)
    np.savez(tmp_path / "m.npz", **m.arrays())
    with np.load(tmp_path / "m.npz") as z:
        back = FaceMaps.from_arrays(z)
    assert back.bones == m.bones and back.faces == faces == m.faces
    for a, b in zip(back.depths(), m.depths()):
        np.testing.assert_array_equal(a, b)
    assert back.depths().shape == (3, faces, 8, 8)


def test_the_meshers_input_is_made_once_with_its_reasons():
    """for_meshing: too few pixels is 'no mask', ``keep`` gives other reasons, ``uses_back`` drops the back."""
    m = _maps(4)
    maps, left_out = m.for_meshing(keep=lambda b: "not found" if b == "femur_right" else None,
                                   uses_back={"pelvis": False})
    assert list(maps) == ["pelvis"] and left_out == {"femur_left": "no mask", "femur_right": "not found"}
    assert maps["pelvis"].back is None and maps["pelvis"].inner is None  # a front-only mesher's input
    maps, _ = m.for_meshing(["femur_right"])
    b = maps["femur_right"]
    assert isinstance(b, BoneFaces) and b.back is not None and b.inner[0].shape == (2, 8, 8)
    assert BoneFaces.of((b.mask, b.front, b.back)) == (b.mask, b.front, b.back, None)
    assert MIN_MESH_PIXELS == 4


def test_a_render_and_a_prediction_are_face_maps():
    from threeddx.facemaps import FaceMaps
    from threeddx.inference.predictor import Prediction
    from threeddx.simulator.render import RenderResult

    assert issubclass(RenderResult, FaceMaps) and issubclass(Prediction, FaceMaps)
