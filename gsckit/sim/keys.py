"""What keys look like: countries, devices, appearances, queries, page URLs and hour stamps."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

import polars as pl

COUNTRIES = (
    "usa", "gbr", "can", "aus", "ind", "deu", "fra", "esp", "ita", "nld", "bra", "mex", "jpn",
    "kor", "chn", "pol", "swe", "nor", "dnk", "fin", "irl", "bel", "che", "aut", "prt", "grc",
    "tur", "isr", "are", "sau", "zaf", "nga", "egy", "ken", "arg", "chl", "col", "per", "phl",
    "idn", "mys", "sgp", "tha", "vnm", "pak", "bgd", "nzl", "cze", "hun", "rou", "ukr", "srb",
    "hrv", "svk", "svn", "ltu", "lva", "est", "bgr", "isl", "lux", "mlt", "cyp", "mdv",
)
DEVICES = ("DESKTOP", "MOBILE", "TABLET")
SEARCH_APPEARANCES = (
    "AMP_BLUE_LINK", "AMP_TOP_STORIES", "REVIEW_SNIPPET", "VIDEO", "FAQ_RICH_RESULT",
    "PRODUCT_SNIPPETS", "MERCHANT_LISTINGS", "TRANSLATED_RESULT",
)
_MODIFIERS = (
    "red", "blue", "black", "white", "green", "grey", "pink", "navy", "orange", "purple",
    "waterproof", "lightweight", "cheap", "best", "womens", "mens", "kids", "vegan", "leather",
    "wide", "vintage", "organic", "wireless", "foldable", "insulated", "breathable", "compact",
    "durable", "ergonomic", "recycled", "premium", "classic", "retro", "slim", "warm", "cool",
    "quiet", "fast", "soft", "sturdy",
)
_PRODUCTS = (
    "running shoes", "trail shoes", "hiking boots", "rain jacket", "yoga mat", "water bottle",
    "backpack", "sneakers", "sandals", "socks", "headphones", "smart watch", "tent",
    "sleeping bag", "bike helmet", "cycling gloves", "ski goggles", "swim goggles",
    "tennis racket", "golf balls", "fleece", "hoodie", "leggings", "shorts", "beanie",
    "camping stove", "head torch", "trekking poles", "climbing rope", "chalk bag", "duffel bag",
    "gym bag", "foam roller", "jump rope", "dumbbells", "kettlebell", "resistance bands",
    "fitness tracker", "sunglasses", "sun hat", "thermal top", "base layer", "down jacket",
    "softshell", "gaiters", "insoles", "laces", "shoe cleaner", "waist pack", "hydration vest",
)
_QUALIFIERS = ("", "sale", "review", "reviews", "near me", "for men", "for women", "for kids",
               "online", "uk", "size guide", "discount code", "price", "deals", "outlet",
               "best price", "amazon", "reddit", "how to clean", "vs", "clearance", "black friday",
               "free shipping", "in stock", "2026")
_QUERY_TAILS = _QUALIFIERS + tuple(str(k) for k in range(1, 501 - len(_QUALIFIERS)))
_SECTIONS = ("blog", "products", "guides", "shop", "reviews", "news", "help", "collections",
             "deals", "stories")
_PAGE_VARIANTS = ("", "-2", "-3", "-guide", "-sizes")

_SNAKE = {"date": "date", "query": "query", "page": "page", "country": "country",
          "device": "device", "searchAppearance": "search_appearance", "hour": "hour"}
_CARDINALITY = {
    "date": 1,
    "hour": 24,
    "query": len(_MODIFIERS) * len(_PRODUCTS) * len(_QUERY_TAILS),
    "page": len(_SECTIONS) * len(_MODIFIERS) * len(_PRODUCTS) * len(_PAGE_VARIANTS),
    "country": len(COUNTRIES),
    "device": len(DEVICES),
    "searchAppearance": len(SEARCH_APPEARANCES),
}


def _site_root(site: str) -> str:
    """Where the property's pages live: ``sc-domain:x.com`` → ``https://x.com/``."""
    if site.startswith("sc-domain:"):
        return f"https://{site[len('sc-domain:'):]}/"
    return site if site.endswith("/") else site + "/"


def _queries(index: pl.Series) -> pl.Series:
    """Query phrases for query indices (bijective): modifier, product, optional tail."""
    m, p = len(_MODIFIERS), len(_PRODUCTS)
    tails = pl.Series([f" {t}" if t else "" for t in _QUERY_TAILS])
    return pl.DataFrame({
        "m": pl.Series(_MODIFIERS).gather(index % m),
        "p": pl.Series(_PRODUCTS).gather(index // m % p),
        "t": tails.gather(index // (m * p)),
    }).select(pl.concat_str("m", pl.lit(" "), "p", "t").alias("query"))["query"]


def _pages(index: pl.Series, root: str) -> pl.Series:
    """Page URLs under ``root`` for page indices (bijective): section, slug, variant."""
    s, m, p = len(_SECTIONS), len(_MODIFIERS), len(_PRODUCTS)
    products = pl.Series([name.replace(" ", "-") for name in _PRODUCTS])
    return pl.DataFrame({
        "s": pl.Series(_SECTIONS).gather(index % s),
        "m": pl.Series(_MODIFIERS).gather(index // s % m),
        "p": products.gather(index // (s * m) % p),
        "v": pl.Series(_PAGE_VARIANTS).gather(index // (s * m * p)),
    }).select(pl.concat_str(pl.lit(root), "s", pl.lit("/"), "m", pl.lit("-"), "p", "v",
                            pl.lit("/")).alias("page"))["page"]


@lru_cache(maxsize=512)
def _hour_keys(day: date) -> tuple[str, ...]:
    """The 24 hour keys of ``day`` in Pacific time, e.g. ``2026-11-20T05:00:00-08:00``."""
    try:
        from zoneinfo import ZoneInfo

        tz: Any = ZoneInfo("America/Los_Angeles")
    except Exception:  # no tz database: PST is what Search Console uses most of the year
        tz = timezone(timedelta(hours=-8))
    return tuple(datetime(day.year, day.month, day.day, h, tzinfo=tz).isoformat()
                 for h in range(24))

