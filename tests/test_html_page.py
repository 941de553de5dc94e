"""`bench report --html`: the results page of a small real experiment, read as text and opened in headless Chromium.

The experiment runs two small methods on an nnU-Net dataset whose names are hostile: a test case's file name and
a label (task) name hold ``<script>``, quotes and ``&``, which the page must show as text and never run.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from bench.cli import app
from bench.data.dataset import load_task
from bench.records import store
from bench.records.predictions import load_predictions, mark_as_rerun
from bench.report.case_browser import THUMB_SIDE, case_images
from tests.browser import chromium, missing_browser, save_screenshot
from tests.conftest import registered_methods
from tests.fakes import FAKES
from tests.own_data_fixtures import labelled_image

EVIL_CASE = "<script>alert(1)<b>\"q\"'&amp;"  # a file name cannot hold "/", so no "</script>" here
EVIL_LABEL = "<script>alert('label')<i>\"&"
EXPERIMENT = "hostile"


def _write_dataset(root: Path) -> Path:
    """An nnU-Net v2 dataset: 10 training cases, 4 labelled test cases, one of them named ``EVIL_CASE``."""
    folder = root / "Dataset777_Evil"
    for index in range(14):
        images, labels = ("imagesTr", "labelsTr") if index < 10 else ("imagesTs", "labelsTs")
        for part in (images, labels):
            (folder / part).mkdir(parents=True, exist_ok=True)
        image, label_map = labelled_image(index)
        case = EVIL_CASE if index == 11 else f"case{index:02d}"
        assert cv2.imwrite(str(folder / images / f"{case}_0000.png"), image)
        assert cv2.imwrite(str(folder / labels / f"{case}.png"), label_map)
    description = {"channel_names": {"0": "US"}, "labels": {"background": 0, EVIL_LABEL: 1, "square": 2},
                   "numTraining": 10, "file_ending": ".png", "name": "Evil <b>toy</b>"}  # fmt: skip
    (folder / "dataset.json").write_text(json.dumps(description))
    return folder


def _invoke(*arguments: str) -> str:
    outcome = CliRunner().invoke(app, [str(argument) for argument in arguments])
    assert outcome.exit_code == 0, outcome.output
    return outcome.output


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The experiment's records, `bench table`'s Markdown and the page; the box-fill run of the square keeps no
    predictions (made elsewhere, its file did not come back)."""
    root = tmp_path_factory.mktemp("html")
    with pytest.MonkeyPatch.context() as patch, registered_methods(FAKES):
        patch.setenv("BENCH_CACHE", str(root / "cache"))
        dataset = f"nnunet:{_write_dataset(root / 'data')}"
        results = root / "results"
        _invoke("run", "--methods", "fake-threshold,fake-boxfill", "--datasets", dataset, "--results", results,
                "--experiment", EXPERIMENT, "--shots", "5", "--seeds", "0,1", "--draws", "1", "--budget", "quick")
        records = store.load_records(results, EXPERIMENT)
        lost = next(r for r in records if r["spec"]["method"] == "fake-boxfill" and r["spec"]["task"] == "square")
        store.prediction_path(results, EXPERIMENT, lost["run_id"]).unlink()
        # the threshold's seed-0 run on the other label keeps a re-run's masks (as `bench recheck
        # --keep-predictions` leaves them), whose scores are set apart from the record's here by halving them
        rerun = next(r for r in records if r["spec"]["method"] == "fake-threshold"
                     and r["spec"]["task"] == EVIL_LABEL and r["spec"]["seed"] == 0)  # fmt: skip
        mark_as_rerun(store.prediction_path(results, EXPERIMENT, rerun["run_id"]),
                      rerun | {"git_rev": "0123456789abcdef", "cases": [case | {"dice": case["dice"] / 2}
                                                                        for case in rerun["cases"]]})  # fmt: skip
        markdown = _invoke("table", "--results", results, "--experiment", EXPERIMENT)
        out = root / "report"
        # the records name the dataset by its folder's name: the page finds it under --data-root
        _invoke("report", "--results", results, "--experiment", EXPERIMENT, "--out", out, "--html",
                "--reference", "fake-threshold", "--data-root", root / "data")
        split = {task: [s.id for s in load_task(dataset, task).test] for task in (EVIL_LABEL, "square")}
        yield {"path": out / "index.html", "markdown": markdown, "records": records, "results": results,
               "split": split, "lost": lost["run_id"], "rerun": rerun}  # fmt: skip


