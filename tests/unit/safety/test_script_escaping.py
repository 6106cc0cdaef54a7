"""Text embedded in an HTML script block cannot end or alter it, ``<!--<script`` included."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from mechscope.viz.attention import attention_html, script_json

NASTY = ["<!--<script>", "x", "</script><p id=evil>", "-->&amp;\u2028"]


def test_script_json_has_no_markup_and_round_trips() -> None:
    data = {"tokens": NASTY, "labels": ["<!--", "<script"]}
    text = script_json(data)
    assert not set("<>&") & set(text)
    assert json.loads(text) == data


def test_attention_view_in_a_real_browser_keeps_its_data_and_the_rest_of_the_page() -> None:
    """Chromium parses the page: both script elements exist, the JSON reads back, nothing is swallowed."""
    sync_api = pytest.importorskip("playwright.sync_api")
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (make setup installs it)")
    frag = attention_html(NASTY, torch.full((1, 4, 4), 0.25).tril())
    assert re.search(r"<!--|<script>[^<]*<script", frag.split('class="data">')[1].split("</script>")[0]) is None
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.set_content(f"<!doctype html><body>{frag}<p id='after'>after</p></body>")
            n_scripts, after, tokens = page.evaluate(
                "[document.querySelectorAll('script').length, document.getElementById('after') !== null,"
                " JSON.parse(document.querySelector('script.data').textContent).tokens]")
        finally:
            browser.close()
    assert (n_scripts, after, tokens) == (2, True, NASTY)
