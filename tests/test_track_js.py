"""track.js in a real browser (headless Chromium): a shop page renders a served list with
``data-recofast-item`` / ``data-recofast-rec``; a click on an item reaches the sidecar as a
``click`` event carrying the list's ``rec_id``, and a purchase tracked later carries it too."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time

import nats
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from recofast.engine.streams import ensure_streams
from recofast_sidecar.config import SidecarConfig
from recofast_sidecar.protocol.names import EVENTS_SUBJECTS, STREAM

from test_sidecar import get_json, sidecar, write_store

pytestmark = pytest.mark.timeout(90)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

PAGE = """<!doctype html><html><body>
<ul id="recs"></ul>
<script src="{sidecar}/v1/track.js" data-user="u1"></script>
<script>
  var list = {answer};
  var ul = document.getElementById("recs");
  list.items.forEach(function (x) {{
    var li = document.createElement("li");
    li.innerHTML = '<a href="#" data-recofast-item="' + x.item + '" data-recofast-rec="' + list.rec_id + '"><b>' + x.item + '</b></a>';
    ul.appendChild(li);
  }});
  /* The shopper clicks the second item (on the text inside the link), then buys it. */
  ul.querySelectorAll("b")[1].click();
  recofast.track("purchase", "u1", list.items[1].item, {{price: 12.5, qty: 1}});
  recofast.track("view", "u1", "elsewhere");
  document.body.setAttribute("data-done", sessionStorage.getItem("recofast.rec"));
</script></body></html>"""


@pytest.fixture
def store(tmp_path):  # noqa: ANN001, ANN201
    write_store(tmp_path / "lmdb")
    return str(tmp_path / "lmdb")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (make setup installs the Debian package chromium)")
async def test_a_click_on_a_rendered_item_carries_its_lists_rec_id(store, nats_url):
    async with await nats.connect(nats_url) as nc:
        js = nc.jetstream()
        await ensure_streams(js)
        async with sidecar(SidecarConfig(lmdb=store, nats=nats_url)) as c:
            deadline = time.monotonic() + 10
            while (await c.get("/readyz")).status != 200:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            answer = await get_json(c, "/v1/recommendations/u1?k=3")
            base = str(c.make_url("")).rstrip("/")

            async def page(request: web.Request) -> web.Response:
                return web.Response(text=PAGE.format(sidecar=base, answer=json.dumps(answer)), content_type="text/html")

            app = web.Application()
            app.router.add_get("/shop", page)
            shop = TestServer(app)
            await shop.start_server()
            try:
                proc = await asyncio.create_subprocess_exec(
                    CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
                    "--virtual-time-budget=5000", "--dump-dom", str(shop.make_url("/shop")),
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                )
                dom, _ = await asyncio.wait_for(proc.communicate(), 60)
            finally:
                await shop.close()
            assert b"data-done" in dom, dom[-2000:]
            sub = await js.pull_subscribe(EVENTS_SUBJECTS, durable="t", stream=STREAM)
            got: list[dict] = []
            deadline = time.monotonic() + 15
            while len(got) < 3 and time.monotonic() < deadline:
                try:
                    for m in await sub.fetch(10, timeout=1):
                        d = json.loads(m.data)
                        got.extend(d if isinstance(d, list) else [d])
                except nats.errors.TimeoutError:
                    pass
            by_type = {e["type"]: e for e in got}
            second = answer["items"][1]["item"]
            assert set(by_type) == {"click", "purchase", "view"}, got
            assert by_type["click"]["item"] == second and by_type["click"]["rec_id"] == answer["rec_id"]
            assert by_type["click"]["user"] == "u1"
            assert by_type["purchase"]["rec_id"] == answer["rec_id"] and by_type["purchase"]["price"] == 12.5
            assert "rec_id" not in by_type["view"]  # an item no list showed