def markdown_table(markdown: str) -> tuple[list[str], list[list[str]]]:
    """`bench table`'s header and rows as cell text (bold marks dropped: the page shows them as bold)."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    cells = [[cell.strip().replace("**", "") for cell in line.strip("|").split("|")] for line in lines]
    return cells[0], cells[2:]


class _Tables(HTMLParser):
    """Each table's header and body cells as text, by table id; each img's attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict[str, list]] = {}
        self.images: list[dict[str, str]] = []
        self._table = self._part = self._cell = None
        self._row: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attributes.get("id", ""), {"head": [], "body": []})
        elif tag in ("thead", "tbody"):
            self._part = "head" if tag == "thead" else "body"
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "img":
            self.images.append(attributes)

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(self._cell.strip())
            self._cell = None
        elif tag == "tr" and self._table is not None and self._part:
            self._table[self._part].append(self._row)


def _parsed(page: dict) -> _Tables:
    parser = _Tables()
    parser.feed(page["path"].read_text(encoding="utf-8"))
    return parser


def _decoded(uri: str) -> np.ndarray:
    """A data URI's image as RGBA pixels."""
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGBA"))


def test_page_holds_the_table_the_cases_and_escapes_every_name(page) -> None:
    text = page["path"].read_text(encoding="utf-8")
    parsed = _parsed(page)
    header, rows = markdown_table(page["markdown"])
    table = parsed.tables["table1-rows"]
    assert table["head"] == [header] and table["body"] == rows

    # a browser per structure, a row per test case, in the test split's order
    for browser, task in zip(("cases-0", "cases-1"), (EVIL_LABEL, "square"), strict=True):
        assert [row[0] for row in parsed.tables[browser]["body"]] == page["split"][task]

    # nothing from the data is markup: the hostile names appear escaped, as text, and never as a tag
    assert "<script>alert" not in text and "<b>toy</b>" not in text
    assert html.escape(EVIL_CASE, quote=True) in text and html.escape(EVIL_LABEL, quote=True) in text
    block = re.search(r'<script type="application/json" id="case-data">(.*?)</script>', text, re.S).group(1)
    assert "<" not in block and ">" not in block
    data = json.loads(block)
    assert EVIL_CASE in [case["id"] for browser in data["browsers"] for case in browser["cases"]]
    assert {browser["label"] for browser in data["browsers"]} == {f"Evil <b>toy</b> {EVIL_LABEL}",
                                                                  "Evil <b>toy</b> square"}

    # every image names its case (and a prediction its row and Dice); thumbnails are small
    evil = [image for image in parsed.images if EVIL_CASE in image.get("alt", "")]
    # per structure: image, ground truth and each row's prediction, but the square's box fill kept none
    assert len(evil) == 2 * (2 + 2) - 1
    assert all(image.get("alt") for image in parsed.images)
    assert any(re.fullmatch(r"case .+, Threshold · mask · k=5 · quick: prediction, Dice \d\.\d{3}", image["alt"])
               for image in evil)  # fmt: skip
    masks = [_decoded(uri) for browser in data["browsers"] for case in browser["cases"]
             for uri in [case["truth_thumb"]] + [cell["thumb"] for cell in case["cells"]] if uri]  # fmt: skip
    assert len(masks) == sum(1 for image in parsed.images if "data-mask" in image)
    assert max(max(mask.shape[:2]) for mask in masks) <= THUMB_SIDE
    shown = [(int(image["width"]), int(image["height"])) for image in parsed.images if "data-image" in image]
    assert shown and max(max(size) for size in shown) <= THUMB_SIDE

    # the two labels are of the same images: the page holds each image once (these are small enough to keep
    # their size in the large view, so a case's thumbnail is its large image too)
    assert len(data["images"]) == len(set(data["images"])) == len(page["split"][EVIL_LABEL])
    numbers = [{case["id"]: case["image"] for case in browser["cases"]} for browser in data["browsers"]]
    shared = numbers[0].keys() & numbers[1].keys()
    assert shared and all(numbers[0][case] == numbers[1][case] for case in shared)


