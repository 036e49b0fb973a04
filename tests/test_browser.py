"""What a person sees, in a real headless Chromium: the page of a live serve.py and report.html.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and selenium;
skips, saying so, only where no browser can be found. Screenshots go to ``<tmp>/screenshots``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from src.inference.predictor import CountPredictor
from tests.helpers import HTML_NAME, ROOT, SHARED_ABID

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver", "/usr/lib/chromium/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--window-size=1200,900")


def _find(candidates: tuple[str, ...]) -> str | None:
    return next((found for c in candidates if (found := shutil.which(c))), None)


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    binary, driver_path = _find(BROWSERS), _find(DRIVERS)
    if not binary or not driver_path:
        pytest.skip("no Chromium and chromedriver found: `apt-get install -y chromium chromium-driver` (.ci/run does)")
    from selenium import webdriver  # a dev requirement: its absence is an error, not a skip
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    """A live `python serve.py` on 127.0.0.1, as a user starts it."""
    port = _free_port()
    run_dir = tmp_path_factory.mktemp("serve")
    cmd = [sys.executable, "serve.py", f"model_dir={tiny_model_dir}", f"port={port}", "host=127.0.0.1",
           "log_level=warning", "torch_threads=1", f"hydra.run.dir={run_dir}"]
    log_file = open(run_dir / "serve.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"serve.py exited with {proc.returncode}: {(run_dir / 'serve.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("serve.py did not answer /ping within 180 s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log_file.close()


@pytest.fixture(scope="module")
def photo(tmp_path_factory, synthetic_dir) -> Path:
    """A real JPEG: an ABID bin photo where the team's sample is present, else a synthetic bin."""
    source = sorted((synthetic_dir / "test" / "2").iterdir())[0]
    if (SHARED_ABID / "index.csv").is_file():  # the first full-resolution photo of a bin with 3 items
        with open(SHARED_ABID / "index.csv", newline="") as f:
            rows = (r for r in csv.DictReader(f) if r["resized_224"] == "0" and r["expected_quantity"] == "3")
            source = SHARED_ABID / "bin-images" / f"{next(rows)['name']}.jpg"
    return Path(shutil.copy(source, tmp_path_factory.mktemp("upload") / "bin.jpg"))


def _upload(browser, server: str, *paths: Path) -> list:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/")
    browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in paths))
    WebDriverWait(browser, 60).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card[data-state]")) == len(paths))
    return browser.find_elements(By.CSS_SELECTOR, ".card")


def _no_alert(browser) -> bool:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        text = browser.switch_to.alert.text
    except NoAlertPresentException:
        return True
    raise AssertionError(f"the page ran an injected script: alert({text!r})")


