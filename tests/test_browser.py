"""The dashboard in headless Chromium: sign in, start a backup, watch a real worker finish it live."""

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait


from backups.models import Backup
from backups.services.targets import add_target

pytestmark = pytest.mark.browser

SCREENSHOT = "/tmp/covet-dashboard.png"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync",
                  "--window-size=1440,900"]


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    # Both paths given, so Selenium Manager never looks for (or downloads) a browser or driver.
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_a_backup_started_from_the_dashboard_completes_live(
        browser, live_server, admin_user, sample_sqlite, default_key, backup_dir, rq_worker):
    add_target("app", "sqlite", str(sample_sqlite))

    browser.get(f"{live_server.url}/")
    assert "/accounts/login/" in browser.current_url
    browser.find_element(By.ID, "id_username").send_keys("admin")
    browser.find_element(By.ID, "id_password").send_keys("admin-test-password")
    browser.find_element(By.CSS_SELECTOR, "form.stacked button[type=submit]").click()
    WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.ID, "start-backup"))

    Select(browser.find_element(By.ID, "id_target")).select_by_value("app")
    Select(browser.find_element(By.ID, "id_compression")).select_by_value("zstd")
    browser.find_element(By.ID, "start-backup").click()
    WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".message.success"))
    backup = Backup.objects.get()
    assert f"Backup {backup.id} of app queued" in browser.find_element(By.CSS_SELECTOR, ".messages").text

    row = f"#backup-{backup.id}"
    status = browser.find_element(By.CSS_SELECTOR, f"{row} [data-field=status]")
    assert status.text == "pending"
    # Only now start the worker, so the page shows the change by polling; the marker proves no reload.
    browser.execute_script("window.covetTestMarker = 'still the same page';")
    rq_worker()
    WebDriverWait(browser, 45, poll_frequency=0.2).until(
        lambda b: b.find_element(By.CSS_SELECTOR, f"{row} [data-field=status]").text in ("completed", "failed"))

    assert browser.find_element(By.CSS_SELECTOR, f"{row} [data-field=status]").text == "completed", \
        Backup.objects.get().error
    assert browser.execute_script("return window.covetTestMarker;") == "still the same page"
    assert browser.find_element(By.CSS_SELECTOR, f"{row} [data-field=stored_bytes]").text.endswith("KB")
    assert browser.find_element(By.CSS_SELECTOR, f"{row} [data-field=compression_ratio]").text.endswith("×")
    assert not browser.find_element(By.CSS_SELECTOR, f"{row} [data-role=progress]").is_displayed()
    browser.save_screenshot(SCREENSHOT)