def test_an_image_hardly_larger_than_a_thumbnail_is_in_the_page_once() -> None:
    rng = np.random.default_rng(0)
    slice_like = rng.integers(0, 256, (256, 256), dtype=np.uint8)  # ACDC's preprocessed slices
    thumb, large, size = case_images(slice_like)
    assert thumb == large and size == (THUMB_SIDE, THUMB_SIDE) and _decoded(large).shape[:2] == (256, 256)
    wide = rng.integers(0, 256, (540, 800), dtype=np.uint8)  # an HC18 image
    thumb, large, size = case_images(wide)
    assert _decoded(thumb).shape[:2] == (130, THUMB_SIDE) == size[::-1] and _decoded(large).shape[:2] == (346, 512)


def test_prediction_thumbnails_are_the_kept_masks_and_a_lost_file_says_so(page) -> None:
    text = page["path"].read_text(encoding="utf-8")
    data = json.loads(re.search(r'id="case-data">(.*?)</script>', text, re.S).group(1))
    square = next(browser for browser in data["browsers"] if browser["label"].endswith(" square"))
    lost = [j for j, column in enumerate(square["columns"]) if column["label"].startswith("Box fill")]
    assert lost and all(case["cells"][j]["contour"] is None for case in square["cases"] for j in lost)
    assert "no predictions kept" in text

    # the threshold's large contour outlines the mask its run kept, at the large view's scale
    record = next(r for r in page["records"] if r["spec"]["method"] == "fake-threshold"
                  and r["spec"]["task"] == "square" and r["spec"]["seed"] == 0)  # fmt: skip
    kept = load_predictions(store.prediction_path(page["results"], EXPERIMENT, record["run_id"]))
    column = next(j for j, column in enumerate(square["columns"]) if column["label"].startswith("Threshold"))
    case = next(case for case in square["cases"] if kept[case["id"]].any())
    contour = _decoded(case["cells"][column]["contour"])[..., 3] > 0
    mask = kept[case["id"]]
    assert contour.shape == mask.shape  # 48 × 64: small images keep their size
    assert contour.any() and not (contour & ~mask).any()  # drawn inside the mask, on its edge
    assert case["cells"][column]["dice"] == next(c["dice"] for c in record["cases"] if c["id"] == case["id"])


def test_a_row_shown_by_a_re_run_shows_the_re_runs_scores_and_says_so(page) -> None:
    text = page["path"].read_text(encoding="utf-8")
    data = json.loads(re.search(r'id="case-data">(.*?)</script>', text, re.S).group(1))
    browser = next(browser for browser in data["browsers"] if browser["label"].endswith(EVIL_LABEL))
    column = next(j for j, column in enumerate(browser["columns"]) if column["label"].startswith("Threshold"))
    assert "masks and scores of a re-run at 0123456789" in browser["columns"][column]["run"]
    recorded = {case["id"]: case["dice"] for case in page["rerun"]["cases"]}
    assert [case["cells"][column]["dice"] for case in browser["cases"]] == [
        recorded[case["id"]] / 2 for case in browser["cases"]]  # fmt: skip
    assert html.unescape(text).count("masks and scores of a re-run at 0123456789") >= 1  # in the column's header