def test_page_shows_count_bars_and_the_servers_415(browser, server, photo, tmp_path, screenshots):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a photo")
    jpeg_card, text_card = _upload(browser, server, photo, text_file)

    answer = httpx.post(f"{server}/invocations", content=photo.read_bytes(),
                        headers={"Content-Type": "image/jpeg"}).json()["predictions"][0]
    assert jpeg_card.get_attribute("data-state") == "done"
    assert jpeg_card.find_element(By.CSS_SELECTOR, ".count").text.split()[0] == str(answer["count"])
    assert jpeg_card.find_element(By.CSS_SELECTOR, ".confidence").text == f"confidence {100 * answer['confidence']:.1f} %"
    bars = jpeg_card.find_elements(By.CSS_SELECTOR, ".bar")
    assert len(bars) == 6
    widths = [b.size["width"] for b in bars]
    assert widths.index(max(widths)) == answer["count"] and max(widths) > 0
    assert "chosen" in bars[answer["count"]].get_attribute("class")
    assert jpeg_card.find_element(By.CSS_SELECTOR, ".photo").get_property("naturalWidth") > 0

    # A click on the thumbnail shows the photo larger; a click anywhere (or Escape) closes it.
    thumbnail = jpeg_card.find_element(By.CSS_SELECTOR, ".photo")
    thumbnail.click()
    viewer = browser.find_element(By.ID, "viewer")
    WebDriverWait(browser, 10).until(lambda d: viewer.is_displayed())
    large = browser.find_element(By.ID, "viewer-img")
    assert large.get_property("naturalWidth") > 0 and large.size["width"] >= 3 * thumbnail.size["width"]
    assert browser.find_element(By.ID, "viewer-caption").text == photo.name
    browser.save_screenshot(str(screenshots / "page_enlarged.png"))
    viewer.click()
    WebDriverWait(browser, 10).until(lambda d: not viewer.is_displayed())

    refused = httpx.post(f"{server}/invocations", content=b"not a photo", headers={"Content-Type": "text/plain"})
    assert refused.status_code == 415
    assert text_card.get_attribute("data-state") == "error"
    assert text_card.find_element(By.CSS_SELECTOR, ".error").text == f"415: {refused.json()['error']}"
    assert not text_card.find_elements(By.CSS_SELECTOR, ".bar")

    # An expected quantity typed next to the photo: the card is counted again and checked against it.
    quantity = jpeg_card.find_element(By.CSS_SELECTOR, ".expected input")
    quantity.send_keys("2", Keys.TAB)
    WebDriverWait(browser, 30).until(lambda d: "p(2) = " in jpeg_card.find_element(By.CSS_SELECTOR, ".answer").text)
    assert f"p(2) = {100 * answer['probabilities'][2]:.1f} %" in jpeg_card.text
    browser.save_screenshot(str(screenshots / "page.png"))
    assert (screenshots / "page.png").stat().st_size > 0


