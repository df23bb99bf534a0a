"""Makes docs/dashboard.png, the README's dashboard screenshot: a small real stack (NATS, the
engine, the sidecar) with simulated shoppers, of which half switch taste at session
``--drift-at``; waits until the engine's timeline holds a drift alarm of the live hit rate
raised after the switch and the adaptation that follows it, then opens the dashboard in
headless Chromium (selenium, as tests/test_dashboard.py does), waits until the page's timeline
shows the drift, and saves the screenshot (rendered at 0.6 of its size).

The engine's configuration of this run only lowers ``drift_min_observations`` and
``drift_cooldown`` (see ``ENGINE``) so that the alarm comes within a couple of minutes.

    python docs/make_screenshot.py [--out docs/dashboard.png] [--drift-at 1500]

Prints what the shoppers did, when the tastes switched and what the engine's timeline says."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from recofast.engine.stack import Stack, _warm, engine_toml, free_port, read_experiments, write_demo_events

ROOT = Path(__file__).resolve().parents[1]
USERS, ITEMS, HISTORY = 200, 300, 6000
ENGINE = {"refresh_seconds": 3.0, "segment_seconds": 0.2, "fetch_timeout": 0.05, "lmdb_sync": False,
          "drift_min_observations": 100, "drift_cooldown": 30.0}
"""The engine of this run: the defaults but for quick refreshes and the drift options
(defaults 200 observations and 300 s)."""

PAGE_SHOWS_DRIFT = """
var c = (window.recofastCharts || {})["c-timeline"];
var dots = c ? c.data.datasets.filter(function (d) { return d.label === "drift"; }).reduce(function (n, d) { return n + d.data.length; }, 0) : 0;
var items = Array.prototype.filter.call(document.querySelectorAll("#timeline li"), function (li) { return / drift /.test(li.textContent); });
return dots > 0 && items.length > 0;
"""


def _data(url: str) -> dict:
    with urllib.request.urlopen(url + "/dashboard/data", timeout=5) as r:
        return json.load(r)


def _wait(what: str, fn, timeout: float):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.5)


def _browser(chromium: str, chromedriver: str):  # noqa: ANN202
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,2600"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(chromedriver), options=opts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "dashboard.png"))
    p.add_argument("--drift-at", type=int, default=1500, metavar="SESSION")
    p.add_argument("--rate", type=float, default=400.0, help="events per second of the shoppers")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the drift alarm")
    args = p.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not (chromium and chromedriver):
        print("needs chromium and chromedriver (Debian chromium, chromium-driver)", file=sys.stderr)
        return 2

    from recofast.evaluation.shoppers import Shoppers
    from recofast.evaluation.simulate import Shop

    with tempfile.TemporaryDirectory(prefix="recofast-screenshot-") as tmp:
        data = Path(tmp)
        cfg = data / "recofast.toml"
        cfg.write_text(engine_toml(ENGINE, {"dim": 16}, read_experiments(ROOT / "examples" / "demo-experiment.toml"),
                                   comment="docs/make_screenshot.py: lower drift_min_observations and drift_cooldown"))
        events, catalog = data / "history.jsonl", data / "catalog.jsonl"
        write_demo_events(events, events=HISTORY, users=USERS, items=ITEMS, catalog=catalog)
        stop = threading.Event()
        people = Shoppers(Shop.from_seed(0, users=USERS, items=ITEMS, events=HISTORY), "http://unset", seed=1,
                          concurrency=8, hours="wall", keep_log=False, drift_at=args.drift_at)
        t0 = time.monotonic()
        with Stack(data, port=free_port(), engine_config=cfg, log_dir=data) as stack:
            asyncio.run(_warm(stack, events, catalog))
            people.base_url = stack.sidecar_url
            shoppers = threading.Thread(target=lambda: asyncio.run(people.run_continuous(rate=args.rate, should_stop=stop.is_set)),
                                        daemon=True)
            shoppers.start()
            try:
                def drift_and_adapt() -> list[dict] | None:
                    if people.drift is None:
                        return None
                    after = [m for m in _data(stack.engine_url)["timeline"] if float(m["ts"]) >= people.drift["time"]]
                    drift = [m for m in after if m["kind"] == "drift" and m.get("signal") == "hit_rate"]
                    if drift and any(m["kind"] == "adapt" and m["ts"] >= drift[0]["ts"] for m in after):
                        return after
                    return None

                after = _wait("a drift alarm and an adaptation on the engine's timeline", drift_and_adapt, args.timeout)
                before = [m for m in _data(stack.engine_url)["timeline"] if float(m["ts"]) < people.drift["time"]]
                detected = next(m for m in after if m["kind"] == "drift" and m.get("signal") == "hit_rate")
                at_session, at_events = people._number, people.counters["events_posted"]
                driver = _browser(chromium, chromedriver)
                try:
                    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                           {"width": 1400, "height": 1900, "deviceScaleFactor": 0.6, "mobile": False})
                    driver.get(stack.sidecar_url + "/")
                    _wait("the page's timeline to show the drift", lambda: driver.execute_script(PAGE_SHOWS_DRIFT), 30)
                    time.sleep(4)  # a few polls, so the rate charts have lines
                    driver.save_screenshot(args.out)
                finally:
                    driver.quit()
            finally:
                stop.set()
                shoppers.join(15)
        print(json.dumps({
            "seconds": round(time.monotonic() - t0, 1), "shoppers": USERS, "items": ITEMS, "history_events": HISTORY,
            "drift": people.drift, "detected": detected,
            "noticed_at": {"session": at_session, "events_posted": at_events},
            "timeline_before_drift": [{k: m.get(k) for k in ("ts", "kind", "signal", "detail")} for m in before
                                      if m["kind"] != "checkpoint"],
            "timeline_after_drift": [{k: m.get(k) for k in ("ts", "kind", "signal", "detail")} for m in after],
            "sessions": people.counters["sessions"], "out": args.out, "bytes": Path(args.out).stat().st_size,
        }, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