@pytest.mark.skipif(missing_browser() is not None, reason=str(missing_browser()))
def test_page_works_in_headless_chromium(page, tmp_path) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    header, rows = markdown_table(page["markdown"])
    with chromium() as driver:
        driver.get(page["path"].as_uri())
        # a row's thumbnail and masks come as the row nears the window: at first none of the last case browser's
        # (the plots keep it far down the page), each of them once it has been scrolled to
        last_rows = "document.querySelectorAll('#cases-1 tr.case')"
        # (until then each image is a 1-px blank)
        shown = f"return Array.from({last_rows}).filter(r => r.querySelector('td.image img').naturalWidth > 1).length"
        masks = (f"return Array.from({last_rows}).map(r => Array.from(r.querySelectorAll('.thumb img'))"
                 ".filter(i => i.naturalWidth > 1).length)")
        below = driver.execute_script(f"return {last_rows}[0].getBoundingClientRect().top - window.innerHeight")
        assert below > 1500 and driver.execute_script(shown) == 0, below  # the script's margin: 1500 px
        assert set(driver.execute_script(masks)) == {0}
        # none without a source, which Chromium lays out as its alt text (7 s for ACDC's 11,000)
        assert driver.execute_script("return document.querySelectorAll('#cases img:not([src])').length") == 0
        driver.execute_script(f"{last_rows}.forEach(r => r.scrollIntoView())")
        WebDriverWait(driver, 10).until(lambda d: d.execute_script(shown) == len(page["split"]["square"]))
        # the ground truth and each row that kept its masks (the box fill kept none)
        WebDriverWait(driver, 10).until(lambda d: set(d.execute_script(masks)) == {2})
        driver.execute_script("window.scrollTo(0, 0)")
        table = driver.find_element(By.ID, "table1-rows")
        assert [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")] == header

        def shown_rows() -> list[list[str]]:
            return [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
                    for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr")]  # fmt: skip

        assert shown_rows() == rows
        # sorting by a structure's column: a click sorts up, Enter on the focused header down
        column = len(header) - 1
        button = table.find_elements(By.CSS_SELECTOR, "thead th button")[column]
        button.click()
        up = [float(row[column].split()[0]) for row in shown_rows()]
        button.send_keys(Keys.ENTER)
        down = [float(row[column].split()[0]) for row in shown_rows()]
        assert up == sorted(up) and down == sorted(up, reverse=True) and len(set(up)) > 1
        assert sorted(shown_rows()) == sorted(rows)

        for index, task in enumerate((EVIL_LABEL, "square")):
            cases = driver.find_elements(By.CSS_SELECTOR, f"#cases-{index} tbody tr.case")
            assert len(cases) == len(page["split"][task])
        # sorted by the threshold's Dice (its column's button), worst first; then its method's columns hidden
        browser = driver.find_element(By.ID, "cases-1")
        threshold = next(th for th in browser.find_elements(By.CSS_SELECTOR, "thead th")
                         if th.text.startswith("Threshold"))  # fmt: skip
        threshold.find_element(By.TAG_NAME, "button").click()
        position = browser.find_elements(By.CSS_SELECTOR, "thead th").index(threshold)
        dice = [float(tr.find_elements(By.TAG_NAME, "td")[position].get_attribute("data-value"))
                for tr in browser.find_elements(By.CSS_SELECTOR, "tbody tr")]  # fmt: skip
        assert dice == sorted(dice) and len(set(dice)) > 1
        driver.find_element(By.CSS_SELECTOR, "#cases-1-filters input[value='Threshold']").click()
        cells = browser.find_elements(By.CSS_SELECTOR, f"td:nth-child({position + 1})")
        assert not threshold.is_displayed() and not any(td.is_displayed() for td in cells)
        # every image decoded (the thumbnails are data URIs, the plots files beside the page)
        driver.execute_script("document.querySelectorAll('tr.case').forEach(r => r.scrollIntoView())")
        broken = ("return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length")
        WebDriverWait(driver, 10).until(lambda d: d.execute_script(broken) == 0)
        # each mask lies over its case's thumbnail, which the page holds once, in the row's Image cell
        first = driver.find_element(By.CSS_SELECTOR, "#cases-0 tr.case")
        thumbnail = first.find_element(By.CSS_SELECTOR, "td.image img").get_attribute("src")
        beneath = first.find_elements(By.CSS_SELECTOR, ".thumb")
        assert len(beneath) == 1 + 2 and all(thumb.value_of_css_property("background-image") == f'url("{thumbnail}")'
                                             for thumb in beneath)  # fmt: skip

        evil = next(tr for tr in driver.find_elements(By.CSS_SELECTOR, "#cases-0 tr.case")
                    if tr.find_element(By.TAG_NAME, "td").text == EVIL_CASE)  # fmt: skip
        evil.click()
        dialog = driver.find_element(By.ID, "case-view")
        assert dialog.get_attribute("open") is not None
        assert dialog.find_element(By.TAG_NAME, "h2").text.endswith(f"case {EVIL_CASE}")
        panels = dialog.find_elements(By.CSS_SELECTOR, ".panel")
        assert len(panels) == 1 + 2  # the ground truth, then each row's contours
        dialog.find_element(By.CSS_SELECTOR, "button.close").click()
        assert dialog.get_attribute("open") is None
        driver.find_element(By.CSS_SELECTOR, "#cases-1 tr.case").send_keys(Keys.ENTER)
        assert dialog.get_attribute("open") is not None
        assert "no predictions kept" in dialog.text  # the square's box-fill run kept none

        with pytest.raises(NoAlertPresentException):
            driver.switch_to.alert.text  # noqa: B018 (the hostile names ran nothing)
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == []
        shot = save_screenshot(page["path"], tmp_path / "page.png", driver)
        assert cv2.imread(str(shot)).shape[1] > 0


def test_paper_numbers_stand_beside_our_rows_of_the_same_method_labels_and_k(tmp_path, report_methods,
                                                                              monkeypatch) -> None:
    from bench.report import paper
    from bench.report.html_page import table_section
    from bench.report.table import build_table
    from tests.report_records import write_record

    results = tmp_path / "results"
    write_record(results, "rep-unet", {"a": 0.8, "b": 0.6})
    write_record(results, "rep-unet", {"a": 0.7, "b": 0.5}, labels="box")  # UNet on boxes: the paper has no such row
    write_record(results, "rep-medsam", {"a": 0.95, "b": 0.85}, labels="box", shots=None, params_trainable=0)
    monkeypatch.setitem(paper.PAPER_LABELS, "rep-unet", "mask")
    monkeypatch.setitem(paper.PAPER_LABELS, "rep-medsam", "box")
    monkeypatch.setitem(paper.TABLE1, ("rep-unet", "10", "hc18", "ellipse"), paper.PaperResult(61.79))
    monkeypatch.setitem(paper.TABLE1, ("rep-medsam", "–", "hc18", "ellipse"), paper.PaperResult(95.19, 0.5))
    table = build_table(store.runs_frame(store.load_records(results, "exp")), "dice")
    assert "(paper)" not in table_section(table)  # "synthetic" is none of the paper's datasets

    parsed = _Tables()
    parsed.feed(table_section(table, {"synthetic": "hc18"}))
    header, body = parsed.tables["table1-rows"]["head"][0], parsed.tables["table1-rows"]["body"]
    paper_column = header.index(next(name for name in header if name.endswith("(paper)")))
    assert header[paper_column - 1] + " (paper)" == header[paper_column]
    assert header[3:5] == ["Mask labels", "BB labels"]
    by_row = {(row[1], "mask" if row[3] else "box"): row[paper_column] for row in body}
    assert by_row == {("MedSAM", "box"): "95.19 ± 0.50", ("UNet", "mask"): "61.79", ("UNet", "box"): "–"}
