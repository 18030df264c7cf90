"""The Airflow 3 UI in a real browser: Debian's headless Chromium driven by Playwright against the
live Airflow (`live_airflow`): the SimpleAuthManager login page, the release DAG's trigger form
(params under their titles, in their sections) and a finished release's grid (the step groups).

Screenshots go to test-artifacts/browser/ (gitignored): look at them when a test fails.
No `playwright install`: the browser is the system's /usr/bin/chromium, which `make setup` installs.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from istio_canary.dag_factory import release_params
from tests.e2e.conftest import DAG_ID
from tools.live_airflow import ADMIN_PASSWORD, ADMIN_USER, PROJECT_ROOT, LiveAirflow

pytestmark = [pytest.mark.e2e, pytest.mark.live, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
# Headless and quiet: no GPU, no QUIC, no first-run UI, nothing fetched from Google's servers.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "browser"
# The machine is slow and shared: the React UI can take a while to fetch and render.
TIMEOUT_MS = 120_000
expect.set_options(timeout=TIMEOUT_MS)

RELEASE = {"service": "reviews", "namespace": "bookinfo", "stable_version": "v1", "canary_version": "v2"}
STEP_GROUPS = ("step_10", "step_50", "step_100")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: the browser tests need Debian's chromium (`make setup` installs it)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (no cookies: signed out) with a viewport the grid and form fit in."""
    context = browser.new_context(viewport={"width": 1400, "height": 1400})
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    yield context.new_page()
    context.close()


def screenshot(page: Page, name: str) -> None:
    # Transitions finished: a just-enabled button is shown enabled, not half-way through its fade.
    page.screenshot(path=ARTIFACTS / name, animations="disabled")


def fill_login(page: Page, password: str) -> None:
    expect(page.get_by_role("heading", name="Sign into Airflow")).to_be_visible()
    page.get_by_label("Username").fill(ADMIN_USER)
    page.get_by_label("Password").fill(password)


def sign_in(page: Page, live: LiveAirflow, path: str) -> None:
    """Open `path` signed out, sign in on the login page it redirects to, land back on `path`."""
    page.goto(f"{live.url}{path}")
    fill_login(page, ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).not_to_have_url(re.compile(r"/auth/login"))


def open_section(dialog: Locator, section: str) -> Locator:
    """Unfold one section of the trigger form (an accordion: the others fold) and return its content.
    Found through the button's aria-controls: the content's aria-labelledby is the button's id, which
    has the section's spaces in it, so most sections' regions get no accessible name."""
    button = dialog.get_by_role("button", name=section, exact=True)
    button.click()
    expect(button).to_have_attribute("aria-expanded", "true")
    return dialog.locator(f'[id="{button.get_attribute("aria-controls")}"]')


def form_field(scope: Locator, title: str) -> Locator:
    """The trigger form's field whose label reads `title` (plus the required-field `*`). Airflow
    3.3's form labels don't point at their inputs (`for` != input id), so find the field group."""
    label = scope.page.locator("label").filter(has_text=re.compile(rf"^\s*{re.escape(title)}\s*\*?\s*$"))
    return scope.get_by_role("group").filter(has=label)


def hover_grid_cell(page: Page, run_id: str, task_id: str) -> Locator:
    """Point at the grid cell of `task_id` (a task or group) in run `run_id`; return its open tooltip.
    Pointing again if it doesn't open: the grid may re-render the cell under a still mouse (no
    pointer-enter then), and an open tooltip covers the cells below it until the mouse leaves."""
    tooltip = page.get_by_role("tooltip").filter(has=page.get_by_text(f"Task ID: {task_id}", exact=True))
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while True:
        page.mouse.move(0, 0)
        page.get_by_test_id(f"grid-{run_id}-{task_id}").hover()
        try:
            tooltip.wait_for(state="visible", timeout=10_000)
            return tooltip
        except PlaywrightTimeoutError:
            if time.monotonic() > deadline:
                raise


def test_login_page_refuses_a_wrong_password(live_airflow: LiveAirflow, page: Page) -> None:
    page.goto(f"{live_airflow.url}/dags/{DAG_ID}")
    expect(page).to_have_url(re.compile(r"/auth/login\?next="))
    fill_login(page, "not-the-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("Invalid credentials")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/auth/login"))
    screenshot(page, "login-refused.png")


