"""The release page (the plugin's FastAPI app at /istio-canary, a "Release" tab on every run)
and Abort, on the live Airflow and the session sandbox, through REST and in headless Chromium.

Releases are the costly part (a minute or more each on a shared machine), so the page tests
share one promoted and one rolled-back release (module fixture `finished`), and each abort
test runs one release that bakes long enough to be aborted while its watch is deferred.
Screenshots go to test-artifacts/browser/ with the other browser tests'.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import requests
from playwright.sync_api import Page, expect

from istio_canary.core.lock import lock_of, outcome_of
from tests.e2e import test_browser
from tests.e2e.conftest import DAG_ID
from tests.e2e.test_browser import screenshot, sign_in
from tests.e2e.test_live_airflow import wait_for_task
from tools.live_airflow import LiveAirflow

pytestmark = [pytest.mark.e2e, pytest.mark.live, pytest.mark.browser]

# The browser tests' headless Chromium (module-scoped) and its fresh signed-out page per test.
browser = test_browser.browser
page = test_browser.page

NS = "bookinfo"
FAST = {"service": "reviews", "namespace": NS, "stable_version": "v1", "canary_version": "v2",
        "bake_seconds": 5, "check_interval_seconds": 1, "min_requests": 20, "plan_bake": False}
# Bakes far longer than any test waits: an abort is what ends it.
BAKING = {**FAST, "bake_seconds": 600, "max_bake_seconds": 900}
STEPS = ("10%", "50%", "100%")


def page_path(run_id: str) -> str:
    return f"/istio-canary/releases/{DAG_ID}/{quote(run_id, safe='')}"


def page_json(live: LiveAirflow, run_id: str) -> dict[str, Any]:
    response = requests.get(f"{live.url}/istio-canary/api/releases/{DAG_ID}/{quote(run_id, safe='')}",
                            headers={"Authorization": f"Bearer {live.token}"}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def abort(live: LiveAirflow, run_id: str, token: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.post(f"{live.url}/istio-canary/api/releases/{DAG_ID}/{quote(run_id, safe='')}/abort",
                         headers=headers, timeout=120)


@pytest.fixture
def seeded(sandbox: Any) -> Iterator[dict[str, Any]]:
    """The seeded VirtualService spec (100% v1) and enough traffic; the sandbox reset afterwards."""
    sandbox.reset()
    sandbox.set_behaviour(rps=200)
    try:
        yield sandbox.istio_object("virtualservices", "reviews", NS)["spec"]
    finally:
        sandbox.reset()


@pytest.fixture(scope="module")
def finished(live_airflow: LiveAirflow, sandbox: Any) -> dict[str, str]:
    """One promoted release and one rolled back (v2 failing 30% of requests): {outcome: run_id}."""
    runs = {}
    for result, behaviour in (("promoted", {}), ("rolled_back", {"error_rate": 0.3})):
        sandbox.reset()
        sandbox.set_behaviour(rps=200)
        if behaviour:
            sandbox.set_behaviour("v2", **behaviour)
        run_id = live_airflow.trigger(FAST)
        assert live_airflow.wait_for_run(run_id, timeout=420) == ("success" if result == "promoted" else "failed")
        runs[result] = run_id
    sandbox.reset()
    return runs


def test_the_release_page_shows_both_releases_with_their_charts(
    live_airflow: LiveAirflow, finished: dict[str, str], page: Page
) -> None:
    promoted, rolled_back = finished["promoted"], finished["rolled_back"]
    sign_in(page, live_airflow, page_path(promoted))
    expect(page.get_by_role("heading", name="Release bookinfo/reviews: v1 -> v2")).to_be_visible()
    expect(page.locator("#outcome")).to_contain_text("promoted: all traffic to v2")
    expect(page.locator("#rolled-back")).to_have_text("not needed")
    charts = page.locator("svg.release-chart")
    expect(charts).to_have_count(2)
    for chart in (charts.nth(0), charts.nth(1)):
        expect(chart.locator("path.series-canary")).to_have_count(1)
        expect(chart.locator("path.series-stable")).to_have_count(1)
        expect(chart.locator("g.marker-step")).to_have_text(list(STEPS))
        expect(chart.locator("g.verdict-pass")).to_have_text([f"{w} pass" for w in STEPS])
        expect(chart.locator("g.marker-promote")).to_have_count(1)
    assert int(charts.nth(0).locator("path.series-canary").get_attribute("data-points")) > 10
    expect(page.locator("tr.phase")).to_have_count(3)
    expect(page.locator("#abort")).to_have_count(0)  # finished: nothing to abort
    screenshot(page, "release-page-promoted.png")

    page.goto(f"{live_airflow.url}{page_path(rolled_back)}")
    expect(page.locator("#outcome")).to_contain_text("rolled_back: step_10")
    expect(page.locator("#rolled-back")).to_have_text("yes")
    chart = page.locator('svg.release-chart[data-metric="error_rate"]')
    expect(chart.locator("path.series-canary")).to_have_count(1)
    expect(chart.locator("g.marker-step")).to_have_text(["10%"])
    expect(chart.locator("g.verdict-fail")).to_have_text(["10% fail"])
    expect(chart.locator("g.marker-rollback")).to_have_text(["rolled back"])
    screenshot(page, "release-page-rolled-back.png")

    # The list: both runs under their service, the lock free, all traffic on v1 again.
    page.get_by_role("link", name="All releases").click()
    expect(page.get_by_role("heading", name="bookinfo/reviews")).to_be_visible()
    for run_id, result in ((promoted, "promoted"), (rolled_back, "rolled_back")):
        expect(page.locator(f'tr.run[data-run-id="{run_id}"] td.outcome')).to_have_text(result)
    expect(page.locator("td.lock-holder").first).to_have_text("free")
    expect(page.locator("td.weights").first).to_have_text("http[0]: v1 100%")
    screenshot(page, "release-list.png")


def test_each_run_links_to_its_release_page(live_airflow: LiveAirflow, finished: dict[str, str], page: Page) -> None:
    """The run's "Release" tab in Airflow's UI shows the page in its frame; the watch task has
    a "Release page" link."""
    run_id = finished["rolled_back"]
    sign_in(page, live_airflow, f"/dags/{DAG_ID}/runs/{quote(run_id, safe='')}")
    page.get_by_role("link", name="Release", exact=True).click()  # the run's tabs are links
    expect(page).to_have_url(re.compile(r"/plugin/canary-release$"))
    frame = page.frame_locator('iframe[title="Release"]')
    expect(frame.locator('svg.release-chart[data-metric="error_rate"] g.verdict-fail')).to_have_count(1)
    screenshot(page, "release-tab.png")

    links = live_airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/step_10.watch/links").json()
    assert links.get("extra_links", {}).get("Release page") == f"{live_airflow.url}{page_path(run_id)}", links


def test_abort_over_rest_rolls_back_a_baking_release(
    live_airflow: LiveAirflow, sandbox: Any, seeded: dict[str, Any]
) -> None:
    run_id = live_airflow.trigger(BAKING)
    wait_for_task(live_airflow, run_id, "step_10.watch", ("deferred",))
    vs = sandbox.istio_object("virtualservices", "reviews", NS)
    assert lock_of(vs).holder == f"{DAG_ID}/{run_id}" and "weight" in str(vs["spec"]["http"])

    assert abort(live_airflow, run_id).status_code == 401  # Airflow's authentication, no token
    # The UI's session cookie works only from a page of this server (no cross-site abort).
    forged = requests.post(f"{live_airflow.url}/istio-canary/api/releases/{DAG_ID}/{quote(run_id, safe='')}/abort",
                           cookies={"_token": live_airflow.token}, headers={"Origin": "http://attacker.example"},
                           timeout=60)
    assert forged.status_code == 403 and "cross-origin" in forged.json()["detail"]
    response = abort(live_airflow, run_id, live_airflow.token)
    assert response.status_code == 200, response.text
    assert response.json()["failed_tasks"] == ["step_10.watch"] and response.json()["aborted_by"] == "admin"

    # Far within the 600-second bake: the run ends because of the abort.
    assert live_airflow.wait_for_run(run_id, timeout=240) == "failed"
    states = {t: ti["state"] for t, ti in live_airflow.task_instances(run_id).items()}
    assert states["step_10.watch"] == "failed" and states["step_10.analyze"] == "upstream_failed"
    assert states["rollback"] == "success" and states["report"] == "success"
    vs = sandbox.istio_object("virtualservices", "reviews", NS)
    assert vs["spec"] == seeded  # 100% v1, as before the release
    assert lock_of(vs) is None and outcome_of(vs).outcome == "rolled_back"
    report = live_airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/report/xcomEntries/"
                                     "release_report").json()["value"]
    assert report["outcome"] == "rolled_back" and report["reason"].startswith("aborted by admin during step_10.watch")
    run = live_airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}").json()
    assert run["note"].startswith("Aborted by admin")
    shown = page_json(live_airflow, run_id)
    assert shown["aborted"]["by"] == "admin" and shown["rolled_back"] == "yes" and not shown["abortable"]
    assert [m["kind"] for m in shown["markers"]] == ["step", "abort", "rollback"]

    again = abort(live_airflow, run_id, live_airflow.token)
    assert again.status_code == 409 and "has finished (failed)" in again.json()["detail"]


def test_abort_button_in_the_browser_rolls_back(
    live_airflow: LiveAirflow, sandbox: Any, seeded: dict[str, Any], page: Page
) -> None:
    run_id = live_airflow.trigger(BAKING)
    wait_for_task(live_airflow, run_id, "step_10.watch", ("deferred",))
    sign_in(page, live_airflow, page_path(run_id))
    expect(page.locator("#run-state")).to_have_text("running")
    expect(page.locator("td.lock-holder")).to_have_text(f"{DAG_ID}/{run_id}")
    expect(page.locator("td.weights")).to_contain_text("v1 90%, v2 10%")
    screenshot(page, "release-page-baking.png")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#abort").click()

    expect(page.locator("#message")).to_contain_text("aborted by admin: step_10.watch marked failed")
    expect(page.locator("#aborted-by")).to_contain_text("aborted by admin")
    assert live_airflow.wait_for_run(run_id, timeout=240) == "failed"
    page.reload()
    expect(page.locator("#rolled-back")).to_have_text("yes")
    expect(page.locator("#outcome")).to_contain_text("rolled_back: aborted by admin")
    expect(page.locator("td.lock-holder")).to_have_text("free")
    expect(page.locator("#abort")).to_have_count(0)
    screenshot(page, "release-page-aborted.png")
    assert sandbox.istio_object("virtualservices", "reviews", NS)["spec"] == seeded


def test_marking_the_run_failed_skips_the_rollback_and_the_page_says_so(
    live_airflow: LiveAirflow, sandbox: Any, seeded: dict[str, Any]
) -> None:
    """The trap Abort avoids: "Mark run as failed" skips every unfinished task, `rollback` too,
    and leaves traffic on the canary with the lock held; the page flags it."""
    run_id = live_airflow.trigger(BAKING)
    wait_for_task(live_airflow, run_id, "step_10.watch", ("deferred",))
    response = live_airflow.api("PATCH", f"/dags/{DAG_ID}/dagRuns/{run_id}", json={"state": "failed"})
    assert response.status_code == 200, response.text
    states = {t: ti["state"] for t, ti in live_airflow.task_instances(run_id).items()}
    assert states["rollback"] == "skipped"
    vs = sandbox.istio_object("virtualservices", "reviews", NS)
    assert vs["spec"] != seeded and lock_of(vs).holder == f"{DAG_ID}/{run_id}"  # stranded on 10%
    shown = page_json(live_airflow, run_id)
    assert shown["rolled_back"] == "no" and "traffic may still be on the canary" in shown["warning"]
    assert shown["lock_holder"] == f"{DAG_ID}/{run_id}"

    # The way out the page and the README give: clear the run's rollback task (and what follows it).
    response = live_airflow.api("POST", f"/dags/{DAG_ID}/clearTaskInstances", json={
        "dry_run": False, "only_failed": False, "task_ids": ["rollback"], "dag_run_id": run_id,
        "include_downstream": True})
    assert response.status_code == 200, response.text
    wait_for_task(live_airflow, run_id, "rollback", ("success",))
    vs = sandbox.istio_object("virtualservices", "reviews", NS)
    assert vs["spec"] == seeded and lock_of(vs) is None
    assert page_json(live_airflow, run_id)["rolled_back"] == "yes"
