"""The pack in the real ComfyUI frontend, driven by headless Chromium (Debian's `chromium` package) through
Playwright: the F1 nodes are registered, every template opens from the template browser with no missing node,
and one template runs from the Run button until its image shows on the SaveImage node.

Skipped, with the reason, when Chromium or Playwright is missing; `.ci/run` installs Chromium and sets
F1_REQUIRE_BROWSER=1, so in CI a missing browser fails instead. Screenshots go to a temporary folder, or to
F1_SCREENSHOTS (`F1_SCREENSHOTS=docs` refreshes the README's docs/browser-*.png)."""
import json
import os
import shutil
from pathlib import Path

import pytest

from workflows import TEMPLATES

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright
except ImportError:  # the `browser` fixture skips, saying so
    sync_playwright = None

PACK = "ComfyUI-F1"  # the folder name under custom_nodes/, as `make setup` links it
RUN_TEMPLATE = "f1_txt2img"  # the demo: the shipped tiny model, 64x64, a few seconds on a CPU
VIEWPORT = {"width": 1600, "height": 900}  # the canvas the templates are laid out for (scripts/workflows.py)


def _chromium() -> str | None:
    for name in (os.environ.get("F1_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _skip_or_fail(reason: str):
    if os.environ.get("F1_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser test required (F1_REQUIRE_BROWSER=1) but {reason}")
    pytest.skip(f"browser test skipped: {reason}")


@pytest.fixture(scope="module")
def browser():
    if sync_playwright is None:
        _skip_or_fail("Playwright is not installed (pip install -r requirements-dev.txt)")
    executable = _chromium()
    if executable is None:
        _skip_or_fail("no Chromium on PATH (apt-get install chromium, or set F1_CHROMIUM)")
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("F1_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def page(browser, server):
    """The frontend as a first-time user opens it; `page.errors` collects console errors and page exceptions."""
    page = browser.new_page(viewport=VIEWPORT)
    page.errors = []
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(server.url)
    page.wait_for_function("window.app?.graph && window.LiteGraph && app.extensions?.length", timeout=60_000)
    templates = page.get_by_test_id("template-workflows-content")
    try:  # a first visit opens the template browser (and a banner) just after loading; close it
        templates.wait_for(timeout=10_000)
        page.locator(".p-dialog button:has(i.pi-times)").first.click()
        templates.wait_for(state="hidden")
    except PlaywrightTimeout:
        pass
    banner_close = page.locator("div.pointer-events-auto", has_text="Introducing Nodes 2.0").locator("xpath=./button")
    if banner_close.count():
        banner_close.click()
    yield page
    page.close()


def _templates() -> list[str]:
    return sorted(p.stem for p in TEMPLATES.glob("*.json"))


def _open_template(page, name: str):
    """Workflow templates as a user opens them: the sidebar's Templates button, the pack's entry, the card."""
    dialog = page.get_by_test_id("template-workflows-content")
    if not dialog.is_visible():
        page.get_by_role("button", name="Templates", exact=True).click()
        dialog.wait_for()
    page.get_by_text(PACK, exact=True).first.click()
    card = page.get_by_test_id(f"template-workflow-{name}")
    card.wait_for()
    return card


def _graph_state(page) -> dict:
    return page.evaluate("""() => ({
        types: app.graph.nodes.map(n => n.type),
        missing: app.graph.nodes.filter(n => !(n.type in LiteGraph.registered_node_types)).map(n => n.type),
        links: Object.keys(app.graph.links ?? {}).length,
        dialogs: Array.from(document.querySelectorAll('.p-dialog')).map(d => d.innerText.slice(0, 200)),
    })""")


def test_frontend_lists_every_f1_node_and_loads_the_pack_extension(page, server, shots):
    expected = {name for name in server.get("/object_info") if name.startswith("F1")}
    registered = set(page.evaluate("Object.keys(LiteGraph.registered_node_types).filter(n => n.startsWith('F1'))"))
    assert registered == expected
    assert "ComfyUI-F1.results" in page.evaluate("app.extensions.map(e => e.name)")
    assert not [e for e in page.errors if PACK in e], page.errors

    # the node library, as a user browses it: an F1 folder holding every node
    library = page.get_by_role("button", name="Node Library (n)")
    library.click()
    folder = page.locator(".p-tree-node-content", has=page.get_by_text("F1", exact=True)).first
    folder.wait_for()
    assert folder.inner_text().split() == ["F1", str(len(expected))]
    page.locator(".search-box-input").first.fill("F.1")
    page.get_by_text("F.1 Adaptive KSampler").first.wait_for()
    page.screenshot(path=shots / "browser-nodes.png")
    library.click()


def test_every_template_opens_from_the_template_browser_with_no_missing_nodes(page, shots):
    names = _templates()
    assert len(names) >= 4
    _open_template(page, names[0])
    page.screenshot(path=shots / "browser-templates.png")
    for name in names:
        ui = json.loads((TEMPLATES / f"{name}.json").read_text())
        _open_template(page, name).click()
        page.get_by_test_id("template-workflows-content").wait_for(state="hidden")
        expected = sorted(n["type"] for n in ui["nodes"])
        page.wait_for_function("types => JSON.stringify(app.graph.nodes.map(n => n.type).sort()) === "
                               "JSON.stringify(types)", arg=expected, timeout=15_000)
        state = _graph_state(page)
        assert state["missing"] == [], f"{name}: missing nodes {state['missing']}"
        assert state["links"] == len(ui["links"]), f"{name}: links dropped on load"
        assert not [d for d in state["dialogs"] if "missing" in d.lower()], f"{name}: {state['dialogs']}"
    assert not [e for e in page.errors if PACK in e], page.errors


def test_a_template_runs_from_the_run_button_and_its_image_appears(page, server, shots):
    _open_template(page, RUN_TEMPLATE).click()
    page.get_by_test_id("template-workflows-content").wait_for(state="hidden")
    page.wait_for_function("app.graph.nodes.some(n => n.type === 'SaveImage')")
    before = set(server.get("/history"))  # the server is shared with other tests, some of which fail on purpose
    page.get_by_role("button", name="Run", exact=True).click()
    # the frontend sets node.imgs from the run's `executed` message and loads each from /view
    page.wait_for_function("""() => app.graph.nodes.filter(n => n.type === 'SaveImage')
        .every(n => n.imgs?.length && n.imgs.every(img => img.complete && img.naturalWidth > 0))""",
                           timeout=120_000)
    source = page.evaluate("app.graph.nodes.find(n => n.type === 'SaveImage').imgs[0].src")
    assert "/view?" in source and "F1_txt2img" in source
    runs = [entry for key, entry in server.get("/history").items() if key not in before]
    assert len(runs) == 1 and runs[0]["status"]["status_str"] == "success", runs
    page.screenshot(path=shots / "browser-run.png")
