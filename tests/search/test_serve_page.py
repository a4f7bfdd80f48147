"""The search page in a real headless browser (Debian's chromium, driven by playwright)
against a real `mcrx serve` process: type a query and see rows; upload a file and see rows.

`make test` installs chromium first (apt-get); this test is skipped, saying why, only
when the browser is not there after that."""

from __future__ import annotations

import os
import shutil

import pytest
from playwright.sync_api import expect, sync_playwright
from search_helpers import MODALITIES

from mcrx.search import Collection

# MCRX_BROWSER: another Chromium-family binary to drive
CHROMIUM = os.environ.get("MCRX_BROWSER") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


NO_BROWSER = (f"no browser at {CHROMIUM}: `make test` installs Debian's chromium with apt-get, "
              "and it could not be installed here")
# decided before any fixture: without a browser, no model or server is built for nothing
pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=NO_BROWSER)


# a loaded 2-core machine can take seconds for one search: wait up to 60 s for each state
expect.set_options(timeout=60_000)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS,
                                              headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.url + "/")
    expect(page.locator("#collection option")).to_have_count(1)
    expect(page.locator("#summary")).to_contain_text(f"{len(MODALITIES) * 200} items")
    yield page
    context.close()
    assert errors == [], errors  # no script error on the page


def result_ids(page) -> list[int]:
    return [int(i) for i in page.locator("#results li.result").evaluate_all(
        "rows => rows.map(r => r.dataset.id)")]


def test_type_a_query_and_see_result_rows(page, demo_collection):
    with Collection(demo_collection) as collection:
        item = next(collection.items("audio"))
        expected = [h.id for h in collection.search(f"#{item.id}", n=20)]
    page.fill("#q", f"#{item.id}")
    page.press("#q", "Enter")
    rows = page.locator("#results li.result")
    expect(rows).to_have_count(20)
    assert result_ids(page) == expected
    expect(rows.first.locator(".id")).to_have_text(f"#{item.id}")
    expect(page.locator("#status")).to_contain_text(f"20 results for #{item.id}")

    # only point clouds: the filter boxes narrow the results, and their previews render
    for modality in MODALITIES:
        if modality != "pointcloud":
            page.uncheck(f"#in input[value={modality}]")
    page.click("#go")
    expect(rows.first).to_have_attribute("data-modality", "pointcloud")
    modalities = rows.evaluate_all("rows => rows.map(r => r.dataset.modality)")
    assert set(modalities) == {"pointcloud"}
    picture = rows.first.locator(".preview img")
    expect(picture).to_have_js_property("complete", True)
    assert picture.evaluate("img => img.naturalWidth") > 100  # a rendered PNG, not a broken one

    # every modality again, 5 of each: one group of rows per modality, audio with a player
    for modality in MODALITIES:
        page.check(f"#in input[value={modality}]")
    page.select_option("#n", "5")
    page.check("#each")  # re-runs the search
    expect(rows.first).to_have_attribute("data-modality", "audio")  # the new results are in
    expect(rows).to_have_count(5 * len(MODALITIES))
    modalities = rows.evaluate_all("rows => rows.map(r => r.dataset.modality)")
    assert modalities == [m for m in sorted(MODALITIES) for _ in range(5)]
    expect(page.locator("#results audio")).to_have_count(5)


def test_upload_a_file_and_see_result_rows(page, demo_files, demo_collection):
    query = sorted((demo_files["queries"] / "pointcloud").rglob("*.npy"))[0]
    with Collection(demo_collection) as collection:
        expected = [h.id for h in collection.search(f"pointcloud:{query}", n=10)]
    page.select_option("#n", "10")
    page.select_option("#file-modality", "pointcloud")
    page.set_input_files("#file", str(query))  # choosing a file starts the search
    expect(page.locator("#results li.result")).to_have_count(10)
    expect(page.locator("#status")).to_contain_text("pointcloud:(uploaded file)")
    expect(page.locator("#drop-text")).to_contain_text(query.name)
    assert result_ids(page) == expected

    # "similar" on a row searches with that item
    second = result_ids(page)[1]
    page.locator("#results li.result").nth(1).locator("button.similar").click()
    expect(page.locator("#q")).to_have_value(f"#{second}")
    expect(page.locator("#results li.result").first).to_have_attribute("data-id", str(second))


def test_a_bad_query_shows_the_error(page):
    page.fill("#q", "a dog barking")  # the toy world's text encoder reads raw vectors only
    page.press("#q", "Enter")
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error")).to_contain_text("raw vectors")
    expect(page.locator("#results li.result")).to_have_count(0)


def test_a_link_with_a_query_runs_it_and_each_search_sets_the_address(page, server,
                                                                       demo_collection):
    with Collection(demo_collection) as collection:
        first, second = [item.id for item in collection.items("image")][:2]
    page.goto(f"{server.url}/?q=%23{first}&n=5")
    rows = page.locator("#results li.result")
    expect(rows).to_have_count(5)
    expect(rows.first).to_have_attribute("data-id", str(first))
    expect(page.locator("#q")).to_have_value(f"#{first}")

    page.fill("#q", f"#{second}")
    page.press("#q", "Enter")
    expect(rows.first).to_have_attribute("data-id", str(second))
    assert f"q=%23{second}" in page.url and "n=5" in page.url
    page.go_back()  # the previous address: its search again
    expect(rows.first).to_have_attribute("data-id", str(first))
    expect(page.locator("#q")).to_have_value(f"#{first}")


def test_a_late_answer_never_replaces_the_latest(page, demo_collection):
    with Collection(demo_collection) as collection:
        first, second = [item.id for item in collection.items("audio")][:2]
    held = []

    def hold_the_first(route) -> None:
        if not held:
            held.append(route)  # answered only after the second search has shown
        else:
            route.continue_()

    page.route("**/api/search", hold_the_first)
    page.fill("#q", f"#{first}")
    page.press("#q", "Enter")
    expect(page.locator("#status")).to_have_text("searching…")
    page.fill("#q", f"#{second}")
    page.press("#q", "Enter")
    rows = page.locator("#results li.result")
    expect(rows.first).to_have_attribute("data-id", str(second))
    try:
        held[0].continue_()  # the late answer (the page aborted it: it may be refused)
    except Exception:  # noqa: BLE001 - playwright's error for an aborted request
        pass
    page.wait_for_timeout(1500)
    assert result_ids(page)[0] == second
    expect(page.locator("#error")).to_be_hidden()