def test_page_says_which_model_is_loaded(browser, server):
    """From GET /model: the network and what it was trained on; a server without it (404) or an
    artifact without provenance still gives a readable line."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/")
    line = browser.find_element(By.ID, "model")
    WebDriverWait(browser, 30).until(lambda d: line.get_attribute("data-state"))
    described = httpx.get(f"{server}/model")
    if described.status_code == 200:
        body = described.json()
        assert line.get_attribute("data-state") == "known"
        assert line.text.startswith(f"Model: {body['model']['net']['name']}, {body['model']['image_size']} px")
        data = (body.get("provenance") or {}).get("data") or {}
        assert (f"trained on {data['kind']}" if data.get("kind") else "training data not recorded") in line.text
    else:
        assert line.get_attribute("data-state") == "unknown" and "does not say which model" in line.text


def test_page_describes_a_model_with_provenance_and_without(browser, server):
    """describeModel on the documented GET /model shapes, run in the page itself."""
    browser.get(server + "/")
    describe = "return describeModel(arguments[0]);"
    full = {"model": {"net": {"name": "mobilenet_v2"}, "image_size": 160, "decision_rule": "expected",
                      "classes": [0, 1, 2, 3, 4, 5, 6]},
            "provenance": {"version": "0.3.0", "created": "2026-12-06",
                           "data": {"kind": "abid", "source": "data/abid_sample"}}}
    assert browser.execute_script(describe, full) == ("Model: mobilenet_v2, 160 px, expected rule, 7 classes; trained on "
                                                      "abid (data/abid_sample); bincount 0.3.0, created 2026-12-06")
    assert browser.execute_script(describe, {**full, "provenance": None}).endswith("; training data not recorded")


def test_page_checks_a_manifest_like_predict_manifest(browser, server, photo, tmp_path, tiny_model_dir, screenshots):
    """A CSV (image,expected_quantity) and its photos, picked in the page: one row per manifest row with
    the verdict, count and p_expected predict.py --manifest gives, and the bad rows' errors in place."""
    import shutil as sh

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from src.serving.predict import predict_manifest

    photos = tmp_path / "bins"
    photos.mkdir()
    first, second = sh.copy(photo, photos / "00017.jpg"), sh.copy(photo, photos / "00018.jpg")
    manifest = tmp_path / "bins.csv"
    manifest.write_text("\ufeffimage,expected_quantity,note\r\n"
                        "bins/00017.jpg,2,\"a, quoted note\"\r\nbins/00018.jpg,0,\r\n"
                        "bins/00017.jpg,x,\r\nbins/00018.jpg,9,\r\nbins/missing.jpg,1,\r\n", encoding="utf-8")
    expected = predict_manifest(CountPredictor.from_model_dir(tiny_model_dir), manifest)

    browser.get(server + "/")
    browser.find_element(By.ID, "manifest-csv").send_keys(str(manifest))
    browser.find_element(By.ID, "manifest-photos").send_keys(f"{first}\n{second}")
    browser.find_element(By.ID, "manifest-run").click()
    status = browser.find_element(By.ID, "manifest-status")
    WebDriverWait(browser, 60).until(lambda d: status.get_attribute("data-state") == "done")
    assert status.text == "5 rows checked, 3 with an error (in its row)."
    rows = browser.find_elements(By.CSS_SELECTOR, "#manifest-results tbody tr")
    assert len(rows) == len(expected) == 5
    for tr, want in zip(rows, expected, strict=True):
        cells = [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
        assert cells[0] == str(want["row"]) and cells[1] == want["image"]
        if "error" in want:
            assert tr.get_attribute("data-verdict") == "error" and cells[9], cells
        else:
            assert tr.get_attribute("data-verdict") == want["verdict"] == cells[3]
            assert cells[4] == want["label"] and cells[6] == f"{want['p_expected']:.3f}"
    errors = [tr.find_elements(By.TAG_NAME, "td")[9].text for tr in rows]
    # The same rows fail for the same reason (the wording of the limits belongs to the server and predict.py).
    assert "expected_quantity" in errors[2] and "'x'" in errors[2] and "'x'" in expected[2]["error"]
    assert "9" in errors[3] and "9" in expected[3]["error"]  # above what this 0..5 model can check
    assert errors[4] == "no selected photo is named missing.jpg" and "missing.jpg" in expected[4]["error"]
    browser.save_screenshot(str(screenshots / "manifest.png"))


def test_page_refuses_a_manifest_without_its_columns(browser, server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    bad = tmp_path / "bad.csv"
    bad.write_text("photo,qty\na.jpg,1\n")
    browser.get(server + "/")
    browser.find_element(By.ID, "manifest-csv").send_keys(str(bad))
    browser.find_element(By.ID, "manifest-run").click()
    status = browser.find_element(By.ID, "manifest-status")
    WebDriverWait(browser, 30).until(lambda d: status.get_attribute("data-state") == "error")
    assert status.text.startswith("bad.csv: the manifest needs a header with columns image, expected_quantity "
                                  "(missing: image, expected_quantity)")
    assert not browser.find_element(By.ID, "manifest-results").is_displayed()


def test_page_shows_an_all_count_answer_as_the_server_gives_it(browser, photo, tmp_path, screenshots, synthetic_dir):
    """A model that counts every bin: the card shows the labels 0..K and ">K", the interval and P(count > 5)
    the server sent; a record above K is checked against the tail, and the card says so; the manifest
    table carries the same checked-against class and interval as predict.py --manifest."""
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from src.inference.artifact import export_artifact
    from src.serving.app import create_app, serve_in_background
    from src.serving.predict import interval_text, predict_manifest
    from tests.helpers import IMAGE_SIZE
    from tests.test_all_count_parity import K, all_count_net

    model_dir = export_artifact(all_count_net(sorted(synthetic_dir.glob("train/*/*.jpg"))[:40]), IMAGE_SIZE, "median", tmp_path / "model", tarball=False,
                                answers={"match_threshold": 0.9, "mismatch_threshold": 0.001})
    predictor = CountPredictor.from_model_dir(model_dir)
    with Image.open(photo) as im:
        [want] = predictor.predict([im.convert("RGB")], expected=[K + 4])
    assert want["checked_against"] == f">{K}"
    with serve_in_background(create_app(predictor, check=False)) as url:
        (card,) = _upload(browser, url, photo)
        labels = [s.text for s in card.find_elements(By.CSS_SELECTOR, ".bars > span")][::2]
        assert labels == [*map(str, range(K + 1)), f">{K}"]
        assert card.find_element(By.CSS_SELECTOR, ".count").text.split()[0] == want["label"]
        lo, hi = want["interval"]
        span = f"{lo} or more items" if hi is None else (f"{lo} to {hi} items" if lo != hi else f"{lo} item" + "s" * (lo != 1))
        assert card.find_element(By.CSS_SELECTOR, ".interval").text == f"80 % interval: {span}"
        assert card.find_element(By.CSS_SELECTOR, ".more-than-5").text == f"p(more than 5) = {100 * want['p_more_than_5']:.1f} %"

        card.find_element(By.CSS_SELECTOR, ".expected input").send_keys(str(K + 4), Keys.TAB)
        WebDriverWait(browser, 30).until(lambda d: card.find_elements(By.CSS_SELECTOR, ".explain li.verdict"))
        tail_p = f"p(more than {K}) = {100 * want['p_expected']:.1f} %"
        assert tail_p in card.find_element(By.CSS_SELECTOR, ".flags").text
        verdict_line = card.find_element(By.CSS_SELECTOR, ".explain li.verdict").text
        assert tail_p in verdict_line and f"the record says {K + 4}; this model counts up to {K}" in verdict_line
        assert card.find_element(By.CSS_SELECTOR, ".badge.verdict").get_attribute("class").split()[-1] == want["verdict"]
        browser.save_screenshot(str(screenshots / "page_all_counts.png"))

        manifest = tmp_path / "bins.csv"
        manifest.write_text(f"image,expected_quantity\nbin.jpg,{K + 4}\nbin.jpg,3\n")
        shutil.copy(photo, tmp_path / "bin.jpg")
        expected = predict_manifest(predictor, manifest)
        browser.find_element(By.ID, "manifest-csv").send_keys(str(manifest))
        browser.find_element(By.ID, "manifest-photos").send_keys(str(photo))
        browser.find_element(By.ID, "manifest-run").click()
        status = browser.find_element(By.ID, "manifest-status")
        WebDriverWait(browser, 60).until(lambda d: status.get_attribute("data-state") == "done")
        rows = browser.find_elements(By.CSS_SELECTOR, "#manifest-results tbody tr")
        for tr, row in zip(rows, expected, strict=True):
            cells = [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            assert cells[3:9] == [row["verdict"], row["label"], f"{100 * row['confidence']:.1f} %",
                                  f"{row['p_expected']:.3f}", row["checked_against"], interval_text(row["interval"])]
        assert [r["checked_against"] for r in expected] == [f">{K}", "3"]


def test_page_shows_a_file_named_like_html_as_text(browser, server, photo, tmp_path):
    from selenium.webdriver.common.by import By

    evil = Path(shutil.copy(photo, tmp_path / HTML_NAME))
    (card,) = _upload(browser, server, evil)
    assert card.find_element(By.CSS_SELECTOR, ".name").text == HTML_NAME
    assert card.get_attribute("data-state") == "done"
    assert not browser.find_elements(By.CSS_SELECTOR, 'img[src="x"]')
    assert _no_alert(browser)


class ContractPredictor(CountPredictor):
    """The tiny model, answering with every field of the shared response contract (overflow, review,
    verdict), as a model with the overflow class and a review threshold does, whatever the photo."""

    def results(self, probs, ids=None, expected=None, counts=None, intervals=None):
        return [{"count": None, "label": ">5", "overflow": True, "confidence": 0.7,
                 "probabilities": [0.01, 0.02, 0.03, 0.04, 0.1, 0.1, 0.7], "review": True,
                 "expected_quantity": 4, "p_expected": 0.1, "verdict": "mismatch"} for _ in range(len(probs))]


@pytest.fixture(scope="module")
def contract_predictor(tiny_model_dir) -> ContractPredictor:
    return ContractPredictor.from_model_dir(tiny_model_dir)


def test_page_and_its_files_are_served_and_need_no_network(contract_predictor):
    """Runs without a browser too: the page, its script and style come from the app itself."""
    import re

    from fastapi.testclient import TestClient

    from src.serving.app import create_app

    client = TestClient(create_app(contract_predictor, check=False))
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sorted(assets) == ["static/app.js", "static/style.css"]
    for asset in assets:
        body = client.get("/" + asset)
        assert body.status_code == 200 and body.text
        assert "http" not in body.text and "innerHTML" not in body.text


def test_the_endpoint_artifact_does_not_carry_the_page(tiny_model_dir):
    """The page is served by serve.py only; the SageMaker container's code/ stays the inference core."""
    code = tiny_model_dir / "code"
    assert (code / "src" / "serving" / "handler.py").is_file()
    assert not (code / "src" / "serving" / "app.py").exists() and not list(code.rglob("static"))


def test_page_renders_overflow_review_and_verdict(browser, photo, contract_predictor):
    """The low-confidence flag and the verdict have different words, each explained in one line."""
    from selenium.webdriver.common.by import By

    from src.serving.app import create_app, serve_in_background

    with serve_in_background(create_app(contract_predictor, check=False)) as url:
        (card,) = _upload(browser, url, photo)
        assert card.find_element(By.CSS_SELECTOR, ".count").text == ">5 more than the model counts"
        assert card.find_element(By.CSS_SELECTOR, ".badge.flag").text == "low confidence"
        assert card.find_element(By.CSS_SELECTOR, ".badge.verdict.mismatch").text == "record does not match"
        flags = card.find_element(By.CSS_SELECTOR, ".flags").text
        assert "p(4) = 10.0 %" in flags and "review" not in flags  # one card once read "review review p(3)=..."
        flag_line, verdict_line = (li.text for li in card.find_elements(By.CSS_SELECTOR, ".explain li"))
        assert flag_line == ("low confidence: the model gives its count 70.0 %, below this model's review threshold: "
                             "a person should count this bin.")
        assert verdict_line == "record does not match: p(4) = 10.0 %, low enough to call the record wrong."
        legend = browser.find_element(By.ID, "legend").text
        assert "low confidence" in legend and "record matches" in legend and "check by hand" in legend
        labels = [s.text for s in card.find_elements(By.CSS_SELECTOR, ".bars > span")][::2]
        assert labels == ["0", "1", "2", "3", "4", "5", ">5"]
        bars = card.find_elements(By.CSS_SELECTOR, ".bar")
        assert [i for i, b in enumerate(bars) if "chosen" in b.get_attribute("class")] == [6]


class OneItemPredictor(CountPredictor):
    """Always one item, sure of it; the record says so too."""

    def results(self, probs, ids=None, expected=None, counts=None, intervals=None):
        return [{"count": 1, "label": "1", "confidence": 0.9, "probabilities": [0.02, 0.9, 0.02, 0.02, 0.02, 0.02],
                 "review": False, "expected_quantity": 1, "p_expected": 0.9, "verdict": "match"} for _ in range(len(probs))]


def test_one_item_is_singular_and_a_match_is_explained(browser, photo, tiny_model_dir):
    from selenium.webdriver.common.by import By

    from src.serving.app import create_app, serve_in_background

    with serve_in_background(create_app(OneItemPredictor.from_model_dir(tiny_model_dir), check=False)) as url:
        (card,) = _upload(browser, url, photo)
        assert card.find_element(By.CSS_SELECTOR, ".count").text == "1 item"
        assert not card.find_elements(By.CSS_SELECTOR, ".badge.flag")
        assert card.find_element(By.CSS_SELECTOR, ".badge.verdict.match").text == "record matches"
        assert card.find_element(By.CSS_SELECTOR, ".explain li").text == (
            "record matches: p(1) = 90.0 %, high enough to confirm the record.")


def test_dropping_a_photo_on_the_page_counts_it(browser, server, photo):
    import base64

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/")
    # What a drag from the file manager delivers: a drop event whose DataTransfer holds the file.
    browser.execute_script("""
        const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));
        const data = new DataTransfer();
        data.items.add(new File([bytes], "dropped.jpg", {type: "image/jpeg"}));
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true}));
    """, base64.b64encode(photo.read_bytes()).decode())
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".card[data-state]"))
    (card,) = browser.find_elements(By.CSS_SELECTOR, ".card")
    answer = httpx.post(f"{server}/invocations", content=photo.read_bytes(),
                        headers={"Content-Type": "image/jpeg"}).json()["predictions"][0]
    assert card.get_attribute("data-state") == "done"
    assert card.find_element(By.CSS_SELECTOR, ".name").text == "dropped.jpg"
    assert card.find_element(By.CSS_SELECTOR, ".count").text.split()[0] == str(answer["count"])


def test_page_shows_the_servers_413_and_400(browser, photo, tmp_path, contract_predictor):
    from selenium.webdriver.common.by import By

    from src.serving.app import create_app, serve_in_background

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(photo.read_bytes()[:200])  # a JPEG header, then nothing
    limit = photo.stat().st_size - 1
    with serve_in_background(create_app(contract_predictor, check=False, max_body_bytes=limit)) as url:
        cards = _upload(browser, url, photo, broken)
        for card, path, status in zip(cards, (photo, broken), (413, 400), strict=True):
            answer = httpx.post(f"{url}/invocations", content=path.read_bytes(), headers={"Content-Type": "image/jpeg"})
            assert answer.status_code == status
            assert card.find_element(By.CSS_SELECTOR, ".error").text == f"{status}: {answer.json()['error']}"


def test_report_opens_from_disk_with_metrics_and_gallery(browser, html_name_evaluation, screenshots):
    from selenium.webdriver.common.by import By

    out = html_name_evaluation
    metrics = json.loads((out / "metrics.json").read_text())
    with open(out / "predictions.csv", newline="") as f:
        wrong = sum(r["true_count"] != r["pred_count"] for r in csv.DictReader(f))

    browser.get((out / "report.html").as_uri())
    assert browser.find_element(By.ID, "headline-acc").text == f"{100 * metrics['acc']:.1f} %"
    assert browser.find_element(By.ID, "headline-rmse").text == f"{metrics['rmse']:.3f}"
    thumbnails = browser.find_elements(By.CSS_SELECTOR, "#gallery img")
    assert 0 < len(thumbnails) == min(wrong, 24)
    assert all(img.get_property("naturalWidth") > 0 for img in thumbnails)
    names = [n.text for n in browser.find_elements(By.CSS_SELECTOR, "#gallery .name")]
    assert len(names) == len(thumbnails)
    cm_cells = browser.find_elements(By.CSS_SELECTOR, "#confusion td")
    assert [int(c.text) for c in cm_cells] == [v for row in metrics["confusion_matrix"] for v in row]
    assert not browser.find_elements(By.CSS_SELECTOR, 'img[src="x"]') and _no_alert(browser)
    chrome = browser.execute_script("return window.outerHeight - window.innerHeight")
    browser.set_window_size(1200, min(browser.execute_script("return document.documentElement.scrollHeight") + chrome, 6000))
    browser.save_screenshot(str(screenshots / "report.png"))
    assert (screenshots / "report.png").stat().st_size > 0
