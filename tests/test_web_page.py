"""The alias timeline page in headless Chromium (Debian's chromium and chromium-driver):
aliases and timeline shown, rollback asks first and then moves the alias in the database,
user-supplied strings shown as text."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import requests

import mlflow
import mlflow.genai

from mlflow_prompt_alias_store import PromptAliasClient

from _server import mlflow_server

pytestmark = pytest.mark.server

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
EVIL_ACTOR = "<script>window.__pwned = 1</script>"
EVIL_MESSAGE = "<img src=x onerror=\"window.__pwned = 2\"> shorter <b>answers</b>"


@pytest.fixture
def browser(tmp_path):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        from conftest import unavailable

        unavailable("Debian's chromium and chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1200,1000"):
        options.add_argument(flag)  # fmt: skip
    # No speculative connections: on MLflow 3.1-3.2 (gunicorn's sync workers) an idle preconnected
    # socket holds a worker until gunicorn's 30 s timeout, which then answers it with a 500 that
    # the next navigation reads.
    options.add_experimental_option("prefs", {"net.network_prediction_options": 2})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


def _wait_for_version(browser, alias: str, version: int) -> None:
    """Wait until the page (reloaded after a POST) shows ``alias`` on ``version``. The cell is
    read in one script call, so an element found before the reload is never used after it
    (chromedriver reports that as an "unknown error", not as a stale element a wait retries)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    script = (f"var td = document.querySelector('#aliases tr[data-alias=\"{alias}\"] td.version');"
              "return td && td.textContent;")  # fmt: skip
    WebDriverWait(browser, 15, ignored_exceptions=[WebDriverException]).until(
        lambda b: b.execute_script(script) == f"v{version}"
    )


