"""The dashboard and the demo shop: the admin token, the sidecar's redirect to the dashboard,
and a real browser (headless Chromium driven by selenium through chromedriver) on a small
real stack with simulated shoppers: every chart gets data, the console stays clean, and
clicking items in the shop changes the shopper's list. Screenshots go to the folder in
RECOFAST_ARTIFACTS (default: the test's tmp_path)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import time
import tomllib
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiohttp import ClientSession, web
from recofast.engine import dashboard
from recofast.engine.stack import Stack, _warm, engine_toml, free_port, read_experiments, write_demo_events
from recofast_sidecar.app import create_app as sidecar_app
from recofast_sidecar.config import SidecarConfig
from recofast_sidecar.protocol.experiments import assign, parse

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(("host", "token", "ask", "want"), [
    ("127.0.0.1", "", {}, 200),
    ("0.0.0.0", "", {}, 403),
    ("0.0.0.0", "s3cret-token", {}, 401),
    ("0.0.0.0", "s3cret-token", {"headers": {"Authorization": "Bearer wrong"}}, 401),
    ("0.0.0.0", "s3cret-token", {"headers": {"Authorization": "Bearer s3cret-token"}}, 200),
    ("127.0.0.1", "s3cret-token", {"params": {"token": "s3cret-token"}}, 200),
    ("127.0.0.1", "s3cret-token", {}, 401),
])
async def test_dashboard_pages_need_the_admin_token_or_a_loopback_address(host, token, ask, want):
    app = web.Application()
    dashboard.add_routes(app, SimpleNamespace(cfg=SimpleNamespace(http_host=host, admin_token=token)))  # type: ignore[arg-type]
    runner, url = await _serve(app)
    try:
        async with ClientSession() as http:
            for path in (dashboard.PATH_DASHBOARD, dashboard.PATH_SHOP):
                async with http.get(url + path, **ask) as r:
                    assert r.status == want, (path, await r.text())
                    if want == 200:
                        assert "<canvas" in await r.text() or "shop" in await r.text()
            async with http.get(url + "/dashboard/static/chart.min.js") as r:  # static files are not secret
                assert r.status == 200 and "Chart.js v3" in (await r.text())[:200]
    finally:
        await runner.cleanup()


async def test_sidecar_root_redirects_to_the_dashboard_when_told_where_it_is():
    for cfg, want in ((SidecarConfig(dashboard_url="http://127.0.0.1:9/dashboard"), 302), (SidecarConfig(), 404)):
        runner, url = await _serve(sidecar_app(cfg))
        try:
            async with ClientSession() as http, http.get(url + "/", allow_redirects=False) as r:
                assert r.status == want
                if want == 302:
                    assert r.headers["Location"] == "http://127.0.0.1:9/dashboard"
                else:
                    assert (await r.json())["status"] == 404
        finally:
            await runner.cleanup()


def test_the_vendored_chart_library_is_package_data_with_its_license_header():
    head = (dashboard.STATIC / "chart.min.js").read_text()[:200]
    assert "Chart.js v3.9.1" in head and "MIT License" in head
    assert "libjs-chart.js" in (dashboard.STATIC / "README").read_text()
    for name in ("dashboard.html", "dashboard.js", "shop.html", "shop.js", "common.js", "dashboard.css"):
        assert (dashboard.STATIC / name).is_file()


def _browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(f"needs chromium and chromedriver (Debian chromium, chromium-driver): chromium={CHROMIUM}, "
                    f"chromedriver={CHROMEDRIVER}")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        pytest.skip(f"needs selenium (the dev extras): {e}")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,2600"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def _wait(what: str, fn, timeout: float):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def _errors(driver) -> list[dict]:  # noqa: ANN001
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


EMPTY_CHARTS = """
return Object.entries(window.recofastCharts || {}).filter(function (kv) {
  var need = kv[1].config.type === "line" ? 3 : 1;  /* a line needs points to be drawn */
  return !kv[1].data.datasets.some(function (d) {
    return d.data.filter(function (v) { return v !== null && v !== undefined && !(typeof v === "number" && isNaN(v)); }).length >= need;
  });
}).map(function (kv) { return kv[0]; });
"""


DRIFT_DETAIL = "live hit rate dropped from 0.412 to 0.301 (ADWIN, 812 observations)"
WITH_A_DRIFT_MARK = """
(function () {
  var real = window.fetch;
  window.fetch = function (url, opts) {
    return real.call(this, url, opts).then(function (r) {
      if (String(url).indexOf("/dashboard/data") < 0) return r;
      return r.clone().json().then(function (d) {
        var ts = Date.now() / 1000 - 5;
        d.timeline = (d.timeline || []).concat([
          {ts: ts, kind: "drift", signal: "hit_rate", detail: "%s", before: 0.412, after: 0.301},
          {ts: ts, kind: "adapt", signal: "hit_rate", detail: "adapting for 5000 events"}]);
        return new Response(JSON.stringify(d), {status: r.status, headers: {"Content-Type": "application/json"}});
      });
    });
  };
})();
""" % DRIFT_DETAIL
PAGE_SHOWS_DRIFT = """
var c = (window.recofastCharts || {})["c-timeline"];
var dots = c ? c.data.datasets.filter(function (d) { return d.label === "drift"; }).reduce(function (n, d) { return n + d.data.length; }, 0) : 0;
var items = Array.prototype.filter.call(document.querySelectorAll("#timeline li"), function (li) { return / drift /.test(li.textContent); });
return dots > 0 && items.length > 0 && items[0].textContent;
"""


def test_the_dashboard_data_carries_the_engine_timeline_newest_last():
    e = SimpleNamespace(timeline=[{"ts": 20.0, "kind": "adapt", "detail": "adapting"},
                                  {"ts": 10.0, "kind": "drift", "detail": DRIFT_DETAIL, "signal": "hit_rate"}])
    marks = dashboard.timeline(e, [{"time": 15.0, "version": 3, "stream_seq": 99}])  # type: ignore[arg-type]
    assert [m["kind"] for m in marks] == ["drift", "checkpoint", "adapt"]
    assert marks[0]["detail"] == DRIFT_DETAIL and marks[0]["signal"] == "hit_rate"


@pytest.mark.timeout(120)
def test_dashboard_and_shop_in_a_real_browser(tmp_path):
    artifacts = Path(os.environ.get("RECOFAST_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    driver = _browser()
    data = tmp_path / "stack"
    data.mkdir()
    experiments = read_experiments(ROOT / "examples" / "demo-experiment.toml")
    cfg = data / "recofast.toml"
    cfg.write_text(engine_toml({"refresh_seconds": 3.0, "segment_seconds": 0.2, "fetch_timeout": 0.05, "lmdb_sync": False},
                               {"dim": 16}, experiments))
    events, catalog = data / "history.jsonl", data / "catalog.jsonl"
    write_demo_events(events, events=3000, users=60, items=120, catalog=catalog)
    stop = threading.Event()
    try:
        with Stack(data, port=free_port(), engine_config=cfg, log_dir=data) as stack:
            asyncio.run(_warm(stack, events, catalog))

            def shop() -> None:
                from recofast.evaluation.shoppers import Shoppers
                from recofast.evaluation.simulate import Shop

                people = Shoppers(Shop.from_seed(0, users=60, items=120, events=3000), stack.sidecar_url, seed=1,
                                  concurrency=4, hours="wall", keep_log=False)
                asyncio.run(people.run_continuous(rate=150, should_stop=stop.is_set))

            shoppers = threading.Thread(target=shop, daemon=True)
            shoppers.start()

            # The sidecar's root leads to the dashboard.
            with urllib.request.urlopen(stack.sidecar_url + "/", timeout=5) as r:
                assert r.url == stack.dashboard_url and r.status == 200

            # Rendered at 0.6 of its size, so the screenshot stays small (1400 CSS pixels wide, 840 in the PNG).
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                   {"width": 1400, "height": 1900, "deviceScaleFactor": 0.6, "mobile": False})
            driver.get(stack.sidecar_url + "/")
            empty: list[str] = []

            def charts_full() -> bool:
                empty[:] = driver.execute_script(EMPTY_CHARTS)
                return not empty

            try:
                _wait("every chart to have data", charts_full, 75)
            finally:
                driver.save_screenshot(str(artifacts / "dashboard.png"))
            assert not empty, empty
            assert "live" in driver.find_element("id", "status").text
            assert _errors(driver) == []

            # The shop: a shopper of a personalised variant, click items until its list changes.
            exps = parse(tomllib.loads(experiments)["experiments"])
            user = next(f"shopper{i}" for i in range(60) if assign(exps, f"shopper{i}")[1].name == "recofast")
            driver.get(f"{stack.engine_url}/shop?sidecar={stack.sidecar_url}")
            box = driver.find_element("id", "user")
            box.clear()
            box.send_keys(user)
            driver.find_element("id", "load").click()
            items = driver.find_element("id", "items")
            _wait("the shopper's list", lambda: driver.find_elements("css selector", f'#items li[data-recofast-user="{user}"]'), 15)
            before = [li.get_attribute("data-recofast-item") for li in driver.find_elements("css selector", "#items li")]
            assert before and all(li.find_element("class name", "reason").text for li in driver.find_elements("css selector", "#items li"))
            for n in range(6):
                fetched = int(items.get_attribute("data-lists"))
                driver.find_elements("css selector", "#items li")[min(n, len(before) - 1)].click()
                _wait("the list to be fetched again", lambda: int(items.get_attribute("data-lists")) > fetched, 10)
                if int(items.get_attribute("data-changed")) > 0:
                    break
                time.sleep(0.5)
            after = [li.get_attribute("data-recofast-item") for li in driver.find_elements("css selector", "#items li")]
            assert int(items.get_attribute("data-changed")) > 0 and after != before, (before, after)
            driver.save_screenshot(str(artifacts / "shop.png"))
            assert _errors(driver) == []

            # A drift alarm on the engine's timeline is drawn on the page's timeline (chart and list):
            # the page's answers of /dashboard/data get one appended, as the engine's monitor marks it.
            driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": WITH_A_DRIFT_MARK})
            driver.get(stack.sidecar_url + "/")
            _wait("the drift on the page's timeline", lambda: driver.execute_script(PAGE_SHOWS_DRIFT), 15)
            assert _errors(driver) == []

            # The clicks reached the engine's closed loop, attributed to the shop's lists.
            with urllib.request.urlopen(stack.engine_url + "/dashboard/data", timeout=5) as r:
                body = json.load(r)
            assert body["loop"]["total"]["clicks"] > 0 and body["model_version"] >= 1
            stop.set()
            shoppers.join(15)
    finally:
        stop.set()
        driver.quit()
