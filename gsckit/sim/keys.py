"""What keys look like: countries, devices, appearances, queries, page URLs and hour stamps.

Queries and pages are integers inside the simulator (a query's popularity rank; a page id) and
become text only for the rows a request returns, so a day of 200,000 rows costs integer work.
Both mappings are bijections, so distinct integers are always distinct keys.
"""

from __future__ import annotations

import hashlib
import re
from datetime import date, datetime, timedelta, timezone, tzinfo
from functools import lru_cache

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
MODIFIERS = (
    "red", "blue", "black", "white", "green", "grey", "pink", "navy", "orange", "purple",
    "waterproof", "lightweight", "cheap", "best", "womens", "mens", "kids", "vegan", "leather",
    "wide", "vintage", "organic", "wireless", "foldable", "insulated", "breathable", "compact",
    "durable", "ergonomic", "recycled", "premium", "classic", "retro", "slim", "warm", "cool",
    "quiet", "fast", "soft", "sturdy",
)
PRODUCTS = (
    "running shoes", "trail shoes", "hiking boots", "rain jacket", "yoga mat", "water bottle",
    "backpack", "sneakers", "sandals", "socks", "headphones", "smart watch", "tent",
    "sleeping bag", "bike helmet", "cycling gloves", "ski goggles", "swim goggles",
    "tennis racket", "golf balls", "fleece", "hoodie", "leggings", "shorts", "beanie",
    "camping stove", "head torch", "trekking poles", "climbing rope", "chalk bag", "duffel bag",
    "gym bag", "foam roller", "jump rope", "dumbbells", "kettlebell", "resistance bands",
    "fitness tracker", "sunglasses", "sun hat", "thermal top", "base layer", "down jacket",
    "softshell", "gaiters", "insoles", "laces", "shoe cleaner", "waist pack", "hydration vest",
)
SECTIONS = ("blog", "products", "guides", "shop", "reviews", "news", "help", "collections",
            "deals", "stories")
# A qualifier and the site folder whose page answers it (numeric tails are sizes: products).
_QUALIFIERS = (
    ("", "products"), ("sale", "deals"), ("review", "reviews"), ("reviews", "reviews"),
    ("near me", "shop"), ("for men", "collections"), ("for women", "collections"),
    ("for kids", "collections"), ("online", "shop"), ("uk", "shop"), ("size guide", "guides"),
    ("discount code", "deals"), ("price", "products"), ("deals", "deals"), ("outlet", "deals"),
    ("best price", "deals"), ("amazon", "blog"), ("reddit", "blog"), ("how to clean", "guides"),
    ("vs", "blog"), ("clearance", "deals"), ("black friday", "deals"),
    ("free shipping", "help"), ("in stock", "shop"), ("2026", "news"),
)
TAILS = tuple(q for q, _ in _QUALIFIERS) + tuple(str(k) for k in range(1, 501 - len(_QUALIFIERS)))
_TAIL_SECTION = tuple(SECTIONS.index(s) for _, s in _QUALIFIERS) + (SECTIONS.index("products"),) * (
    len(TAILS) - len(_QUALIFIERS))
PAGE_VARIANTS = ("", "-2", "-3", "-guide", "-sizes")

M, P, T, S, V = len(MODIFIERS), len(PRODUCTS), len(TAILS), len(SECTIONS), len(PAGE_VARIANTS)
QUERY_SPACE = M * P * T
"""Distinct plain query phrases (modifier, product, tail): also the most query ranks a site has."""
BRAND_EVERY = 25
"""Every 25th query rank (1, 26, 51, ...) is a brand query; rank 0 is the brand term itself."""
_BRAND_SPACE = P * T
HOME_PAGE = S * M * P * V
"""The page id of the property's root URL; ids below it are folder/slug/variant pages."""
SLOTS = 4
"""Pages a query can show: its own page (slot 0) and three competitors (cannibalization)."""
_TABLE_CHUNK = 1 << 16

_SECOND_LEVEL = {"co", "com", "org", "net", "ac", "gov", "edu", "ne", "or"}


def _salt(*parts: object) -> int:
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big")


def _coprime(value: int, modulus: int) -> int:
    """A multiplier coprime with ``modulus`` (a power-of-2-and-5 product) derived from value."""
    value = value % modulus | 1
    return value + 2 if value % 5 == 0 else value


def site_root(site: str) -> str:
    """Where the property's pages live: ``sc-domain:x.com`` → ``https://x.com/``."""
    if site.startswith("sc-domain:"):
        return f"https://{site[len('sc-domain:'):]}/"
    return site if site.endswith("/") else site + "/"


def brand_term(site: str) -> str:
    """The brand a property's users type: its registrable name (``sc-domain:shop.example.co.uk``
    and ``https://www.example.com/`` both give ``example``)."""
    host = re.sub(r"^(sc-domain:|https?://)", "", site).split("/")[0].split(":")[0].lower()
    labels = [label for label in host.split(".") if label and label != "www"]
    if len(labels) >= 3 and labels[-2] in _SECOND_LEVEL:
        return labels[-3]
    return labels[-2] if len(labels) >= 2 else (labels[0] if labels else "brand")


def _affine(site: str, modulus: int, what: str) -> tuple[int, int]:
    return _coprime(_salt(site, what, "a"), modulus), _salt(site, what, "b") % modulus


def is_brand(rank: pl.Expr) -> pl.Expr:
    """Whether a query rank is a brand query."""
    return (rank == 0) | ((rank % BRAND_EVERY == 1) & (rank < BRAND_EVERY * _BRAND_SPACE))


