"""The MLflow UI in a real browser: headless Debian chromium driven by Playwright (no browser download).
On the shared tracking server, after a real sweep: the experiment page lists the sweep's parent run and,
expanded, its children; the registered model's page shows the version that holds `champion`. The UI on
the embedded SQLite store (`scripts/mlflow-server --embedded`, what `make ui` runs) shows a sweep too.
Screenshots are kept in the test's folder and copied to outputs/test-artifacts/."""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import REPO, require
from helpers.cli import run_cli
from helpers.servers import SERVER_SCRIPT, SWEEP_LRS, free_port, http_ok, serving
from helpers.store import sqlite_uri
from playwright.sync_api import sync_playwright  # a hard dependency of the suite: the dev extra installs '.[ui]'

pytestmark = [pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
# As root in a sandbox without network: no sandbox, no GPU, and none of Chromium's background traffic.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = REPO / "outputs" / "test-artifacts"
UI_TIMEOUT_MS = 90_000  # the single-page app loads its bundle, then queries the server


@pytest.fixture(scope="session")
def browser() -> Iterator:
    """One headless Chromium for the session (Debian's: skipped without it, failed under CI=true)."""
    require(CHROMIUM.exists(), "Debian's chromium is not installed: apt-get install -y chromium")
    playwright = sync_playwright().start()
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    try:
        yield chromium
    finally:
        chromium.close()
        playwright.stop()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    try:
        yield context.new_page()
    finally:
        context.close()


def keep_screenshot(page, tmp_path: Path, name: str, full_page: bool = True) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=full_page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, ARTIFACTS / name)
    return path


def show_sweep_in_runs_page(page, base_url: str, experiment_id: str, parent_id: str, child_ids: list[str]) -> None:
    """Open the experiment's runs page, find the parent run, expand it and find every child."""
    assert child_ids, "a sweep without children shows nothing to expand"
    page.goto(f"{base_url}/#/experiments/{experiment_id}/runs")
    parent_link = page.locator(f'a[href$="/runs/{parent_id}"]')
    parent_link.wait_for(timeout=UI_TIMEOUT_MS)
    for child in child_ids:  # children are folded under their parent until it is expanded
        assert page.locator(f'a[href$="/runs/{child}"]').count() == 0
    name_cell = page.locator("[role=gridcell]", has=parent_link)
    name_cell.locator("button").first.click()  # the expander left of the run name
    for child in child_ids:
        page.locator(f'a[href$="/runs/{child}"]').wait_for(timeout=UI_TIMEOUT_MS)


def champion_row_text(page, base_url: str, model_name: str) -> str:
    page.goto(f"{base_url}/#/models/{model_name}")
    row = page.locator("[role=row]", has_text="@ champion")
    row.first.wait_for(timeout=UI_TIMEOUT_MS)
    assert row.count() == 1  # an alias sits on one version
    return row.first.inner_text()


# -- the shared tracking server after a real joblib sweep -------------------------------------------
@pytest.mark.postgres
def test_the_experiment_page_shows_the_sweep_parent_with_its_children(server_sweep, page, tmp_path):
    assert len(server_sweep.children) == len(SWEEP_LRS)
    show_sweep_in_runs_page(
        page,
        server_sweep.server.uri,
        server_sweep.experiment_id,
        server_sweep.parent.info.run_id,
        [c.info.run_id for c in server_sweep.children],
    )
    assert page.get_by_text(server_sweep.parent.info.run_name).count() >= 1
    keep_screenshot(page, tmp_path, "ui-server-sweep-runs.png")


@pytest.mark.postgres
def test_the_registered_model_page_shows_the_version_holding_champion(server_sweep, page, tmp_path):
    champion = server_sweep.client.get_model_version_by_alias("uk-demand-forecaster", "champion")
    text = champion_row_text(page, server_sweep.server.uri, "uk-demand-forecaster")
    assert f"Version {champion.version}" in text
    assert champion.run_id in text  # the version's runner.run_id tag: the sweep's best child
    keep_screenshot(page, tmp_path, "ui-server-champion.png")


