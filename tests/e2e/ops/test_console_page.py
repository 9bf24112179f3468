"""The operator console in a real browser (headless Chromium, as the order page's test): a failed
TTS job's workflow is restarted from the page, and a poison order is fixed in the page's edit box
and replayed until `GET /order/{id}` serves it. One embedded platform (`keel up`'s services and
in-memory bus) on 127.0.0.1 serves both scenarios."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from keel.cityguide.orchestrator.spec import SPEC as ORCHESTRATOR
from keel.cityguide.story.spec import SPEC as STORY
from keel.cityguide.tts.spec import SPEC as TTS
from keel.core.runtime import build_app
from keel.core.settings import Settings
from keel.ops.spec import SPEC as CONSOLE
from keel.orders.fake import fake_order
from keel.orders.spec import SPEC as ORDERS
from tests.e2e.orders.test_order_page import WAIT_S, chromium
from tests.support.eventually import eventually_sync
from tests.support.servers import idempotent_producers
from tests.support.serving import served

FAILING_ROUTE = f"ops-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def platform(pg_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The services both scenarios need and the console, on a free port of 127.0.0.1 (a loopback
    caller of `keel up`: what the console admits), in a thread with its own event loop."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TTS_MODE", "instant")
        env.setenv("TTS_FAIL_STORIES", f"{FAILING_ROUTE}-s1")  # its first attempt fails, a restart passes
        settings = Settings.model_validate(
            {
                "postgres_dsn": pg_dsn,
                "data_dir": tmp_path_factory.mktemp("keel"),
                "kafka_idempotence": idempotent_producers(),
            }
        )
        app = build_app([ORCHESTRATOR, STORY, TTS, ORDERS, CONSOLE], settings, embedded=True)
        with served(app, settings) as base:
            yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with chromium() as driver:
        yield driver


def publish(base_url: str, topic: str, key: str, value: bytes) -> None:
    """Through `keel up`'s dev bus door, as the demo publishes."""
    response = httpx.post(f"{base_url}/_dev/bus/{topic}", params={"key": key}, content=value)
    assert response.status_code == 202, response.text


def click(driver: WebDriver, css: str) -> str:
    """Click the element once it is there; the page re-renders its tables on a timer, so an element
    found just before a refresh is looked up again."""

    def attempt(d: WebDriver) -> str | bool:
        try:
            element = d.find_element(By.CSS_SELECTOR, css)
            text = str(element.text)
            element.click()
            return text
        except StaleElementReferenceException:
            return False

    found: str = WebDriverWait(driver, WAIT_S, ignored_exceptions=(Exception,)).until(attempt)
    return found


def text_becomes(driver: WebDriver, element_id: str, text: str) -> Callable[[Any], bool]:
    return ec.text_to_be_present_in_element((By.ID, element_id), text)


def test_a_failed_tts_job_shows_failed_and_a_restart_from_the_page_completes_the_workflow(platform, browser):
    publish(
        platform, "route.confirmed", FAILING_ROUTE, orjson.dumps({"route_id": FAILING_ROUTE, "mode": "walk"})
    )
    wait = WebDriverWait(browser, WAIT_S)
    browser.get(f"{platform}/ops/")
    row = click(browser, f"#workflows tr[data-route-id='{FAILING_ROUTE}'][data-status='failed']")
    wait.until(text_becomes(browser, "workflow-status", "failed"))
    failed_step = browser.find_element(By.CSS_SELECTOR, "#wf-steps tbody").text

    browser.find_element(By.ID, "restart").click()
    wait.until(text_becomes(browser, "workflow-status", "completed"))
    restarts = browser.find_element(By.CSS_SELECTOR, "#wf-restarts tbody").text

    assert FAILING_ROUTE in row and "failed" in row
    assert "injected failure" in failed_step
    assert "operator@127.0.0.1" in restarts and "restarted from the console" in restarts


def test_a_poison_order_shows_under_its_reason_and_is_served_once_fixed_and_replayed(platform, browser):
    order = fake_order(random.Random(uuid.uuid4().int))
    publish(platform, "orders", order["order_uid"], orjson.dumps({**order, "sm_id": "ninety-nine"}))
    wait = WebDriverWait(browser, WAIT_S)
    browser.get(f"{platform}/ops/")
    topic_row = click(browser, "#dlq-topics tr[data-topic='orders.dlq']")
    record_row = click(browser, "#dlq-records tr[data-reason='PoisonMessage']")
    wait.until(ec.visibility_of_element_located((By.ID, "payload")))
    shown = json.loads(browser.find_element(By.ID, "payload").get_attribute("value") or "{}")

    box = browser.find_element(By.ID, "payload")
    box.clear()
    box.send_keys(json.dumps({**shown, "sm_id": order["sm_id"]}))  # the fix is in the data
    browser.find_element(By.ID, "replay").click()
    wait.until(text_becomes(browser, "replay-result", "replayed 1"))
    served = eventually_sync(
        lambda: httpx.get(f"{platform}/order/{order['order_uid']}"),
        until=lambda r: r.status_code == 200,
        timeout_s=WAIT_S,
        what="the replayed order served",
    )
    audit = browser.find_element(By.CSS_SELECTOR, "#audit tbody").text

    assert "PoisonMessage 1" in topic_row
    assert "PoisonMessage" in record_row and "sm_id" in record_row
    assert shown["sm_id"] == "ninety-nine"
    assert orjson.loads(served.content) == order
    assert "replay" in audit and "orders.dlq" in audit
