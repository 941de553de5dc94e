"""The prediction hooks of the dataset plugins: new files framed as ``load`` frames the release's, masks put
back on the input's own grid and written with the input's header."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from bench.data.framing import frame_source, read_source, write_mask
from bench.data.planes import PlaneGeometry
from bench.data.samples import Box, center_crop_or_pad
from bench.datasets.acdc import ACDC
from bench.datasets.hc18 import HC18, HC18Whole


@pytest.mark.parametrize(
    ("source", "resampled", "frame"),
    [((480, 800), (480, 800), (640, 640)), ((301, 333), (150, 200), (256, 256)), ((90, 70), (90, 70), (90, 70))],
)
def test_a_mask_on_the_frame_comes_back_to_the_inputs_grid(source, resampled, frame) -> None:
    geometry = PlaneGeometry(source, resampled, frame)
    rows, cols = np.mgrid[0 : source[0], 0 : source[1]]
    disc = (rows - source[0] * 0.5) ** 2 + (cols - source[1] * 0.55) ** 2 < (min(source) * 0.3) ** 2
    import cv2

    on_grid = cv2.resize(disc.astype(np.float32), resampled[::-1], interpolation=cv2.INTER_LINEAR)
    back = geometry.to_source(center_crop_or_pad(on_grid, frame))
    assert back.shape == source
    assert (back ^ disc).sum() <= 0.02 * disc.sum()  # resampling twice moves the outline by under a pixel
    box = geometry.box_to_frame(Box(0, 0, source[1] - 1, source[0] - 1))
    assert box.width == min(resampled[1], frame[1]) and box.height == min(resampled[0], frame[0])


def test_hc18_frames_a_new_image_as_its_release_and_whole_keeps_all_of_it(tmp_path) -> None:
    import cv2

    image = np.random.default_rng(0).integers(0, 255, (540, 800), dtype=np.uint8)
    path = tmp_path / "new.png"
    cv2.imwrite(str(path), image)
    source = read_source(path)
    (paper,) = frame_source(HC18(tmp_path), source)
    assert paper.image.shape == (640, 640) and paper.geometry.resampled == (540, 800)
    (whole,) = frame_source(HC18Whole(tmp_path), source)
    assert whole.image.shape == (640, 640) and whole.geometry.resampled == (432, 640)  # shrunk to fit, not cut


def test_acdc_frames_every_slice_and_the_mask_keeps_the_volumes_header(tmp_path) -> None:
    rng = np.random.default_rng(1)
    volume = sitk.GetImageFromArray(rng.normal(100, 30, (6, 200, 180)).astype(np.int16))
    volume.SetSpacing((1.4, 1.6, 10.0))
    volume.SetOrigin((-120.5, 33.0, 7.25))
    volume.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    path = tmp_path / "patient.nii.gz"
    sitk.WriteImage(volume, str(path))
    source = read_source(path)
    planes = frame_source(ACDC(tmp_path), source)
    assert len(planes) == 6 and all(plane.image.shape == (256, 256) for plane in planes)
    assert planes[0].geometry.source == (200, 180) and planes[0].geometry.resampled == (320, 252)
    centre = np.zeros((256, 256), np.float32)
    centre[100:150, 90:170] = 1.0
    mask = np.stack([plane.geometry.to_source(centre) for plane in planes])
    out = tmp_path / "out" / "patient.nii.gz"
    out.parent.mkdir()
    write_mask(source, mask, out)
    written = sitk.ReadImage(str(out))
    assert written.GetSize() == volume.GetSize()
    np.testing.assert_allclose(written.GetSpacing(), volume.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(written.GetOrigin(), volume.GetOrigin(), rtol=1e-6)
    np.testing.assert_allclose(written.GetDirection(), volume.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), mask.astype(np.uint8))
    assert [p.name for p in out.parent.iterdir()] == ["patient.nii.gz"]  # the temporary was renamed