# -- the embedded store, as `make ui` serves it -----------------------------------------------------
@contextlib.contextmanager
def serve_embedded(folder: Path) -> Iterator[str]:
    """`scripts/mlflow-server --embedded <folder>/outputs` (what `make ui` runs) until the block ends;
    yields its base URL. Its log holds no warning or traceback."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        str(SERVER_SCRIPT),
        "--embedded",
        str(folder / "outputs"),
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with serving(command, folder / "ui.log", http_ok(f"{base_url}/health")):
        yield base_url
    log = (folder / "ui.log").read_text()
    assert "Warning" not in log and "Traceback" not in log, log[-3000:]  # make ui starts quietly


@pytest.fixture
def embedded_ui(tmp_path) -> Iterator[tuple[str, Path]]:
    """A naive-model sweep (nothing to train) on the embedded store of tmp_path, then the UI on it."""
    cli = run_cli(["--multirun", "model=naive", "epochs=1", "data.train_stride=16", "seed=1,2"], tmp_path)
    assert cli.returncode == 0, cli.stderr[-3000:]
    with serve_embedded(tmp_path) as base_url:
        yield base_url, tmp_path


def test_the_ui_on_the_embedded_store_shows_a_sweep_and_its_champion(embedded_ui, page):
    from mlflow.tracking import MlflowClient

    base_url, folder = embedded_ui
    client = MlflowClient(tracking_uri=sqlite_uri(folder / "outputs" / "mlflow.db"))
    [experiment] = [e for e in client.search_experiments() if e.name == "uk-demand"]
    runs = client.search_runs([experiment.experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("runner.sweep_role") == "parent"]
    children = [r.info.run_id for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2
    show_sweep_in_runs_page(page, base_url, experiment.experiment_id, parent.info.run_id, children)
    keep_screenshot(page, folder, "ui-embedded-sweep-runs.png")
    champion = client.get_model_version_by_alias("uk-demand-forecaster", "champion")
    assert f"Version {champion.version}" in champion_row_text(page, base_url, "uk-demand-forecaster")


# -- the registered model's page after many alias moves ---------------------------------------------
MOVES = 30
SCREEN = {"width": 1280, "height": 800}  # a laptop's browser window


@pytest.fixture
def moved_ui(tmp_path) -> Iterator[tuple[str, Path, object]]:
    """The embedded store of tmp_path/outputs with a synthetic sweep (nothing trained) decided by the
    default policy, a second version, and then MOVES recorded moves of `champion` between the two; a
    second model holds as many moves in the format written before this change. Then the UI on it."""
    from helpers.sweeps import SyntheticStore, make_policy

    synthetic = SyntheticStore(tmp_path / "outputs")
    registry = synthetic.registry()
    sweep = synthetic.make_sweep([4.0, 5.0], extra_metrics={"test_mape": 2.5}, user="alice")
    synthetic.decide(sweep, make_policy(model_name="moved"))
    uri = synthetic.client.get_run(sweep.run_ids[1]).data.tags["runner.forecaster_uri"]
    registry.register_model(uri, "moved")
    for move in range(MOVES):
        registry.set_alias(
            "moved",
            "champion",
            "2" if move % 2 == 0 else "1",
            reason=f"move {move}: a reason "
            "as long as the policy's, e.g. val_mape 3.3896 vs champion 3.7515: improvement 0.36",
        )
    write_legacy_history(synthetic.client, "legacy", [uri, uri])
    with serve_embedded(tmp_path) as base_url:
        yield base_url, tmp_path, registry


def write_legacy_history(client, name: str, sources: list[str]) -> None:
    """A model whose MOVES alias moves are registered-model tags as the registry wrote them before."""
    import json
    import uuid
    from datetime import UTC, datetime

    from runner.registry.core import ModelRegistry

    registry = ModelRegistry(client._tracking_client.tracking_uri)
    for source in sources:
        registry.register_model(source, name)
    stamp = int(time.time() * 1000) - 60_000
    for move in range(MOVES):
        event = {
            "alias": "champion",
            "from_version": None if move == 0 else str(2 - move % 2),
            "to_version": str(1 + move % 2),
            "action": "set",
            "reason": f"move {move}",
            "actor": "sweep x",
            "when": datetime.fromtimestamp((stamp + move) / 1000, UTC).isoformat(timespec="milliseconds"),
            "sweep_id": "x",
        }
        client.set_registered_model_tag(
            name, f"runner.alias_event.{stamp + move:015d}-{uuid.uuid4().hex[:8]}", json.dumps(event, sort_keys=True)
        )
    client.set_registered_model_alias(name, "champion", "2")


def versions_table_box(context, base_url: str, name: str) -> tuple[object, dict]:
    """A new page on the model's page (the single-page app does not redraw on a move from one model's
    page to another's), and the bounding box of its versions table, header row to last version."""
    page = context.new_page()
    page.goto(f"{base_url}/#/models/{name}")
    return page, _table_box(page)


