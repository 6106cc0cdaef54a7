"""The web app in a real browser: Playwright driving Debian's Chromium against a real uvicorn server on
127.0.0.1. Loads each page, searches, opens a feature, explores a prompt, runs a steering generation, and checks
that corpus text full of markup (<script>, <!--, quotes, ../) is shown as text and never runs."""

from __future__ import annotations

import os
from urllib.parse import quote

import pytest

from mechscope.web.screenshots import CHROMIUM, browser_page
from tests.unit.features.escaping import DICT, EXPLANATION

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed "
                                "(apt-get install chromium; `make setup` does it)")


def test_browse_search_feature_prompt_and_steer(site, tmp_path):
    pytest.importorskip("playwright")
    from playwright.sync_api import expect

    url, _ = site
    with browser_page() as page:
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        # browser + search
        page.goto(url + "/")
        assert page.locator("#features tr").count() > 1
        page.fill("#q", "PWNED")
        page.click("#search button")
        page.wait_for_url("**q=PWNED**")
        rows = page.locator("#features tr")
        assert rows.count() == 1 + 24
        assert EXPLANATION in page.inner_text("#features")
        page.screenshot(path=str(tmp_path / "browser.png"))
        # a feature page
        page.click("a.feature-link >> nth=0")
        page.wait_for_url(f"**/features/{quote(DICT, safe='')}/**")
        assert DICT in page.inner_text("h1")
        examples = page.inner_text("#top-examples") + page.inner_text("#quantiles")
        assert any(piece in examples for piece in ("</script>", "<script", "<!--", "../", "'x'", '"q"')), examples
        assert page.locator("#top-examples script").count() == 0
        assert page.evaluate("document.title") != "pwned"
        # prompt explorer
        page.goto(url + "/prompt")
        page.fill("#text", "<!-- ../x 'q'")
        page.click("#go")
        page.wait_for_selector("#tokens tr")
        assert page.locator("#tokens tr").count() == len("<!-- ../x 'q'")
        assert page.locator("#attention tr").count() == 1 + len("<!-- ../x 'q'")
        page.select_option("#layer", "1")
        page.select_option("#head", "3")
        # steering playground
        page.goto(url + f"/steer?dictionary={quote(DICT, safe='')}&feature=1")
        page.fill("#prompt", "abc")
        page.fill("#value", "50")
        page.fill("#n", "8")
        page.click("#go")
        expect(page.locator("#status")).to_have_text("done", timeout=60_000)
        base, steered = page.inner_text("#baseline"), page.inner_text("#steered")
        assert len(base) == 8 and steered != base
        assert dialogs == []  # no injected script ever ran
