"""RecentPages (keel.core.cache.recent) holds at most its byte budget, whatever the owners and pages:
the least recently stored owners go first, and its accounting follows replacements and forgets."""

from __future__ import annotations

from keel.core.cache.recent import RecentPages

KIB = b"x" * 1024


def test_the_byte_budget_evicts_the_least_recently_stored_owners() -> None:
    pages = RecentPages("test-budget", ttl_s=60.0, max_bytes=64 * 1024)
    for n in range(1000):
        pages.put(f"owner-{n}", "p1", KIB, pages.version(f"owner-{n}"))
        pages.put(f"owner-{n}", "p2", KIB, pages.version(f"owner-{n}"))

    assert pages.size_bytes == 64 * 1024
    assert pages.get("owner-999", "p1") == KIB and pages.get("owner-968", "p2") == KIB
    assert pages.get("owner-967", "p1") is None  # 32 owners x 2 KiB fit, the rest were evicted
    print(f"\n[recent pages] 1000 owners x 2 KiB into 64 KiB: {pages.size_bytes} bytes held")


def test_replacing_and_forgetting_keep_the_count_exact() -> None:
    pages = RecentPages("test-accounting", ttl_s=60.0, max_pages_per_owner=2)
    pages.put("a", "p1", KIB, pages.version("a"))
    pages.put("a", "p1", KIB * 2, pages.version("a"))  # the same page again: replaced, not added
    assert pages.size_bytes == 2048
    pages.put("a", "p2", KIB, pages.version("a"))
    pages.put("a", "p3", KIB, pages.version("a"))  # a third page: the owner's pages start over
    assert pages.size_bytes == 1024 and pages.get("a", "p1") is None
    pages.put("b", "p1", KIB, pages.version("b"))
    pages.forget("a")
    assert pages.size_bytes == 1024 and pages.get("b", "p1") == KIB


def test_a_page_larger_than_the_budget_is_not_kept() -> None:
    pages = RecentPages("test-large", ttl_s=60.0, max_bytes=1000)
    pages.put("a", "p1", KIB, pages.version("a"))
    assert pages.get("a", "p1") is None and pages.size_bytes == 0