def _table_box(page) -> dict:
    last = page.locator("[role=row]", has_text="Version 1")
    last.first.wait_for(timeout=UI_TIMEOUT_MS)
    header = page.locator("[role=row]", has_text="Registered at").first
    top, bottom = header.bounding_box(), last.first.bounding_box()
    return {"y": top["y"], "height": bottom["y"] + bottom["height"] - top["y"]}


def open_model_by_clicks(context, base_url: str, name: str):
    """The way the README says: MLflow 3.17 opens in its "GenAI" mode, whose sidebar has no registry;
    "Model training" (top left) shows "Model registry", which lists the registered models."""
    page = context.new_page()
    page.goto(f"{base_url}/")
    page.get_by_text("Model training", exact=True).first.click(timeout=UI_TIMEOUT_MS)
    page.get_by_text("Model registry", exact=True).first.click(timeout=UI_TIMEOUT_MS)
    link = page.get_by_role("link", name=name, exact=True).first
    link.wait_for(timeout=UI_TIMEOUT_MS)
    # a browser's first visit gets a dialog about the "new Model Registry UI" (aliases) over the list
    introduction = page.get_by_role("dialog").get_by_text("Try it now", exact=True)
    with contextlib.suppress(Exception):
        introduction.wait_for(timeout=3000)
    if introduction.count():
        introduction.click()
    link.click(timeout=UI_TIMEOUT_MS)
    return page


def test_after_30_alias_moves_the_versions_table_is_on_the_first_screen(browser, moved_ui):
    base_url, folder, registry = moved_ui
    context = browser.new_context(viewport=SCREEN)
    try:
        page = open_model_by_clicks(context, base_url, "moved")
        box = _table_box(page)
        keep_screenshot(page, folder, "ui-model-after-30-moves.png", full_page=False)
        assert 0 <= box["y"] and box["y"] + box["height"] <= SCREEN["height"], box
        assert "alias_event" not in page.inner_text("body")  # no history tag on the page
        # the history is all there, for the command line and rollback
        history = registry.alias_history("moved", "champion")
        assert len(history) == MOVES + 1 and history[-1]["reason"].startswith(f"move {MOVES - 1}:")

        # the same moves in the format written before this change push the versions off the screen ...
        page, box = versions_table_box(context, base_url, "legacy")
        keep_screenshot(page, folder, "ui-model-legacy-history.png", full_page=False)
        assert box["y"] + box["height"] > SCREEN["height"], box
        # ... until the next recorded move, which takes the old events off the page too
        registry.set_alias("legacy", "champion", "1", reason="after the upgrade")
        page, box = versions_table_box(context, base_url, "legacy")
        keep_screenshot(page, folder, "ui-model-legacy-history-moved.png", full_page=False)
        assert box["y"] + box["height"] <= SCREEN["height"], box
        assert len(registry.alias_history("legacy", "champion")) == MOVES + 1
        registry.rollback("legacy", reason="back")  # rolls back across the old and the new format
        assert registry.get_version_by_alias("legacy", "champion")["version"] == "2"
    finally:
        context.close()
