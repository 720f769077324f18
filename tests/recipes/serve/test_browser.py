"""The translation apps in a real browser (headless Chromium driven by selenium): `lab serve streamlit` and the
folder `lab export space` writes, each on a free loopback port, over the default newari run.

For each: the Newari output of a test sentence equals what the run's own evaluation decoded for it (errors.jsonl),
the scores shown equal summary.json's for that decoding, Newari glyphs are drawn with the shipped Noto Sans
Devanagari (its face is loaded, the computed font-family names it, and a Devanagari string is not as wide as the
fallback's boxes: this machine has no Devanagari font), an empty box gives a message and no error, Ctrl+Enter
translates, the copy button copies the output, and the page fits a 390 px phone screen.

Chromium, chromium-driver: labcli/serving/setup_browser.sh (the Makefile runs it); selenium: the `test` extra.
Set LAB_SCREENSHOT=PATH to keep a screenshot of the served app (docs/results/serve-streamlit-newari.png).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lib" / "serving"))

from labcli import runs
from labcli.serving import process
from labcli.serving.source import DEFAULT_TRANSLATION_RUN

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
try:
    import selenium  # noqa: F401

    HAVE_SELENIUM = True
except ImportError:
    HAVE_SELENIUM = False
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (CHROMIUM and DRIVER and HAVE_SELENIUM),
    reason="chromium/chromedriver (labcli/serving/setup_browser.sh failed or was not run) or selenium (test extra) missing")]

FONT = "Lab Noto Sans Devanagari"
SYSTEM_DEVANAGARI = bool(shutil.which("fc-list") and subprocess.run(["fc-list", ":lang=hi"], capture_output=True, text=True,
                                                                     check=False).stdout.strip())
SAMPLE = "नेपाल"  # no space: U+0020 is outside the shipped subset, so the fallback would draw it


@pytest.fixture(scope="module")
def newari_run(lab_home):
    return runs.prerequisite("finetune", "newari", DEFAULT_TRANSLATION_RUN, "no --run given: serving the default newari run")


def evaluated(run: Path, n: int = 2) -> list[dict]:
    """Test sentences the run's evaluation translated into Devanagari (errors.jsonl: src, hyp): the reference."""
    rows = [json.loads(line) for line in (run / "errors.jsonl").read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if any("\u0900" <= c <= "\u097f" for c in r["hyp"]) and "\n" not in r["src"]]
    assert len(rows) >= n, "the default run translated too few test sentences into Devanagari"
    return rows[:n]


def start_streamlit(cmd: list[str], cwd: Path, env: dict, port: int, name: str) -> process.Server:
    proc = process.start(cmd, log=cwd / f"{name}.log", env=env, cwd=cwd)
    server = process.Server(name=name, backend="streamlit", pid=proc.pid, pgid=proc.pid,
                            endpoints={"http": f"http://127.0.0.1:{port}"}, run_dir=str(cwd), log=str(cwd / f"{name}.log"))
    process.wait_ready(proc, f"http://127.0.0.1:{port}/_stcore/health", cwd / f"{name}.log", 120, name, "see the log")
    return server


@pytest.fixture(scope="module")
def apps(newari_run, lab_home, tmp_path_factory):
    """{"served": url of `lab serve streamlit`, "space": url of the exported Space run by streamlit}; stopped at the end."""
    cwd = tmp_path_factory.mktemp("browser")
    env = {**os.environ, "LAB_HOME": str(lab_home), "LAB_THREADS": "1"}
    env.pop("LAB_RUNS", None)
    served_port, space_port = process.free_port_block(1), process.free_port_block(1, start=40000)
    lab = subprocess.run([sys.executable, "-m", "labcli", "serve", "streamlit", "--run", str(newari_run), "--port",
                          str(served_port), "--detach"], capture_output=True, text=True, env=env, cwd=cwd, timeout=600, check=False)
    assert lab.returncode == 0, lab.stdout + lab.stderr
    served = json.loads((lab_home / "serving" / "servers" / f"streamlit-{served_port}.json").read_text())
    export = subprocess.run([sys.executable, "-m", "labcli", "export", "space", "--run", str(newari_run), "space"],
                            capture_output=True, text=True, env=env, cwd=cwd, timeout=600, check=False)
    assert export.returncode == 0, export.stdout + export.stderr
    space = start_streamlit([sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "127.0.0.1",
                             "--server.port", str(space_port), "--server.headless", "true",
                             "--browser.gatherUsageStats", "false"], cwd / "space", env, space_port, "space")
    try:
        yield {"served": f"http://127.0.0.1:{served_port}", "space": f"http://127.0.0.1:{space_port}"}
    finally:
        for pgid in (served["pgid"], space.pgid):
            process.stop_group(pgid)
        assert not process.group_pids(served["pgid"]) and not process.group_pids(space.pgid)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # No network beyond loopback here: without the background-networking flags Chromium keeps trying
    # (and failing) to reach Google's services at start.
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,1000",
                "--lang=en-US", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


def wait_for(fn, timeout: float = 120.0, what: str = "the page"):
    from selenium.common.exceptions import WebDriverException

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = fn()
        except WebDriverException:  # an element re-rendered under us: ask again
            value = None
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def output_text(driver) -> str | None:
    blocks = driver.find_elements("css selector", "[data-testid='stCode'] code")
    return blocks[0].get_attribute("textContent") if blocks else None