def test_login_page_signs_in_and_returns_to_the_requested_dag(live_airflow: LiveAirflow, page: Page) -> None:
    page.goto(f"{live_airflow.url}/dags/{DAG_ID}")
    expect(page).to_have_url(re.compile(r"/auth/login\?next="))
    fill_login(page, ADMIN_PASSWORD)
    expect(page.get_by_role("button", name="Sign in")).to_be_enabled()
    screenshot(page, "login.png")
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{live_airflow.url}/dags/{DAG_ID}")
    expect(page.get_by_role("heading", name=DAG_ID, exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Trigger Dag")).to_be_enabled()


def test_trigger_form_shows_params_by_title_and_starts_a_dry_run_release(
    live_airflow: LiveAirflow, sandbox: Any, page: Page
) -> None:
    sandbox.reset()
    sign_in(page, live_airflow, f"/dags/{DAG_ID}")
    page.get_by_role("button", name="Trigger Dag").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("heading", name=f"Trigger Dag - {DAG_ID}")).to_be_visible()
    submit = dialog.get_by_role("button", name="Trigger", exact=True)
    expect(submit).to_be_disabled()  # service, namespace and both versions are required

    # Every param is in its section under its title (the sections are an accordion: one open at a time).
    sections: dict[str, dict[str, str]] = {}
    for key, param in release_params().items():
        sections.setdefault(param.schema["section"], {})[key] = param.schema["title"]
    for section, titles in sections.items():
        content = open_section(dialog, section)
        for key, title in titles.items():
            expect(form_field(content, title).locator(f'[name="element_{key}"]')).to_have_count(1)

    # Fill the release section as a user reads it: by the titles on screen.
    release = open_section(dialog, "Release")
    for title, value in (("Service", "reviews"), ("Namespace", "bookinfo"), ("Stable version", "v1"),
                         ("Canary version", "v2")):
        form_field(release, title).get_by_role("textbox").fill(value)
    expect(form_field(release, "Strategy").get_by_role("combobox", name="Strategy")).to_be_visible()
    form_field(release, "Dry run").get_by_text("Dry run").click()  # the switch's input is visually hidden
    expect(dialog.get_by_role("checkbox", name="Dry run")).to_be_checked()
    expect(submit).to_be_enabled()
    screenshot(page, "trigger-form.png")
    submit.click()

    # The UI opens the new run; the form's values (and the params' defaults) are its conf.
    expect(page).to_have_url(re.compile(rf"/dags/{DAG_ID}/runs/manual__"))
    run_id = unquote(page.url.split("/runs/", 1)[1].split("/", 1)[0])
    conf = live_airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}").json()["conf"]
    assert {key: conf.get(key) for key in (*RELEASE, "dry_run", "strategy", "bake_seconds")} == {
        **RELEASE, "dry_run": True, "strategy": "weighted", "bake_seconds": 300}
    assert live_airflow.wait_for_run(run_id) == "success"
    sandbox.reset()


def test_finished_release_grid_shows_the_step_groups(live_airflow: LiveAirflow, sandbox: Any, page: Page) -> None:
    sandbox.reset()
    # A dry run has the same tasks and groups as a real release, without the bakes.
    run_id = live_airflow.trigger({**RELEASE, "dry_run": True})
    assert live_airflow.wait_for_run(run_id) == "success"

    sign_in(page, live_airflow, f"/dags/{DAG_ID}/runs/{quote(run_id, safe='')}")
    for group in STEP_GROUPS:
        expect(page.get_by_role("link", name=f"{group} Toggle group", exact=True)).to_be_visible()
    # Unfolding step_10 shows its tasks (the other groups are still folded: the names are unique).
    page.get_by_role("link", name="step_10 Toggle group").get_by_label("Toggle group").click()
    for task in ("set_route", "watch", "analyze", "decide"):
        expect(page.get_by_role("link", name=task, exact=True)).to_be_visible()
    # Each group's cell in this run's column has the group's state in its tooltip.
    for group in STEP_GROUPS:
        tooltip = hover_grid_cell(page, run_id, group)
        expect(tooltip).to_contain_text("State: Success")
        expect(tooltip).to_contain_text(f"Run ID: {run_id}")
    screenshot(page, "grid.png")  # with step_100's tooltip open
    sandbox.reset()
