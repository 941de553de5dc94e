"""A user's own data with no code: the `nnunet` (v2 and Decathlon) and `folder` dataset families, their identity,
and the one-line errors of every bad input."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.data.dataset import dataset_class, dataset_plugin, load_task
from bench.data.samples import support_ids
from bench.errors import BenchError
from tests.conftest import expand
from tests.own_data_fixtures import (
    labelled_image,
    volume_case,
    write_decathlon,
    write_image_folder,
    write_nnunet_2d,
    write_volume,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(arg) for arg in args])


def files_under(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*")}


def test_nnunet_2d_tasks_split_and_exclusions(tmp_path: Path, isolated_cache: Path) -> None:
    folder = write_nnunet_2d(tmp_path, cases=20, test_cases=4)
    before = files_under(tmp_path)
    result = invoke("data", "check", folder)
    assert result.exit_code == 0, result.output
    assert "Toy discs (nnunet:Dataset123_Toy)" in result.output
    assert "20 cases in imagesTr, 4 labelled in imagesTs" in result.output
    # the square is on two images of three: the others are left out of that task and counted
    squares = sum(1 for index in range(24) if index % 3)
    assert "square (label 2): train" in result.output
    assert f"; {24 - squares} left out with fewer than 10 px of it" in result.output
    assert "spacing:   none recorded: HD95 is in pixels" in result.output
    assert files_under(tmp_path) == before  # nothing written into the user's data

    by_name = load_task("nnunet:Dataset123_Toy", "DISC", tmp_path)  # tasks by name, any case
    assert by_name.name == "disc" and by_name.dataset == "nnunet:Dataset123_Toy"
    assert sorted(s.id for s in by_name.test) == [f"case{i:03d}" for i in range(20, 24)]  # labelsTs is the test split
    assert len(by_name.train) + len(by_name.val) == 20 and len(by_name.val) == 2
    sample = by_name.train[0]
    image, labels = labelled_image(int(sample.id[4:]))
    np.testing.assert_array_equal(sample.mask, labels == 1)
    assert sample.spacing is None and sample.image.shape == image.shape


def test_decathlon_4d_slices_channels_and_v1_names(tmp_path: Path, isolated_cache: Path) -> None:
    folder = write_decathlon(tmp_path, cases=6)
    plugin = dataset_plugin("nnunet:Task09_Toy", tmp_path)
    assert plugin.tasks == ("disc", "square")
    disc = plugin.load("disc")
    samples = {s.id: s for part in ("train", "val", "test") for s in getattr(disc, part)}
    _, labels = volume_case(2)
    expected = {f"toy_002_s{z:03d}" for z in range(len(labels)) if (labels[z] == 1).sum() >= 10}
    assert {i for i in samples if i.startswith("toy_002")} == expected and "toy_002_s000" not in expected
    some = samples[sorted(expected)[0]]
    assert some.spacing == pytest.approx((0.7, 0.8))  # in-plane (row, col) of a volume cut across z
    np.testing.assert_array_equal(some.mask, labels[int(some.id[-3:])] == 1)
    assert "no structure of ≥10 px" in dict(plugin.inventory().excluded).values()

    second = load_task("nnunet:Task09_Toy@MR1", "disc", tmp_path)  # a modality by name
    assert dataset_class("nnunet:Task09_Toy@1", tmp_path).name == "nnunet:Task09_Toy@1"
    first_ids = {s.id: s for s in disc.train}
    other = next(s for s in second.train if s.id in first_ids)
    assert not np.array_equal(other.image, first_ids[other.id].image)  # another modality, another image
    assert second.identity != disc.identity

    # nnU-Net v1 wrote one file per modality, <case>_0000.nii.gz, under the same dataset.json
    converted = tmp_path / "v1" / "Task09_Toy"
    shutil.copytree(folder, converted)
    for path in (converted / "imagesTr").iterdir():
        path.rename(path.with_name(path.name.replace(".nii.gz", "_0000.nii.gz")))
    v1 = load_task("nnunet:Task09_Toy", "disc", tmp_path / "v1")
    assert sorted(s.id for part in ("train", "val", "test") for s in getattr(v1, part)) == sorted(samples)


def test_image_folder_binary_multi_and_named_labels(tmp_path: Path, isolated_cache: Path) -> None:
    binary = write_image_folder(tmp_path, binary_value=255, name="binary")
    assert dataset_class("folder:binary", tmp_path).tasks == ("foreground",)
    task = load_task("folder:binary", "foreground", tmp_path)
    sample = task.train[0]
    _, labels = labelled_image(int(sample.id[3:]))
    np.testing.assert_array_equal(sample.mask, labels == 1)
    colour = cv2.imread(str(binary / "images" / f"{sample.id}.png"))
    grey = np.tensordot((0.299, 0.587, 0.114), colour[..., ::-1].astype(np.float32), axes=([0], [2]))
    assert np.corrcoef(grey.ravel(), sample.image.ravel())[0, 1] > 0.99  # a colour image is read as its luminance

    write_image_folder(tmp_path, name="multi")
    assert dataset_class("folder:multi", tmp_path).tasks == ("label1", "label2")
    named = write_image_folder(tmp_path, name="named")
    (named / "labels.json").write_text(json.dumps({"background": 0, "disc": 1, "square": 2}))
    assert dataset_class(str(named), None).tasks == ("disc", "square")  # a path names the dataset too


def test_given_split_wins(tmp_path: Path, isolated_cache: Path) -> None:
    folder = write_image_folder(tmp_path, name="split")
    stems = [f"img{index:02d}" for index in range(12)]
    (folder / "splits.json").write_text(json.dumps({"train": stems[:8], "val": stems[8:9], "test": stems[9:]}))
    task = load_task("folder:split", "label1", tmp_path)
    assert [s.id for s in task.test] == stems[9:] and [s.id for s in task.val] == stems[8:9]
    (folder / "splits.json").write_text(json.dumps({"train": stems[:8], "val": stems[7:9], "test": []}))
    with pytest.raises(BenchError, match="puts case 'img07' in train and val"):
        dataset_plugin("folder:split", tmp_path).split()


def test_adding_cases_gives_new_split_support_files_and_run_ids(tmp_path: Path, isolated_cache: Path) -> None:
    folder = write_nnunet_2d(tmp_path, cases=20)

    def plan() -> tuple[list[str], Path, list[str]]:
        task = load_task("nnunet:Dataset123_Toy", "disc", tmp_path)
        planned = expand(["unet"], ["nnunet:Dataset123_Toy"], ["disc"], [5], ["mask"], [0], 1, "quick",
                         "litemedsam", data_root=tmp_path)  # fmt: skip
        plugin = dataset_plugin("nnunet:Dataset123_Toy", tmp_path)
        return [p.spec.run_id for p in planned], plugin.split_file(), support_ids(task, 5, 0)

    ids, split_file, support = plan()
    assert split_file.exists() and not split_file.is_relative_to(folder)
    for index in range(20, 26):  # six more images
        image, labels = labelled_image(index)
        cv2.imwrite(str(folder / "imagesTr" / f"case{index:03d}_0000.png"), image)
        cv2.imwrite(str(folder / "labelsTr" / f"case{index:03d}.png"), labels)
    new_ids, new_split_file, new_support = plan()  # no "delete the file": new files instead
    assert new_split_file != split_file and split_file.exists()
    assert set(new_ids).isdisjoint(ids)
    assert len(new_support) == 5
    assert len(list((isolated_cache / "supports" / "nnunet-Dataset123_Toy").iterdir())) == 2


def test_folder_dataset_runs_end_to_end(tmp_path: Path, isolated_cache: Path) -> None:
    write_image_folder(tmp_path, count=20, binary_value=255, name="discs")
    results = tmp_path / "results"
    run = invoke("run", "--plugin", EXAMPLES / "otsu_threshold.py", "--methods", "otsu", "--datasets", "folder:discs",
                 "--data-root", tmp_path, "--results", results, "--experiment", "own")  # fmt: skip
    assert run.exit_code == 0, run.output
    (record_path,) = (results / "own" / "runs").glob("*.json")
    record = json.loads(record_path.read_text())
    assert record["status"] == "ok" and record["spec"]["dataset"] == "folder:discs"
    assert record["spec"]["dataset_identity"] and record["dataset_info"]["display_name"] == "discs"
    table = invoke("table", "--results", results, "--experiment", "own", "--format", "md")
    assert table.exit_code == 0 and "discs" in table.output


def write_label(path: Path, labels: np.ndarray) -> None:
    cv2.imwrite(str(path), labels)


BAD_INPUTS = {
    "no dataset.json": (lambda f: (f / "dataset.json").unlink(), "dataset.json"),
    "no background": (lambda f: _edit(f, labels={"disc": 1, "square": 2}), "labels need 'background': 0"),
    "duplicate values": (lambda f: _edit(f, labels={"background": 0, "disc": 1, "square": 1}), "the same value 1"),
    "image without label": (lambda f: (f / "labelsTr" / "case003.png").unlink(), "case003_0000.png has no label file"),
    "label without image": (lambda f: (f / "imagesTr" / "case003_0000.png").unlink(), "case003.png has no image"),
    "shapes differ": (
        lambda f: write_label(f / "labelsTr" / "case002.png", np.zeros((10, 10), np.uint8)),
        "has shape (10, 10), its image case002_0000.png (48, 64)",
    ),
    "unknown label value": (
        lambda f: write_label(f / "labelsTr" / "case002.png", np.full((48, 64), 7, np.uint8)),
        "holds label value 7, which the dataset's labels do not name",
    ),
    "task in no image": (lambda f: _edit(f, labels={"background": 0, "disc": 1, "square": 2, "cup": 3}),
                         "no image shows cup"),
}


def _edit(folder: Path, **changes: object) -> None:
    path = folder / "dataset.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_nnunet_input_is_one_line_and_exit_2(case: str, tmp_path: Path, isolated_cache: Path) -> None:
    folder = write_nnunet_2d(tmp_path, cases=12)
    spoil, message = BAD_INPUTS[case]
    spoil(folder)
    before = files_under(tmp_path)
    result = invoke("data", "check", f"nnunet:{folder}")
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and result.output.strip().count("\n") == 0 or case == "task in no image"
    assert files_under(tmp_path) == before
    # the layout is checked when the grid is planned; what the files hold, when they are read before any run
    content = case in ("shapes differ", "unknown label value", "task in no image")
    results = tmp_path / "results"
    run = invoke("run", "--methods", "unet", "--datasets", folder, "--results", results,
                 *(() if content else ("--dry-run",)))  # fmt: skip
    assert run.exit_code == 2 and message in run.output, run.output
    assert not results.exists()


def test_bad_channel_unreadable_file_wrong_root_and_read_only(tmp_path: Path, isolated_cache: Path) -> None:
    folder = write_nnunet_2d(tmp_path, cases=12)
    channel = invoke("data", "check", "nnunet:Dataset123_Toy@2", "--data-root", tmp_path)
    assert channel.exit_code == 2 and "has no channel '2'; its channels: 0 (US)" in channel.output

    (folder / "imagesTr" / "case004_0000.png").write_bytes(b"\x89PNG\r\n truncated")
    with pytest.warns(UserWarning, match="skipped imagesTr/case004_0000.png"):
        truncated = invoke("data", "check", folder)
    assert truncated.exit_code == 0, truncated.output  # skipped, named and counted: the others are usable
    assert "1 unreadable: imagesTr/case004_0000.png" in truncated.output

    elsewhere = tmp_path / "elsewhere"
    wrong_root = invoke("run", "--datasets", "nnunet:Dataset123_Toy", "--data-root", elsewhere, "--dry-run")
    assert wrong_root.exit_code == 2 and "no dataset folder 'Dataset123_Toy'" in wrong_root.output
    float_labels = tmp_path / "floats" / "Dataset124_Float"
    (float_labels / "imagesTr").mkdir(parents=True)
    (float_labels / "labelsTr").mkdir()
    image, labels = volume_case(0)
    write_volume(float_labels / "imagesTr" / "a_0000.nii.gz", image, (1.0, 1.0, 3.0))
    write_volume(float_labels / "labelsTr" / "a.nii.gz", labels.astype(np.float32) * 0.5, (1.0, 1.0, 3.0))
    (float_labels / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "MR"}, "labels": {"background": 0, "disc": 1}, "file_ending": ".nii.gz"}))
    halves = invoke("data", "check", float_labels)
    assert halves.exit_code == 2 and "a.nii.gz: holds label values that are not whole numbers" in halves.output

    os.chmod(folder, 0o555)
    try:
        before = files_under(folder)
        with pytest.warns(UserWarning, match="case004"):  # the truncated file is still named
            read_only = invoke("data", "check", folder)
        assert read_only.exit_code == 0 and str(isolated_cache) in read_only.output
        assert files_under(folder) == before
    finally:
        os.chmod(folder, 0o755)


def test_volume_dataset_records_per_volume_metrics(tmp_path: Path, isolated_cache: Path) -> None:
    from bench.data.volumes import hd95_nd
    from bench.metrics import hd95

    write_decathlon(tmp_path, cases=8)
    results = tmp_path / "results"
    run = invoke("run", "--plugin", EXAMPLES / "otsu_threshold.py", "--methods", "otsu", "--datasets",
                 "nnunet:Task09_Toy", "--tasks", "disc", "--data-root", tmp_path, "--results", results)  # fmt: skip
    assert run.exit_code == 0, run.output
    (record,) = (json.loads(path.read_text()) for path in (results / "default" / "runs").glob("*.json"))
    volumes = {volume["id"]: volume for volume in record["volumes"]}
    for case, volume in volumes.items():
        slices = [c for c in record["cases"] if c["id"].startswith(f"{case}_s")]
        assert volume["slices"] == len(slices)
        assert volume["tp"] == sum(c["tp"] for c in slices) and volume["fn"] == sum(c["fn"] for c in slices)
    report = invoke("report", "--results", results, "--out", tmp_path / "report")
    assert report.exit_code == 0, report.output
    assert "## Per volume" in (tmp_path / "report" / "report.md").read_text()

    rng = np.random.default_rng(0)  # the 3-D HD95 is the 2-D one's convention: equal on a single slice
    truth, prediction = rng.random((2, 40, 50)) > 0.7
    assert hd95_nd(prediction[None], truth[None], (5.0, 0.7, 0.8)) == pytest.approx(hd95(prediction, truth, (0.7, 0.8)))


def test_plugin_dataset_in_check_run_and_figure(tmp_path: Path, isolated_cache: Path) -> None:
    folder = tmp_path / "data" / "suffixmasks"
    folder.mkdir(parents=True)
    for index in range(12):
        image, labels = labelled_image(index)
        cv2.imwrite(str(folder / f"scan{index:02d}.png"), image)
        cv2.imwrite(str(folder / f"scan{index:02d}_mask.png"), (labels == 1).astype(np.uint8) * 255)
    plugin = ("--plugin", EXAMPLES / "suffix_masks.py")
    check = invoke("data", "check", "suffixmasks", *plugin, "--data-root", tmp_path / "data")
    assert check.exit_code == 0 and "suffixmasks is usable" in check.output, check.output
    results = tmp_path / "results"
    run = invoke("run", *plugin, "--plugin", EXAMPLES / "otsu_threshold.py", "--methods", "otsu", "--datasets",
                 "suffixmasks", "--data-root", tmp_path / "data", "--results", results)  # fmt: skip
    assert run.exit_code == 0, run.output
    (record,) = (json.loads(path.read_text()) for path in (results / "default" / "runs").glob("*.json"))
    assert record["spec"]["dataset_identity"]  # a plugin's dataset is identified by its content too
    figure = invoke("figure", *plugin, "--task", "lesion", "--results", results, "--data-root", tmp_path / "data",
                    "--out", tmp_path / "figures", "--images", "2")  # fmt: skip
    assert figure.exit_code == 0, figure.output
    assert list((tmp_path / "figures").glob("qualitative_lesion.png"))


def test_ls_lists_user_datasets_and_their_tasks(tmp_path: Path, isolated_cache: Path) -> None:
    write_nnunet_2d(tmp_path / "nnunet")
    write_image_folder(tmp_path, binary_value=1, name="discs")
    listed = invoke("ls", "datasets", "--data-root", tmp_path)
    assert listed.exit_code == 0, listed.output
    assert "nnunet:Dataset123_Toy: tasks disc, square" in listed.output
    assert "folder:discs: tasks foreground" in listed.output


def test_predict_and_evaluate_on_a_volume_dataset(tmp_path: Path, isolated_cache: Path) -> None:
    import SimpleITK as sitk

    folder = write_decathlon(tmp_path, cases=8)
    results = tmp_path / "results"
    plugin = ("--plugin", EXAMPLES / "otsu_threshold.py")
    run = invoke("run", *plugin, "--methods", "otsu", "--datasets", "nnunet:Task09_Toy", "--tasks", "disc",
                 "--data-root", tmp_path, "--results", results)  # fmt: skip
    assert run.exit_code == 0, run.output
    (record,) = (json.loads(path.read_text()) for path in (results / "default" / "runs").glob("*.json"))
    volume = folder / "imagesTr" / "toy_001.nii.gz"
    single = tmp_path / "toy_001.nii.gz"  # one modality, as a user's new scan would be
    image = sitk.ReadImage(str(volume))
    first = sitk.Extract(image, (*image.GetSize()[:3], 0), (0, 0, 0, 0))
    sitk.WriteImage(first, str(single))
    out = tmp_path / "masks"
    predicted = invoke("predict", record["run_id"], single, "--output", out, "--results", results, *plugin,
                       "--data-root", tmp_path, "--device", "cpu")  # fmt: skip
    assert predicted.exit_code == 0, predicted.output
    written = sitk.ReadImage(str(out / "toy_001.nii.gz"))
    assert written.GetSize() == first.GetSize() and written.GetSpacing() == pytest.approx(first.GetSpacing())
    evaluated = invoke("evaluate", record["run_id"], "--dataset", "nnunet:Task09_Toy", "--results", results,
                       *plugin, "--data-root", tmp_path, "--device", "cpu")  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