def translate(driver, text: str, keyboard: bool = False) -> str:
    """Type `text` into the English box, then click Translate (or press Ctrl+Enter); the Newari output shown."""
    from selenium.webdriver.common.keys import Keys

    before = output_text(driver)
    box = driver.find_element("css selector", "textarea")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(text)
    if keyboard:
        box.send_keys(Keys.CONTROL, Keys.ENTER)
    else:
        driver.find_element("xpath", "//button[.//p[text()='Translate']]").click()
    return wait_for(lambda: (output_text(driver) if output_text(driver) != before and not running(driver) else None),
                    what=f"the translation of {text!r}")


def running(driver) -> bool:
    return bool(driver.find_elements("css selector", "[data-testid='stStatusWidget'], [data-testid='stSpinner']"))


FONT_PROBE = """
const done = arguments[arguments.length - 1];
document.fonts.ready.then(() => {
  const code = document.querySelector("[data-testid='stCode'] code"), title = document.querySelector("h1");
  const canvas = document.createElement("canvas").getContext("2d");
  const width = (family) => { canvas.font = "32px " + family; return canvas.measureText(arguments[0]).width; };
  done({code: getComputedStyle(code).fontFamily, title: getComputedStyle(title).fontFamily,
        loaded: [...document.fonts].filter(f => f.family.includes(arguments[1])).map(f => f.status),
        check: document.fonts.check("32px '" + arguments[1] + "'", arguments[0]),
        shipped: [width("'" + arguments[1] + "', monospace"), width("'" + arguments[1] + "', serif")],
        fallback: [width("monospace"), width("serif")]});
});
"""


@pytest.mark.parametrize("app", ["served", "space"])
def test_translation_app_in_a_browser(app, apps, browser, newari_run, tmp_path):
    driver = browser
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    driver.get(apps[app])
    wait_for(lambda: driver.find_elements("css selector", "textarea"), what="the English box")
    summary = json.loads((newari_run / "summary.json").read_text())
    overall = summary["scores"]["greedy"]["by_domain"]["all"]  # the default run is scored greedily: the app decodes so
    shown = [e.text for e in driver.find_elements("css selector", "[data-testid='stMetricValue']")]
    assert shown == [str(overall[k]) for k in ("bleu", "chrf++", "ter")], shown

    first, second = evaluated(newari_run)
    assert translate(driver, first["src"]) == first["hyp"]  # what the run's own evaluation decoded for this sentence
    assert not driver.find_elements("css selector", "[data-testid='stException']")

    probe = driver.execute_async_script(FONT_PROBE, SAMPLE, FONT)
    assert probe["code"].startswith(f'"{FONT}"') and probe["title"].startswith(f'"{FONT}"'), probe
    assert probe["loaded"] == ["loaded"] and probe["check"], probe
    # Drawn with the shipped font, the fallback behind it makes no difference to the width. Without a Devanagari
    # system font (the development machine has none) each fallback alone draws its own missing-glyph boxes.
    assert probe["shipped"][0] == probe["shipped"][1], probe
    assert SYSTEM_DEVANAGARI or probe["fallback"][0] != probe["fallback"][1], probe
    shot = tmp_path / f"{app}.png"
    driver.save_screenshot(str(shot))
    if app == "served" and os.environ.get("LAB_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["LAB_SCREENSHOT"])

    driver.execute_cdp_cmd("Browser.grantPermissions", {"origin": apps[app], "permissions": ["clipboardReadWrite",
                                                                                               "clipboardSanitizedWrite"]})
    code = driver.find_element("css selector", "[data-testid='stCode']")
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).move_to_element(code).perform()
    driver.find_element("css selector", "[data-testid='stCode'] button").click()
    copied = driver.execute_async_script("navigator.clipboard.readText().then(arguments[0], e => arguments[0]('error: ' + e))")
    assert copied == first["hyp"], copied

    box = driver.find_element("css selector", "textarea")
    from selenium.webdriver.common.keys import Keys

    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    driver.find_element("xpath", "//button[.//p[text()='Translate']]").click()
    alert = wait_for(lambda: driver.find_elements("css selector", "[data-testid='stAlert']"), what="the empty-input message")
    assert "Type an English sentence first." in alert[0].text
    assert not driver.find_elements("css selector", "[data-testid='stException']") and output_text(driver) is None
    # Ctrl+Enter submits (after the empty input there is no output, so a tiny model that says the same
    # thing for every sentence still shows a change)
    assert translate(driver, second["src"], keyboard=True) == second["hyp"]

    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 390, "height": 844, "deviceScaleFactor": 2,
                                                                  "mobile": True})
    driver.get(apps[app])
    wait_for(lambda: driver.find_elements("css selector", "textarea"), what="the English box at 390 px")
    assert translate(driver, first["src"]) == first["hyp"]
    layout = driver.execute_script("""
        const r = (s) => document.querySelector(s).getBoundingClientRect();
        return {inner: window.innerWidth, scroll: document.documentElement.scrollWidth,
                box: r("textarea").right, button: r("[data-testid='stFormSubmitButton'] button").right,
                code: r("[data-testid='stCode']").right};""")
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    assert layout["inner"] == 390 and layout["scroll"] <= 390, layout
    assert max(layout["box"], layout["button"], layout["code"]) <= 390, layout
