"""The ``aoai`` connection form in a real browser: Airflow 3's UI (api-server, SQLite, simple auth manager).

Headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by selenium adds a connection
through the form, tests it against the emulator, saves, reopens and re-saves it, and checks that every extra
round-trips and that the page never shows the secret. Skipped, with the reason, where Chromium, its driver
or selenium (the ``[browser]`` extra) is missing, and on Airflow 2.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.conftest import API_KEY

CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", shutil.which("chromedriver") or "/usr/bin/chromedriver")


def _why_not() -> str | None:
    if version("apache-airflow").startswith("2."):
        return "the browser test drives Airflow 3's UI"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install the [browser] extra)"
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        return f"{' and '.join(missing)} not found (Debian: apt-get install chromium chromium-driver)"
    return None


pytestmark = [pytest.mark.browser, pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))]

CONN_ID = "aoai_browser"
# Every extra of the form, each with a value that differs from its default.
EXTRAS = {
    "api_version": "2024-08-01-preview",
    "auth_type": "managed_identity",
    "tenant_id": "00000000-0000-0000-0000-0000000000aa",
    "client_id": "00000000-0000-0000-0000-0000000000bb",
    "scope": "https://cognitiveservices.azure.com/.default",
    "federated_credential_file": "/var/run/secrets/azure/tokens/azure-identity-token",
    "authority_host": "https://login.microsoftonline.us",
    "timeout": 30,
    "max_retries": 2,
    "retry_backoff": 0.25,
    "max_retry_wait": 120,
    "foundry_route": "agents",  # a data plane endpoint ignores it; the form must still keep it
}
SELECTS = ("auth_type", "foundry_route")  # enum extras: the form shows them as select boxes
UI_TIMEOUT = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def airflow_ui(emulator, tmp_path_factory):
    """An Airflow 3 api-server on a fresh SQLite home; tasks it runs reach the emulator's managed identity."""
    home = tmp_path_factory.mktemp("airflow-ui-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        **emulator.managed_identity_env(),
    }
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    port = free_port()
    log = (home / "api-server.log").open("w")
    server = subprocess.Popen(
        [airflow, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (home / "api-server.log").read_text()[-3000:]
            try:
                if requests.get(f"{base}/api/v2/monitor/health", timeout=5).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the api-server did not answer within 180 s"
            time.sleep(0.5)
        yield {"url": base, "env": env, "airflow": airflow}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,2000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(UI_TIMEOUT)
    yield driver
    driver.quit()


def wait_for_text(driver, text: str) -> str:
    """Wait until the page shows ``text`` (a toast, a row) and return the page's visible text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, UI_TIMEOUT).until(lambda d: text in d.find_element(By.TAG_NAME, "body").text)
    return driver.find_element(By.TAG_NAME, "body").text


def fill(field, value) -> None:
    from selenium.webdriver.common.keys import Keys

    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.DELETE)
    field.send_keys(str(value))


def choose(driver, combobox, option: str) -> None:
    """Pick ``option`` in one of the UI's searchable select boxes."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    combobox.click()
    combobox.send_keys(option)

    def shown(d) -> bool:  # the list filters as one types; Enter takes the first match once it is shown
        options = d.find_elements(By.XPATH, "//*[@role='option']")
        return bool(options) and option in options[0].text

    WebDriverWait(driver, UI_TIMEOUT).until(shown)
    combobox.send_keys(Keys.ENTER)


def open_editor(driver, airflow_ui) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{airflow_ui['url']}/connections")
    driver.find_element(By.CSS_SELECTOR, "button[aria-label='Edit Connection']").click()
    driver.find_element(By.NAME, "host")
    driver.find_element(
        By.XPATH, "//button[contains(., 'Extra Fields') and not(contains(., 'JSON'))]"
    ).click()
    driver.find_element(By.NAME, "element_scope")


def form_values(driver) -> dict:
    from selenium.webdriver.common.by import By

    values = {name: driver.find_element(By.NAME, f"element_{name}").get_attribute("value") for name in EXTRAS}
    values["host"] = driver.find_element(By.NAME, "host").get_attribute("value")
    return values


def save(driver, expected_toast: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.XPATH, "//div[@role='dialog']//button[contains(., 'Save')]").click()
    wait_for_text(driver, expected_toast)


def click_test(driver, emulator) -> str:
    from selenium.webdriver.common.by import By

    before = len(emulator.faults.calls("files.list"))
    driver.find_element(By.CSS_SELECTOR, "button[aria-label='Test Connection']").click()
    text = wait_for_text(driver, "Test Connection")
    deadline = time.monotonic() + UI_TIMEOUT
    while "Connected to" not in text and "Failed" not in text and time.monotonic() < deadline:
        time.sleep(0.2)
        text = driver.find_element(By.TAG_NAME, "body").text
    assert "Connected to" in text and "Failed" not in text, text[-800:]
    assert len(emulator.faults.calls("files.list")) > before  # the test listed files on the emulator
    return text


def stored_connection(airflow_ui) -> dict:
    result = subprocess.run(
        [airflow_ui["airflow"], "connections", "get", CONN_ID, "-o", "json"],
        env=airflow_ui["env"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    connection = json.loads(result.stdout[result.stdout.index("[") :])[0]
    assert connection, result.stdout
    return connection


def test_add_test_save_reopen_resave_round_trips_every_extra(airflow_ui, emulator, browser):
    from selenium.webdriver.common.by import By

    driver = browser
    emulator_port = urlsplit(emulator.url).port
    driver.get(f"{airflow_ui['url']}/connections")
    driver.find_element(By.XPATH, "//button[contains(., 'Add Connection')]").click()
    driver.find_element(By.NAME, "connection_id").send_keys(CONN_ID)
    label = driver.find_element(By.XPATH, "//div[@role='dialog']//label[contains(., 'Connection Type')]")
    choose(driver, driver.find_element(By.ID, label.get_attribute("for")), "Azure OpenAI Files")

    fill(driver.find_element(By.NAME, "host"), emulator.url)
    fill(driver.find_element(By.NAME, "port"), emulator_port)  # airflow#73298: Test needs a port
    fill(driver.find_element(By.NAME, "password"), API_KEY)
    driver.find_element(
        By.XPATH, "//button[contains(., 'Extra Fields') and not(contains(., 'JSON'))]"
    ).click()
    for name, value in EXTRAS.items():
        if name in SELECTS:
            box = driver.find_element(By.XPATH, f"//input[@name='element_{name}']/preceding::input[1]")
            choose(driver, box, value)
        else:
            fill(driver.find_element(By.NAME, f"element_{name}"), value)
    for name in SELECTS:
        assert driver.find_element(By.NAME, f"element_{name}").get_attribute("value") == EXTRAS[name]
    save(driver, "successfully created")
    assert API_KEY not in driver.page_source

    # Test: the api-server builds the hook from the stored connection; managed identity gets its token from
    # the emulator, then lists files there.
    click_test(driver, emulator)

    expected_form = {name: str(value) for name, value in EXTRAS.items()} | {"host": emulator.url}
    for round_trip in ("first save", "re-save"):
        open_editor(driver, airflow_ui)
        assert form_values(driver) == expected_form, round_trip
        assert driver.find_element(By.NAME, "port").get_attribute("value") == str(emulator_port)
        assert API_KEY not in driver.page_source, f"the api key is in the page after the {round_trip}"
        save(driver, "successfully")

    stored = stored_connection(airflow_ui)
    assert stored["conn_type"] == "aoai" and stored["host"] == emulator.url
    assert str(stored["port"]) == str(emulator_port)
    assert stored["password"] == API_KEY  # not replaced by the "***" the form showed
    extras = stored.get("extra_dejson") or json.loads(stored.get("extra") or "{}")
    assert {name: str(extras.get(name)) for name in EXTRAS} == {k: str(v) for k, v in EXTRAS.items()}
    click_test(driver, emulator)  # still works after two saves that did not retype the secret
    assert API_KEY not in driver.page_source
