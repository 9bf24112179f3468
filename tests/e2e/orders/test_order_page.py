"""The lookup page in a real browser: headless Chromium (Debian's, driven by selenium through
/usr/bin/chromedriver) against the order service served as `keel serve` serves it on 127.0.0.1, fed
through Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Iterator

import httpx
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from keel.core.runtime import build_app
from keel.orders.fake import fake_order
from keel.orders.spec import SPEC
from tests.integration.orders.conftest import send
from tests.support.eventually import eventually
from tests.support.serving import served

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
WAIT_S = 15


@contextlib.contextmanager
def chromium(*extra_flags: str) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    with tempfile.TemporaryDirectory(prefix="keel-chromium-") as profile:
        for flag in (*CHROMIUM_FLAGS, *extra_flags, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def look_up(driver: WebDriver, order_uid: str, *, nocache: bool = False) -> None:
    box = driver.find_element(By.ID, "order-id")
    box.clear()
    box.send_keys(order_uid)
    if driver.find_element(By.ID, "nocache").is_selected() != nocache:
        driver.find_element(By.ID, "nocache").click()
    driver.find_element(By.ID, "find").click()


def field(driver: WebDriver, section: str, name: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, f"#{section} dd[data-field='{name}']").text)


def browse(base_url: str, order: dict) -> dict:
    """What a user sees: the order found through the page, then an unknown one, then from the db."""
    seen: dict = {}
    with chromium() as driver:
        wait = WebDriverWait(driver, WAIT_S)
        driver.get(base_url + "/")
        seen["title"] = driver.title
        look_up(driver, order["order_uid"])
        wait.until(ec.visibility_of_element_located((By.ID, "order")))
        wait.until(ec.text_to_be_present_in_element((By.ID, "status"), order["order_uid"]))
        seen["order_uid"] = field(driver, "order-header", "order_uid")
        seen["track_number"] = field(driver, "order-header", "track_number")
        seen["name"] = field(driver, "order-delivery", "name")
        seen["email"] = field(driver, "order-delivery", "email")
        seen["amount"] = field(driver, "order-payment", "amount")
        seen["items"] = [
            [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
            for row in driver.find_elements(By.CSS_SELECTOR, "#items tbody tr")
        ]
        seen["source"] = driver.find_element(By.ID, "meta-source").text
        seen["duration"] = driver.find_element(By.ID, "meta-duration").text

        look_up(driver, "no-such-order")
        wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "not found"))
        status = driver.find_element(By.ID, "status")
        seen["missing"] = (status.text, "error" in (status.get_attribute("class") or ""))
        seen["order_hidden"] = not driver.find_element(By.ID, "order").is_displayed()

        look_up(driver, order["order_uid"], nocache=True)
        wait.until(ec.text_to_be_present_in_element((By.ID, "meta-source"), "db"))
        seen["source_nocache"] = driver.find_element(By.ID, "meta-source").text
    return seen


async def test_the_page_finds_an_order_and_shows_it_readably(order_settings, producer, rng):
    settings = order_settings()
    order = fake_order(rng, items=3)
    with served(build_app([SPEC], settings), settings) as base_url:
        await send(producer, settings.kafka_topic, [order])
        async with httpx.AsyncClient(base_url=base_url) as client:
            await eventually(
                lambda: client.get(f"/order/{order['order_uid']}"),
                until=lambda r: r.status_code == 200,
                timeout_s=30,
                what="order consumed",
            )
            static = await client.get("/static/app.js")
            missing_static = await client.get("/static/../spec.py")
        seen = await asyncio.to_thread(browse, base_url, order)

    assert seen["title"] == "Order lookup"
    assert seen["order_uid"] == order["order_uid"]
    assert seen["track_number"] == order["track_number"]
    assert seen["name"] == order["delivery"]["name"] and seen["email"] == order["delivery"]["email"]
    assert seen["amount"] == f"{order['payment']['amount']} {order['payment']['currency']}"
    assert [row[1] for row in seen["items"]] == [item["name"] for item in order["items"]]
    assert [row[6] for row in seen["items"]] == [str(item["total_price"]) for item in order["items"]]
    assert seen["source"] == "cache" and float(seen["duration"]) >= 0
    assert seen["missing"] == ("Order no-such-order was not found.", True)
    assert seen["order_hidden"]
    assert seen["source_nocache"] == "db"
    assert static.status_code == 200 and static.headers["content-type"].startswith("text/javascript")
    assert missing_static.status_code == 404