def _vocabulary(rank: pl.Expr, site: str) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(modifier, product, tail) indices of a rank's plain phrase: a per-site bijection that
    gives the 50,000 most popular queries a word qualifier and the rest a number (a size)."""
    block_size = M * P * len(_QUALIFIERS)
    a, b = _affine(site, block_size, "query")
    rank = rank.cast(pl.Int64)
    v = (rank % block_size * a + b) % block_size
    return v % M, v // M % P, v // (M * P) + rank // block_size * len(_QUALIFIERS)


def _brand_vocabulary(rank: pl.Expr, site: str) -> tuple[pl.Expr, pl.Expr]:
    """(product, tail) indices of a brand rank's phrase: a bijection on brand ranks, word
    qualifiers first."""
    block_size = P * len(_QUALIFIERS)
    a, b = _affine(site, block_size, "brand")
    k = rank.cast(pl.Int64) // BRAND_EVERY
    v = (k % block_size * a + b) % block_size
    return v % P, (v // P + k // block_size * len(_QUALIFIERS)) % T  # in range for any rank


def query_text(ranks: pl.Series, site: str) -> pl.Series:
    """The query phrase of each rank (null stays null), from a per-site table of phrases."""
    top = ranks.max()
    if top is None:
        return pl.Series("query", [None] * ranks.len(), dtype=pl.String)
    size = _TABLE_CHUNK
    while size <= int(top):  # type: ignore[arg-type]
        size *= 2
    return _query_table(site, min(size, QUERY_SPACE)).gather(ranks)


@lru_cache(maxsize=16)
def _query_table(site: str, size: int) -> pl.Series:
    return _phrases(pl.arange(0, size, eager=True, dtype=pl.Int64), site)


def _phrases(ranks: pl.Series, site: str) -> pl.Series:
    """The query phrase of each rank: the brand, the brand plus a product, or a plain phrase."""
    brand = brand_term(site)
    rank = pl.col("r")
    m, p, t = _vocabulary(rank, site)
    bp, bt = _brand_vocabulary(rank, site)
    tails = pl.Series([f" {t}" if t else "" for t in TAILS])
    frame = pl.DataFrame({"r": ranks.cast(pl.Int64)}).with_columns(
        m=m, p=p, t=t, bp=bp, bt=bt, brand=is_brand(rank))
    parts = pl.DataFrame({
        "modifier": pl.Series(MODIFIERS).gather(frame["m"]),
        "product": pl.Series(PRODUCTS).gather(frame["p"]),
        "tail": tails.gather(frame["t"]),
        "bproduct": pl.Series(PRODUCTS).gather(frame["bp"]),
        "btail": tails.gather(frame["bt"]),
        "r": frame["r"],
        "brand": frame["brand"],
    })
    return parts.select(
        pl.when(pl.col("r") == 0).then(pl.lit(brand))
        .when(pl.col("brand")).then(pl.concat_str(pl.lit(brand + " "), "bproduct", "btail"))
        .otherwise(pl.concat_str("modifier", pl.lit(" "), "product", "tail"))
        .alias("query"))["query"]


def page_id(rank: pl.Expr, slot: pl.Expr, site: str) -> pl.Expr:
    """The page a (query rank, slot) shows: slot 0 the page for the phrase (the home page for the
    brand term), slot 1 and 3 the same slug in other folders, slot 2 a variant of the slug."""
    m, p, t = _vocabulary(rank, site)
    bp, bt = _brand_vocabulary(rank, site)
    brand = is_brand(rank)
    p = pl.when(brand).then(bp).otherwise(p)
    t = pl.when(brand).then(bt).otherwise(t)
    section = (pl.lit(pl.Series(_TAIL_SECTION)).gather(t)
               + pl.lit(pl.Series([0, 3, 0, 6])).gather(slot)) % S
    variant = (slot == 2).cast(pl.Int64) * (1 + rank.cast(pl.Int64) % (V - 1))
    page = section + S * (m + M * (p + P * variant))
    return pl.when((rank == 0) & (slot == 0)).then(HOME_PAGE).otherwise(page).cast(pl.Int32)


def page_text(ids: pl.Series, site: str) -> pl.Series:
    """The URL of each page id under the property's root, from a per-root table of URLs."""
    return _page_table(site_root(site)).gather(ids)


@lru_cache(maxsize=16)
def _page_table(root: str) -> pl.Series:
    ids = pl.arange(0, HOME_PAGE + 1, eager=True, dtype=pl.Int64)
    index = ids.clip(0, HOME_PAGE - 1)
    slugs = pl.Series([name.replace(" ", "-") for name in PRODUCTS])
    frame = pl.DataFrame({
        "home": ids == HOME_PAGE,
        "s": pl.Series(SECTIONS).gather(index % S),
        "m": pl.Series(MODIFIERS).gather(index // S % M),
        "p": slugs.gather(index // (S * M) % P),
        "v": pl.Series(PAGE_VARIANTS).gather(index // (S * M * P)),
    })
    return frame.select(
        pl.when(pl.col("home")).then(pl.lit(root))
        .otherwise(pl.concat_str(pl.lit(root), "s", pl.lit("/"), "m", pl.lit("-"), "p", "v",
                                 pl.lit("/")))
        .alias("page"))["page"]


def pacific() -> tzinfo:
    """Search Console's time zone (a fixed PST offset if this machine has no tz database)."""
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo("America/Los_Angeles")
    except Exception:  # no tz database: PST is what Search Console uses most of the year
        return timezone(timedelta(hours=-8))


@lru_cache(maxsize=512)
def hour_keys(day: date) -> tuple[str, ...]:
    """The 24 hour keys of ``day`` in Pacific time, e.g. ``2026-11-20T05:00:00-08:00``."""
    tz = pacific()
    return tuple(datetime(day.year, day.month, day.day, h, tzinfo=tz).isoformat()
                 for h in range(24))
