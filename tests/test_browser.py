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

    def results(self, probs, ids=None, expected=None):
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
    from selenium.webdriver.common.by import By

    from src.serving.app import create_app, serve_in_background

    with serve_in_background(create_app(contract_predictor, check=False)) as url:
        (card,) = _upload(browser, url, photo)
        assert card.find_element(By.CSS_SELECTOR, ".count").text == ">5 more than the model counts"
        assert card.find_element(By.CSS_SELECTOR, ".badge.review").text == "review"
        assert card.find_element(By.CSS_SELECTOR, ".badge.mismatch").text == "mismatch"
        assert "p(4) = 10.0 %" in card.find_element(By.CSS_SELECTOR, ".flags").text
        labels = [s.text for s in card.find_elements(By.CSS_SELECTOR, ".bars > span")][::2]
        assert labels == ["0", "1", "2", "3", "4", "5", ">5"]
        bars = card.find_elements(By.CSS_SELECTOR, ".bar")
        assert [i for i, b in enumerate(bars) if "chosen" in b.get_attribute("class")] == [6]


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
