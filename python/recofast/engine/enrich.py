"""Enrichment of decoded events: device type from the user agent, hour of day and weekday in
the shop's time zone, region from the country or the coordinates, weather from a pluggable
provider, and the popularity segment each event counts in.

A value the producer sent in ``context`` wins over what the engine would derive.

>>> from recofast_sidecar.protocol.events import make_event
>>> en = Enricher(timezone="Europe/London", weather=StaticWeatherProvider({"europe-west": "rain"}))
>>> ev = make_event("e1", "view", "u1", "mug", ts_ms=1_700_000_000_000,
...                 context={"ua": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148", "country": "GB"})
>>> b = en.enrich([ev])
>>> b.device[0], int(b.hour[0]), int(b.weekday[0]), b.region[0], b.weather[0]
('mobile', 22, 1, 'europe-west', 'rain')
>>> b.segment[0]
'country=GB|device=mobile|hour=evening'
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import numpy as np
from recofast_sidecar.protocol import events as ev
from recofast_sidecar.protocol.context import segment_of
from recofast_sidecar.protocol.events import Event

log = logging.getLogger("recofast.engine.enrich")


# -- device ---------------------------------------------------------------------------------

_BOT = re.compile(r"bot|crawl|spider|slurp|headless|python-requests|curl/", re.I)
_TABLET = re.compile(r"ipad|tablet|kindle|silk|playbook|(android(?!.*mobile))", re.I)
_MOBILE = re.compile(r"mobi|iphone|ipod|android|blackberry|opera mini|windows phone|iemobile", re.I)
_TV = re.compile(r"smart-?tv|hbbtv|appletv|googletv|tizen|webos|roku", re.I)


def device_from_ua(ua: str | None) -> str:
    """``mobile``, ``tablet``, ``desktop``, ``tv``, ``bot`` or ``unknown``.

    >>> device_from_ua("Mozilla/5.0 (iPad; CPU OS 16_0 like Mac OS X)")
    'tablet'
    >>> device_from_ua("Mozilla/5.0 (Linux; Android 14; Pixel 8) Mobile Safari/537.36")
    'mobile'
    >>> device_from_ua("Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"), device_from_ua(None)
    ('desktop', 'unknown')
    """
    if not ua:
        return "unknown"
    if _BOT.search(ua):
        return "bot"
    if _TV.search(ua):
        return "tv"
    if _TABLET.search(ua):
        return "tablet"
    if _MOBILE.search(ua):
        return "mobile"
    return "desktop"


# -- region ---------------------------------------------------------------------------------

# Country (ISO 3166 alpha-2 code or the English name shop logs use) → region.
_REGION_COUNTRIES: dict[str, tuple[str, str]] = {
    "europe-west": (
        "GB IE FR BE NL LU DE AT CH PT ES IT MT IS NO DK SE FI",
        "United Kingdom|EIRE|Ireland|France|Belgium|Netherlands|Germany|Austria|Switzerland|"
        "Portugal|Spain|Italy|Malta|Iceland|Norway|Denmark|Sweden|Finland|Channel Islands",
    ),
    "europe-east": ("PL CZ SK HU RO BG GR CY LT LV EE SI HR RS UA", "Poland|Czech Republic|Greece|Cyprus|Lithuania|European Community"),
    "north-america": ("US CA MX", "USA|United States|Canada|Mexico"),
    "south-america": ("BR AR CL CO PE", "Brazil|Argentina|Chile"),
    "asia-pacific": ("JP CN KR SG HK TW IN AU NZ", "Japan|Singapore|Hong Kong|Australia|New Zealand"),
    "middle-east-africa": (
        "AE SA IL LB BH ZA EG NG KE",
        "United Arab Emirates|Saudi Arabia|Israel|Lebanon|Bahrain|RSA|South Africa",
    ),
}
COUNTRY_REGIONS: dict[str, str] = {
    country: region
    for region, (codes, names) in _REGION_COUNTRIES.items()
    for country in [*codes.split(), *names.split("|")]
}

# Coarse boxes (lat_min, lat_max, lon_min, lon_max) → region, first match wins.
REGION_BOXES: tuple[tuple[float, float, float, float, str], ...] = (
    (35.0, 72.0, -25.0, 15.0, "europe-west"),
    (35.0, 72.0, 15.0, 45.0, "europe-east"),
    (7.0, 84.0, -170.0, -50.0, "north-america"),
    (-57.0, 7.0, -92.0, -30.0, "south-america"),
    (-50.0, 60.0, 60.0, 180.0, "asia-pacific"),
    (-36.0, 42.0, -20.0, 60.0, "middle-east-africa"),
)


def region_of(country: str | None, lat: float | None = None, lon: float | None = None) -> str:
    """The region of a country, else of the coordinates, else ``unknown``.

    >>> region_of("United Kingdom"), region_of(None, 40.7, -74.0), region_of("XX")
    ('europe-west', 'north-america', 'unknown')
    """
    if country:
        r = COUNTRY_REGIONS.get(country) or COUNTRY_REGIONS.get(country.upper())
        if r:
            return r
    if lat is not None and lon is not None:
        for lat0, lat1, lon0, lon1, name in REGION_BOXES:
            if lat0 <= lat <= lat1 and lon0 <= lon <= lon1:
                return name
    return "unknown"


# -- weather --------------------------------------------------------------------------------


class WeatherProvider(Protocol):
    """Answers at once (never blocks the engine): the weather in a region at a time, or None."""

    def weather(self, region: str, ts: float) -> str | None: ...


class StaticWeatherProvider:
    """Weather from a fixed table ``{region: weather}`` (``*`` is the default)."""

    def __init__(self, table: Mapping[str, str] | None = None) -> None:
        self.table = dict(table or {})

    def weather(self, region: str, ts: float) -> str | None:
        return self.table.get(region, self.table.get("*"))


class HttpWeatherProvider:
    """Weather from an HTTP service, cached per region for ``ttl`` seconds.

    :meth:`weather` answers from the cache at once and, when the entry is missing or stale,
    starts a background fetch of ``url.format(region=...)`` (the region percent-escaped;
    expects JSON ``{"weather": ...}``)
    on the engine's event loop. It never blocks; until the first answer it says None.
    """

    def __init__(self, url: str, ttl: float = 600.0, timeout: float = 2.0) -> None:
        self.url, self.ttl, self.timeout = url, ttl, timeout
        self._cache: dict[str, tuple[float, str | None]] = {}  # bounded: see weather()
        self._inflight: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        import aiohttp

        self._loop = asyncio.get_running_loop()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._session is not None:
            await self._session.close()

    def weather(self, region: str, ts: float) -> str | None:
        now = time.monotonic()
        hit = self._cache.get(region)
        if hit is None and len(self._cache) >= 10_000:
            self._cache.clear()
        if (hit is None or now - hit[0] > self.ttl) and region not in self._inflight and self._loop is not None:
            self._inflight.add(region)
            self._loop.call_soon_threadsafe(self._spawn, region)
        return None if hit is None else hit[1]

    def _spawn(self, region: str) -> None:
        t = asyncio.ensure_future(self._fetch(region))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _fetch(self, region: str) -> None:
        try:
            assert self._session is not None
            # The region comes from producers: escaped, it cannot change the URL's shape.
            async with self._session.get(self.url.format(region=urllib.parse.quote(region, safe=""))) as resp:
                body = await resp.json()
            value = body.get("weather") if isinstance(body, dict) else None
            self._cache[region] = (time.monotonic(), None if value is None else str(value))
        except Exception as e:  # a weather outage must never stop learning
            log.warning("weather lookup for %s failed: %s", region, e)
            self._cache[region] = (time.monotonic(), self._cache.get(region, (0.0, None))[1])
        finally:
            self._inflight.discard(region)


# -- the batch ------------------------------------------------------------------------------


@dataclass
class EnrichedBatch:
    """Column lists for a batch of events, in the order given."""

    users: list[str] = field(default_factory=list)
    items: list[str | None] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    ts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    device: list[str] = field(default_factory=list)
    country: list[str] = field(default_factory=list)
    region: list[str] = field(default_factory=list)
    weather: list[str | None] = field(default_factory=list)
    hour: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    weekday: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    segment: list[str] = field(default_factory=list)


class Enricher:
    """Derives context for events. Caches user agents and per-hour time zone offsets, so a
    batch costs a few list comprehensions."""

    def __init__(self, timezone: str = "UTC", weather: WeatherProvider | None = None) -> None:
        self.tz = ZoneInfo(timezone)
        self.weather_provider = weather
        self._ua: dict[str, str] = {}
        self._offsets: dict[int, int] = {}
        self._regions: dict[str | None, str] = {}  # country -> region, for contexts without coordinates
        self._segments: dict[tuple[str, str, int], str] = {}

    def _device(self, ctx) -> str:  # noqa: ANN001
        if ctx is None:
            return "unknown"
        if ctx.device:
            return ctx.device
        ua = ctx.ua
        if not ua:
            return "unknown"
        d = self._ua.get(ua)
        if d is None:
            if len(self._ua) > 20_000:
                self._ua.clear()
            d = self._ua[ua] = device_from_ua(ua)
        return d

    def _offset(self, hour_bucket: int) -> int:
        off = self._offsets.get(hour_bucket)
        if off is None:
            if len(self._offsets) > 100_000:
                self._offsets.clear()
            dt = datetime.fromtimestamp(hour_bucket * 3600, self.tz)
            off = self._offsets[hour_bucket] = int((dt.utcoffset() or timedelta()).total_seconds())
        return off

    def local_hour_weekday(self, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hour of day (0–23) and weekday (0 Monday) of epoch seconds, in the shop's zone."""
        if len(ts) == 0:
            return np.zeros(0, np.int8), np.zeros(0, np.int8)
        # Offsets change at most on the hour; look them up once per distinct UTC hour.
        buckets = np.floor_divide(ts, 3600).astype(np.int64)
        uniq, inv = np.unique(buckets, return_inverse=True)
        offs = np.array([self._offset(int(b)) for b in uniq], dtype=np.int64)[inv]
        local = np.floor(ts).astype(np.int64) + offs
        hour = ((local // 3600) % 24).astype(np.int8)
        weekday = (((local // 86400) + 3) % 7).astype(np.int8)  # 1970-01-01 was a Thursday
        return hour, weekday

    def _region(self, c) -> str:  # noqa: ANN001
        if c is None:
            return "unknown"
        if c.region:
            return c.region
        if c.lat is not None and c.lon is not None:
            return region_of(c.country, c.lat, c.lon)
        r = self._regions.get(c.country)
        if r is None:
            if len(self._regions) > 10_000:
                self._regions.clear()
            r = self._regions[c.country] = region_of(c.country)
        return r

    def _segment(self, key: tuple[str, str, int]) -> str:
        seg = self._segments.get(key)
        if seg is None:
            if len(self._segments) > 100_000:
                self._segments.clear()
            seg = self._segments[key] = segment_of(*key)
        return seg

    @staticmethod
    def _times(events: Sequence[Event], now: float) -> np.ndarray:
        """Event times in seconds (``now`` where missing); epoch-ms numbers in one array
        division, the rest (RFC 3339, None, out-of-range numbers) one by one."""
        raw = [e.ts for e in events]
        if all(type(t) is int or type(t) is float for t in raw):
            try:
                return np.array(raw, dtype=np.float64) / 1000.0
            except OverflowError:
                pass
        return np.array([now if e.ts is None else e.ts_seconds for e in events], dtype=np.float64)

    def enrich(self, events: Sequence[Event], now: float | None = None) -> EnrichedBatch:
        now = time.time() if now is None else now
        ts = self._times(events, now)
        hour, weekday = self.local_hour_weekday(ts)
        ctxs = [e.context for e in events]
        device = [self._device(c) for c in ctxs]
        country = [(c.country or "unknown") if c is not None else "unknown" for c in ctxs]
        region = [self._region(c) for c in ctxs]
        wp = self.weather_provider
        if wp is None:
            weather: list[str | None] = [c.weather or None if c is not None else None for c in ctxs]
        else:
            weather = [
                c.weather if c is not None and c.weather else wp.weather(r, t) for c, r, t in zip(ctxs, region, ts.tolist())
            ]
        segs = self._segment
        segment = [segs(k) for k in zip(country, device, hour.tolist())]
        return EnrichedBatch(
            users=[e.user for e in events],  # type: ignore[misc]
            items=[e.item for e in events],  # type: ignore[misc]
            types=[e.type for e in events],
            ts=ts,
            device=device,
            country=country,
            region=region,
            weather=weather,
            hour=hour,
            weekday=weekday,
            segment=segment,
        )


def context_columns(events: Sequence[ev.Event], b: EnrichedBatch) -> dict[str, Any]:
    """The context of an enriched batch as ``learn_many``'s columns (one value per event,
    None where missing; ``unknown`` placeholders become None; all-None columns are left out).

    >>> from recofast_sidecar.protocol.events import make_event
    >>> from recofast.engine.enrich import Enricher
    >>> es = [make_event("e1", "view", "u1", "mug", ts_ms=0, context={"device": "mobile", "intent": "red mug"}),
    ...       make_event("e2", "view", "u2", "mug", ts_ms=0)]
    >>> cols = context_columns(es, Enricher().enrich(es))
    >>> cols["device"], cols["intent"], cols["hour"].tolist(), "country" in cols
    (['mobile', None], ['red mug', None], [0, 0], False)
    """
    unknown = "unknown"
    cols: dict[str, Any] = {
        "device": [None if d == unknown else d for d in b.device],
        "hour": b.hour,
        "weekday": b.weekday,
        "country": [None if c == unknown else c for c in b.country],
        "region": [None if r == unknown else r for r in b.region],
        "weather": b.weather,
        "intent": [None if e.context is None else e.context.intent for e in events],
    }
    return {f: c for f, c in cols.items() if isinstance(c, np.ndarray) or any(x is not None for x in c)}


# -- the service ----------------------------------------------------------------------------


__all__ = [
    "context_columns",
    "COUNTRY_REGIONS",
    "EnrichedBatch",
    "Enricher",
    "HttpWeatherProvider",
    "StaticWeatherProvider",
    "WeatherProvider",
    "device_from_ua",
    "region_of",
]