def test_timeline_page_and_rollback(browser, sqlite_uri, tmp_path, monkeypatch):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    with mlflow_server(sqlite_uri, tmp_path, "--app-name", "prompt-alias", workers=2) as (url, _):
        mlflow.set_tracking_uri(url)
        mlflow.genai.register_prompt(name="qa_prompt", template="Answer: {{question}}")
        mlflow.genai.register_prompt(name="qa_prompt", template="Briefly: {{question}}",
                                     commit_message=EVIL_MESSAGE)  # fmt: skip
        mlflow.genai.register_prompt(name="qa_prompt", template="In one word: {{question}}")
        mlflow.genai.set_prompt_alias(name="qa_prompt", alias="production", version=1)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", EVIL_ACTOR)  # sent as basic auth
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw")
        mlflow.genai.set_prompt_alias(name="qa_prompt", alias="production", version=2)
        mlflow.genai.set_prompt_alias(name="qa_prompt", alias="staging", version=1)
        monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
        monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
        mlflow.genai.set_prompt_alias(name="qa_prompt", alias="production", version=3)

        browser.get(url + "/prompt-alias/")
        assert "production → v3" in browser.find_element(By.ID, "prompts").text
        browser.find_element(By.LINK_TEXT, "qa_prompt").click()
        assert browser.find_element(By.ID, "prompt-name").text == "qa_prompt"

        # The timeline: one lane per alias, production's segments v1 then v2.
        segments = browser.find_elements(By.CSS_SELECTOR, "#timeline g.segment")
        assert [(s.get_attribute("data-alias"), s.get_attribute("data-version")) for s in segments] == [
            ("production", "1"), ("production", "2"), ("production", "3"), ("staging", "1")]  # fmt: skip
        # Its axis: three distinct times, as precise as the seconds-long span needs.
        ticks = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#timeline text.tick")]
        assert len(set(ticks)) == 3 and ticks[0].endswith("Z") and "." in ticks[1], ticks
        # User-supplied strings are text, never markup or script.
        actors = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#events td.actor")]
        assert EVIL_ACTOR in actors
        messages = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#versions td.commit-message")]
        assert EVIL_MESSAGE in messages
        assert browser.execute_script("return window.__pwned === undefined")
        browser.save_screenshot(str(tmp_path / "prompt-alias-page.png"))

        # What each alias serves now, and what each move changed.
        template = browser.find_element(By.CSS_SELECTOR, 'tr[data-alias="production"] pre.template')
        assert template.text == "In one word: {{question}}"
        move = browser.find_element(By.CSS_SELECTOR, '#events tr[data-sequence="2"] details.diff')
        assert move.find_element(By.TAG_NAME, "summary").text == "v1 → v2"
        diff = move.find_element(By.TAG_NAME, "pre").get_attribute("textContent").splitlines()
        assert "-Answer: {{question}}" in diff and "+Briefly: {{question}}" in diff
        # Rollback is offered where it can succeed, saying exactly what it does: not for
        # staging, whose only event created it.
        assert browser.find_elements(By.CSS_SELECTOR, 'tr[data-alias="staging"] button.rollback') == []
        row = 'tr[data-alias="production"] button.rollback'
        assert browser.find_element(By.CSS_SELECTOR, row).text == "Return production to v2 (before the v3 release)"
        # Dismissing the confirmation changes nothing.
        browser.find_element(By.CSS_SELECTOR, row).click()
        WebDriverWait(browser, 10).until(ec.alert_is_present())
        assert browser.switch_to.alert.text == "Return production to v2 (before the v3 release) — prompt 'qa_prompt'?"
        browser.switch_to.alert.dismiss()
        assert PromptAliasClient(sqlite_uri).list_aliases(alias="production")[0].version == 3

        # Confirming rolls production back to version 2. The button's request carries its
        # idempotency key: sent again (a double click, a retry), it changes nothing more.
        key = browser.find_element(By.CSS_SELECTOR, row).get_attribute("data-key")
        browser.find_element(By.CSS_SELECTOR, row).click()
        WebDriverWait(browser, 10).until(ec.alert_is_present())
        browser.switch_to.alert.accept()
        _wait_for_version(browser, "production", 2)
        again = browser.execute_async_script(
            "var done = arguments[arguments.length - 1];"
            "fetch('/api/2.0/mlflow/prompt-alias/rollback', {method: 'POST', headers: {'Content-Type': 'application/json'},"
            " body: JSON.stringify({name: 'qa_prompt', alias: 'production', idempotency_key: arguments[0]})})"
            ".then(function (r) { return r.json(); }).then(done);", key)  # fmt: skip
        assert (again["event"]["from_version"], again["event"]["to_version"]) == (3, 2)
        assert PromptAliasClient(sqlite_uri).list_aliases(alias="production")[0].version == 2
        # After the incident rollback the main button never offers the bad version again: it
        # goes one step further back, and says so.
        browser.refresh()
        assert browser.find_element(By.CSS_SELECTOR, row).text == "Return production to v1 (before the v2 release)"
        browser.save_screenshot(str(tmp_path / "prompt-alias-page-after-rollback.png"))
        browser.find_element(By.CSS_SELECTOR, row).click()
        WebDriverWait(browser, 10).until(ec.alert_is_present())
        browser.switch_to.alert.accept()
        _wait_for_version(browser, "production", 1)
        assert browser.find_elements(By.CSS_SELECTOR, row) == []  # back to its first version
        assert "nothing before it" in browser.find_element(By.CSS_SELECTOR, 'tr[data-alias="production"] .no-undo').text

        # A deleted alias can be restored from the page, on the version it held.
        mlflow.genai.delete_prompt_alias(name="qa_prompt", alias="staging")
        browser.refresh()
        restore = browser.find_element(By.CSS_SELECTOR, '#deleted-aliases tr[data-alias="staging"] button.restore')
        assert restore.text == "Restore staging on v1 (before it was deleted)"
        restore.click()
        WebDriverWait(browser, 10).until(ec.alert_is_present())
        assert browser.switch_to.alert.text == "Restore staging on v1 (before it was deleted) — prompt 'qa_prompt'?"
        browser.switch_to.alert.accept()
        _wait_for_version(browser, "staging", 1)

        # Links both ways with MLflow's UI: its prompt page, and from there back to ours.
        browser.find_element(By.ID, "mlflow-ui-link").click()
        WebDriverWait(browser, 30).until(lambda b: b.current_url.endswith("/#/prompts/qa_prompt"))
        back = WebDriverWait(browser, 30).until(ec.visibility_of_element_located((By.ID, "prompt-alias-link")))
        WebDriverWait(browser, 30).until(lambda b: "qa_prompt" in b.find_element(By.TAG_NAME, "body").text)
        browser.save_screenshot(str(tmp_path / "mlflow-ui-prompt-page.png"))
        assert back.text == "Alias timeline"
        browser.get(url + "/#/experiments")  # elsewhere in MLflow's UI the link is hidden
        WebDriverWait(browser, 10).until(ec.invisibility_of_element_located((By.ID, "prompt-alias-link")))
        browser.back()
        WebDriverWait(browser, 10).until(ec.visibility_of_element_located((By.ID, "prompt-alias-link"))).click()
        assert browser.find_element(By.ID, "prompt-name").text == "qa_prompt"
    assert PromptAliasClient(sqlite_uri).list_aliases(alias="staging")[0].version == 1
    [production] = PromptAliasClient(sqlite_uri).list_aliases(alias="production")
    assert production.version == 1
    history = PromptAliasClient(sqlite_uri).get_alias_history("qa_prompt", alias="production")
    assert [(e.action, e.from_version, e.to_version) for e in history[:2]] == [("rollback", 2, 1), ("rollback", 3, 2)]
    assert history[2].action == "move"  # the repeated request wrote nothing
    if artifacts := os.environ.get("PROMPT_ALIAS_TEST_ARTIFACTS"):
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        for shot in ("prompt-alias-page.png", "mlflow-ui-prompt-page.png"):
            shutil.copy(tmp_path / shot, artifacts)


