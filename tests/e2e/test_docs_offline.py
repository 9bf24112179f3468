"""`/docs` and `/redoc` with no network: headless Chromium (the order page's harness) whose resolver
knows no host but loopback loads the platform's docs, and every asset comes from the app itself."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from keel import services
from keel.core.app import create_app
from keel.core.settings import Settings
from tests.e2e.orders.test_order_page import WAIT_S, chromium
from tests.support.serving import served

# Every name resolves to nothing (a CDN host included): only the loopback address is reachable.
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"


@contextlib.contextmanager
def platform_docs() -> Iterator[str]:
    """Every service's routes in one app (no lifespan: the docs need no infrastructure) on 127.0.0.1."""
    routers = [r for spec in services.load_all() for r in spec.routers()]
    app = create_app(title="Keel platform", settings=Settings(), routers=routers)
    with served(app) as base:
        yield base


def test_docs_pages_name_only_assets_of_the_app() -> None:
    with platform_docs() as base:
        for page in ("/docs", "/redoc"):
            html = httpx.get(base + page, timeout=10).text
            sources = re.findall(r'(?:src|href|spec-url)="([^"]+)"', html)
            assert sources, page
            assert all(not urlsplit(s).netloc for s in sources), (page, sources)
            for source in sources:
                assert httpx.get(base + source, timeout=10).status_code == 200, source


def test_swagger_ui_renders_the_operations_offline() -> None:
    with platform_docs() as base, chromium(OFFLINE) as driver:
        driver.get(base + "/docs")
        wait = WebDriverWait(driver, WAIT_S)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".opblock .opblock-summary-path")))
        paths = {
            e.get_attribute("data-path")
            for e in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
        }
        assert {"/v1/tickets", "/order/{order_uid}", "/api/videos"} <= paths, sorted(p or "" for p in paths)
        driver.get(base + "/redoc")
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "[data-section-id]")))
