"""`mmfuse report` of a real (tiny) compare run, opened in a real headless Chromium (Debian's chromium +
chromium-driver; `make test` installs them): no console errors, one leaderboard row per method, clicking a
header re-sorts the rows, and a screenshot is written."""

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

CHROMIUM, DRIVER = shutil.which("chromium") or "/usr/bin/chromium", "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(not (Path(CHROMIUM).is_file() and Path(DRIVER).is_file()),
                                reason="needs Debian's chromium and chromium-driver (`make browser` installs them: "
                                       "apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from mmfuse.compare import run_compare
    from mmfuse.config import parse_config
    from mmfuse.datasets import from_arrays
    from mmfuse.report import write_report

    rng = np.random.default_rng(0)
    n = 60
    y = rng.integers(0, 2, n)
    data = from_arrays({"a": rng.normal(size=(n, 3)).astype(np.float32) + y[:, None],
                        "b": rng.normal(size=(n, 4)).astype(np.float32) - y[:, None]}, y, seed=0)
    cfg = parse_config({
        "model": {"encoders": {"a": {"name": "mlp", "options": {"hidden": [4], "output_dim": 4}},
                               "b": {"name": "mlp", "options": {"hidden": [4], "output_dim": 4}}}},
        "training": {"max_epochs": 1, "progress": False},
        "compare": {"fusions": ["concat", "sum"], "late": [], "unimodal": False, "seeds": [0], "tsne": False},  # t-SNE: not needed here
    })
    out = tmp_path_factory.mktemp("cmp")
    run_compare(cfg, out, progress=False, datasets=data)
    return out, write_report(out)


@pytest.fixture(scope="module")
def driver():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the dev extra: pip install selenium")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        opts.add_argument(a)
    opts.binary_location = CHROMIUM
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(DRIVER), options=opts)  # an explicit driver: Selenium Manager downloads nothing
    yield d
    d.quit()


def test_report_in_headless_chromium(run, driver):
    from selenium.webdriver.common.by import By

    out, page = run
    with open(out / "leaderboard.csv", newline="") as f:
        board = list(csv.DictReader(f))
    driver.get(page.resolve().as_uri())
    assert driver.execute_script("return document.readyState") == "complete"
    logs = driver.get_log("browser")
    assert not [e for e in logs if e["level"] == "SEVERE"], logs  # no JS exception, no failed load

    def methods():
        return [r.find_elements(By.TAG_NAME, "td")[0].text
                for r in driver.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr")]

    assert methods() == [r["method"] for r in board]  # one row per method, in the leaderboard's order
    heads = driver.find_elements(By.CSS_SELECTOR, "#leaderboard thead th")
    names = [h.text.strip() for h in heads]
    # params: a numeric sort (514 before 1067, where a text sort would put "1067" first)
    heads[names.index("params")].click()
    by_params = [r["method"] for r in sorted(board, key=lambda r: float(r["params"]))]
    assert methods() == by_params
    heads[names.index("params")].click()  # a second click reverses
    assert methods() == by_params[::-1]
    heads[names.index("method")].click()
    assert methods() == sorted(r["method"] for r in board)
    assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]

    shot = out / "report.png"
    h = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(int(h) + 40, 8000))
    assert driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot: {shot}")


def test_sorting_is_numeric_aware_and_puts_empty_cells_last(driver, tmp_path):
    from selenium.webdriver.common.by import By

    from mmfuse.report import write_report

    (tmp_path / "leaderboard.csv").write_text("method,params,accuracy_mean,accuracy_std,note\n"
                                              "m9,9,0.5,0.1,b\nm100,100,,,a\nm10,10,0.25,0.05,c\n")
    driver.get(write_report(tmp_path).resolve().as_uri())
    heads = {h.text.strip(): h for h in driver.find_elements(By.CSS_SELECTOR, "#leaderboard thead th")}

    def methods():
        return [r.find_elements(By.TAG_NAME, "td")[0].text
                for r in driver.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr")]

    heads["params"].click()
    assert methods() == ["m9", "m10", "m100"]  # a text sort would give 10, 100, 9
    heads["accuracy"].click()  # sorted on the mean of "mean ± std"; the empty cell last both ways
    assert methods() == ["m10", "m9", "m100"]
    heads["accuracy"].click()
    assert methods() == ["m9", "m10", "m100"]
    heads["note"].click()
    assert methods() == ["m100", "m9", "m10"]
    assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