def _sign_in(browser, username: str, password: str) -> None:
    """Every request of this browser from now on carries these basic-auth credentials, as
    after the user answered the browser's login prompt."""
    import base64

    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})


def test_page_under_authentication(browser, tmp_path):
    """--app-name prompt-alias-auth: a READ user sees the prompt but no rollback or protect
    button, and a rollback POST forged from their session is refused; an EDIT user rolls back
    from the page; the page names the signed-in user."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait
    from test_auth_app import ADMIN, PASSWORD, auth_config, grant

    from mlflow.server import get_app_client

    db = tmp_path / "mlflow.db"
    uri = f"prompt-alias+sqlite:///{db}"
    with mlflow_server(uri, tmp_path, "--app-name", "prompt-alias-auth", env=auth_config(tmp_path)) as (url, _):
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = ADMIN
        try:
            mlflow.set_tracking_uri(url)
            mlflow.genai.register_prompt(name="qa_prompt", template="Answer: {{question}}")
            mlflow.genai.register_prompt(name="qa_prompt", template="Briefly: {{question}}")
            mlflow.genai.set_prompt_alias(name="qa_prompt", alias="production", version=1)
            mlflow.genai.set_prompt_alias(name="qa_prompt", alias="production", version=2)
            client = get_app_client("prompt-alias-auth", tracking_uri=url)
            for username, permission in (("reader", "READ"), ("editor", "EDIT")):
                client.create_user(username, PASSWORD)
                grant(client, username, "qa_prompt", permission)
        finally:
            del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
        page = f"{url}/prompt-alias/prompt?name=qa_prompt"

        _sign_in(browser, "reader", PASSWORD)
        browser.get(page)
        assert browser.find_element(By.ID, "user").text == "Signed in as reader"
        assert browser.find_element(By.CSS_SELECTOR, 'tr[data-alias="production"] td.version').text == "v2"
        assert browser.find_elements(By.CSS_SELECTOR, "button.rollback, button.protect, button.unprotect") == []
        browser.save_screenshot(str(tmp_path / "page-as-reader.png"))
        status = browser.execute_async_script(
            "var done = arguments[arguments.length - 1];"
            "fetch('/api/2.0/mlflow/prompt-alias/rollback', {method: 'POST',"
            " headers: {'Content-Type': 'application/json'},"
            " body: JSON.stringify({name: 'qa_prompt', alias: 'production'})})"
            ".then(function (r) { done(r.status); });"
        )
        assert status == 403
        assert PromptAliasClient(uri).list_aliases(alias="production")[0].version == 2

        _sign_in(browser, "editor", PASSWORD)
        browser.get(page)
        assert browser.find_element(By.ID, "user").text == "Signed in as editor"
        assert browser.find_elements(By.CSS_SELECTOR, "button.protect, button.unprotect") == []  # admins only
        browser.find_element(By.CSS_SELECTOR, 'tr[data-alias="production"] button.rollback').click()
        WebDriverWait(browser, 10).until(ec.alert_is_present())
        browser.switch_to.alert.accept()
        _wait_for_version(browser, "production", 1)
        browser.save_screenshot(str(tmp_path / "page-as-editor-after-rollback.png"))
    latest = PromptAliasClient(uri).get_alias_history("qa_prompt", alias="production")[0]
    assert (latest.action, latest.to_version, latest.actor) == ("rollback", 1, "editor")
    if artifacts := os.environ.get("PROMPT_ALIAS_TEST_ARTIFACTS"):
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "page-as-editor-after-rollback.png", artifacts)


def test_search_and_paging(browser, sqlite_uri, tmp_path):
    """The index searches and pages the prompts; a prompt's page pages its events (one alias's
    on request) and draws a burst of moves as one striped run; a bad page number is a 400
    page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    mlflow.set_tracking_uri(sqlite_uri)
    names = [f"prompt_{i:04d}" for i in range(120)]
    for name in names:
        mlflow.genai.register_prompt(name=name, template="Answer: {{question}}")
    busy = names[0]
    mlflow.genai.register_prompt(name=busy, template="Briefly: {{question}}")
    for i in range(240):  # a burst: each version held a few milliseconds
        mlflow.genai.set_prompt_alias(name=busy, alias=("production", "staging")[i % 2], version=1 + i // 2 % 2)
    mlflow.genai.set_prompt_alias(name=names[77], alias="production", version=1)

    with mlflow_server(sqlite_uri, tmp_path, "--app-name", "prompt-alias", workers=2) as (url, _):
        def rows(table: str) -> list[str]:
            return [r.text for r in browser.find_elements(By.CSS_SELECTOR, f"#{table} tr")[1:]]

        browser.get(url + "/prompt-alias/")
        assert browser.find_element(By.ID, "prompt-count").text == "120 prompts"
        assert [r.split(" ")[0] for r in rows("prompts")] == names[:50]
        assert browser.find_element(By.CSS_SELECTOR, "#prompt-pages .muted").text == "page 1 of 3"
        browser.find_element(By.CSS_SELECTOR, "#prompt-pages a[rel=next]").click()
        assert [r.split(" ")[0] for r in rows("prompts")] == names[50:100]
        browser.find_element(By.CSS_SELECTOR, "#prompt-pages a[rel=next]").click()
        assert [r.split(" ")[0] for r in rows("prompts")] == names[100:]
        assert browser.find_elements(By.CSS_SELECTOR, "#prompt-pages a[rel=next]") == []

        search = browser.find_element(By.CSS_SELECTOR, "#search input[name=q]")
        search.send_keys("PROMPT_007")  # case-insensitive, anywhere in the name
        search.submit()
        assert [r.split(" ")[0] for r in rows("prompts")] == names[70:80]
        assert browser.find_element(By.ID, "prompt-count").text == "10 prompts matching “PROMPT_007”"
        assert "production → v1" in rows("prompts")[7]
        assert browser.find_elements(By.ID, "prompt-pages") == []  # one page
        browser.save_screenshot(str(tmp_path / "prompt-alias-index-search.png"))
        browser.get(url + "/prompt-alias/?q=nothing-like-it")
        assert rows("prompts") == ["No prompt name contains “nothing-like-it”."]

        browser.find_element(By.LINK_TEXT, "Clear").click()
        browser.find_element(By.LINK_TEXT, busy).click()
        assert browser.find_element(By.ID, "event-count").text == "240 events, newest first"
        sequences = [int(r.get_attribute("data-sequence")) for r in browser.find_elements(By.CSS_SELECTOR, "#events tr[data-sequence]")]
        assert sequences == list(range(240, 140, -1))
        browser.find_element(By.CSS_SELECTOR, "#event-pages a[rel=next]").click()
        sequences = [int(r.get_attribute("data-sequence")) for r in browser.find_elements(By.CSS_SELECTOR, "#events tr[data-sequence]")]
        assert sequences == list(range(140, 40, -1))
        Select(browser.find_element(By.CSS_SELECTOR, "#event-filter select[name=alias]")).select_by_value("staging")
        browser.find_element(By.CSS_SELECTOR, '#event-filter option[value="staging"][selected]')
        assert browser.find_element(By.ID, "event-count").text == "120 events, newest first"
        aliases = {td.text for td in browser.find_elements(By.CSS_SELECTOR, "#events tr[data-sequence] td:nth-child(3)")}
        assert aliases == {"staging"}
        assert browser.find_element(By.CSS_SELECTOR, "#event-pages .muted").text == "page 1 of 2"

        # The burst is a few striped runs per alias, not 240 slivers; their tooltips count it.
        # (Stretches merge by their drawn width: on a loaded machine the burst takes longer
        # against the whole span, and a run may break in a few places: 24 seen in CI.)
        segments = browser.find_elements(By.CSS_SELECTOR, "#timeline g.segment")
        assert len(segments) < 40, len(segments)
        runs = browser.find_elements(By.CSS_SELECTOR, "#timeline g.segment.busy")
        assert {r.get_attribute("data-alias") for r in runs} == {"production", "staging"}
        assert sum(int(r.get_attribute("data-count")) for r in runs) > 200
        browser.save_screenshot(str(tmp_path / "prompt-alias-busy-prompt.png"))

        for bad in ("0", "x", "-1", "1e3", "١", "9" * 20):
            browser.get(url + f"/prompt-alias/?page={bad}")
            assert browser.find_element(By.ID, "error-status").text == "400"
        # More digits than Python reads as a number: still a 400 (from the page, or from
        # gunicorn, which refuses request lines over 4 KiB, on 3.1-3.2).
        assert requests.get(url + "/prompt-alias/?page=" + "9" * 5000, timeout=30).status_code == 400
        browser.get(url + "/prompt-alias/?page=99")  # beyond the last: the last
        assert browser.find_element(By.CSS_SELECTOR, "#prompt-pages .muted").text == "page 3 of 3"

        # An unknown prompt: an HTML page with MLflow's status and message, a way back.
        browser.get(url + "/prompt-alias/prompt?name=no_such_prompt")
        assert browser.find_element(By.ID, "error-status").text == "404"
        assert browser.find_element(By.ID, "error-message").text == "Prompt with name=no_such_prompt not found"
        browser.save_screenshot(str(tmp_path / "prompt-alias-404.png"))
        browser.find_element(By.LINK_TEXT, "Prompt aliases").click()
        assert browser.find_element(By.ID, "prompt-count").text == "120 prompts"
    if artifacts := os.environ.get("PROMPT_ALIAS_TEST_ARTIFACTS"):
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        for shot in ("prompt-alias-index-search.png", "prompt-alias-busy-prompt.png", "prompt-alias-404.png"):
            shutil.copy(tmp_path / shot, artifacts)
