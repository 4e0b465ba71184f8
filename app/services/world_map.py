"""The world as SVG paths, projected on the server from Natural Earth's shapes.

The shapes are the pinned ``world-atlas`` package's 1:110m countries
(TopoJSON, fetched by ``app/static/vendor.py``), decoded here and drawn in
the Natural Earth projection, cut at 84° N and 58° S (no monitor runs in
Antarctica, and the map keeps its height for the inhabited latitudes).
Decoding and projecting take a fraction of a second, once per process: the
drawn map is kept in memory, and drawn again only if the file changes.
Without the file the map is None, and the page says how to fetch it.
"""
from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from app.static.vendor import VENDOR_DIR, WORLD_ATLAS

logger = logging.getLogger(__name__)

ATLAS_FILE = VENDOR_DIR / next(iter(WORLD_ATLAS.files.values()))
FETCH_COMMAND = "python app/static/vendor.py"
WIDTH = 1000.0
NORTH, SOUTH = 84.0, -58.0
# Path coordinates in tenths of a unit; points closer than this to the
# previous one (in tenths) add nothing visible at this scale.
MIN_STEP = 6

Point = tuple[float, float]  # (longitude, latitude) in degrees
Ring = list[Point]


def natural_earth(longitude: float, latitude: float) -> tuple[float, float]:
    """The Natural Earth projection (Šavrič, Patterson, Jenny; as d3-geo's
    ``geoNaturalEarth1``) of a point in degrees, in radians of the unit sphere."""
    lam, phi = math.radians(longitude), math.radians(latitude)
    phi2 = phi * phi
    phi4 = phi2 * phi2
    x = lam * (0.8707 - 0.131979 * phi2 + phi4 * (-0.013791 + phi4 * (0.003971 * phi2 - 0.001529 * phi4)))
    y = phi * (1.007226 + phi2 * (0.015085 + phi4 * (-0.044475 + 0.028874 * phi2 - 0.005916 * phi4)))
    return x, y


SCALE = WIDTH / (2 * natural_earth(180.0, 0.0)[0])
TOP = natural_earth(0.0, NORTH)[1] * SCALE
HEIGHT = round(TOP - natural_earth(0.0, SOUTH)[1] * SCALE, 1)


def project(latitude: float, longitude: float) -> tuple[float, float]:
    """Where a point lies on the map, in its SVG units (x right, y down);
    points north or south of the map are put on its edge."""
    x, y = natural_earth(longitude, min(NORTH, max(SOUTH, latitude)))
    return round(WIDTH / 2 + x * SCALE, 1), round(TOP - y * SCALE, 1)


# --- TopoJSON ------------------------------------------------------------------


def decode_arcs(topology: dict) -> list[list[Point]]:
    """The topology's arcs as absolute coordinates: a quantized topology
    (one with a ``transform``) stores each arc as deltas of integers."""
    transform = topology.get("transform")
    if transform is None:
        return [[(float(x), float(y)) for x, y, *_ in arc] for arc in topology["arcs"]]
    (sx, sy), (tx, ty) = transform["scale"], transform["translate"]
    arcs = []
    for arc in topology["arcs"]:
        x = y = 0
        points = []
        for dx, dy, *_ in arc:
            x += dx
            y += dy
            points.append((x * sx + tx, y * sy + ty))
        arcs.append(points)
    return arcs


def ring(arc_indexes: Iterable[int], arcs: Sequence[list[Point]]) -> Ring:
    """A closed ring from its arcs; ``~i`` (a negative index) is arc ``i``
    reversed. Each arc starts where the previous one ended, so that point
    is taken once."""
    points: Ring = []
    for index in arc_indexes:
        arc = arcs[index] if index >= 0 else arcs[~index][::-1]
        points.extend(arc if not points else arc[1:])
    return points


def polygons(geometry: dict, arcs: Sequence[list[Point]]) -> list[list[Ring]]:
    """A Polygon's or MultiPolygon's rings (outer ring first), per polygon."""
    if geometry.get("type") == "Polygon":
        parts = [geometry["arcs"]]
    elif geometry.get("type") == "MultiPolygon":
        parts = geometry["arcs"]
    else:
        return []
    return [[ring(indexes, arcs) for indexes in polygon] for polygon in parts]


def countries(topology: dict) -> list[tuple[str, list[list[Ring]]]]:
    """Each country of a world-atlas topology: its name and polygons."""
    arcs = decode_arcs(topology)
    return [((geometry.get("properties") or {}).get("name", ""), polygons(geometry, arcs))
            for geometry in topology["objects"]["countries"]["geometries"]]


# --- drawing -------------------------------------------------------------------


def unwrap(points: Ring) -> Ring:
    """The ring without jumps across the antimeridian: longitudes carry on
    past 180° (Fiji, the east of Russia) instead of leaping to -180°."""
    if not points:
        return []
    out = [points[0]]
    shift = 0.0
    for (previous, _), (longitude, latitude) in zip(points, points[1:]):
        if longitude - previous > 180:
            shift -= 360
        elif previous - longitude > 180:
            shift += 360
        out.append((longitude + shift, latitude))
    if abs(out[-1][0] - out[0][0]) > 180:
        # A ring around a pole: close it along the pole.
        pole = 90.0 if sum(lat for _, lat in out) > 0 else -90.0
        out += [(out[-1][0], pole), (out[0][0], pole)]
    return out


def _copies(points: Ring) -> list[Ring]:
    """The ring, and a copy a world's width over for any part beyond 180°
    (the map's outline clips both)."""
    copies = [points]
    longitudes = [lon for lon, _ in points]
    if max(longitudes) > 180:
        copies.append([(lon - 360, lat) for lon, lat in points])
    if min(longitudes) < -180:
        copies.append([(lon + 360, lat) for lon, lat in points])
    return copies


def _tenths(points: Ring) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for longitude, latitude in points:
        x, y = natural_earth(longitude, latitude)
        point = (round((WIDTH / 2 + x * SCALE) * 10), round((TOP - y * SCALE) * 10))
        if out and abs(point[0] - out[-1][0]) + abs(point[1] - out[-1][1]) < MIN_STEP:
            continue
        out.append(point)
    return out


def _number(tenths: int) -> str:
    text = f"{tenths / 10:.1f}".rstrip("0").rstrip(".")
    return text.replace("0.", ".", 1) if text.startswith(("0.", "-0.")) else text


def path_data(rings: Iterable[Ring]) -> str:
    """SVG path data for rings of (longitude, latitude): a moveto, then
    relative linetos in tenths of a unit, rounded once so nothing drifts."""
    parts = []
    for points in rings:
        for copy in _copies(unwrap(points)):
            tenths = _tenths(copy)
            if len(tenths) < 3:
                continue  # smaller than a pixel
            (x0, y0), steps = tenths[0], []
            for (px, py), (qx, qy) in zip(tenths, tenths[1:]):
                steps.append(f"{_number(qx - px)} {_number(qy - py)}")
            parts.append(f"M{_number(x0)} {_number(y0)}l" + " ".join(steps) + "z")
    return "".join(parts)


def outline_data(step: float = 2.0) -> str:
    """The map's edge: the 180th meridians between the cut latitudes."""
    latitudes = [SOUTH + i * step for i in range(int((NORTH - SOUTH) / step) + 1)]
    if latitudes[-1] != NORTH:
        latitudes.append(NORTH)
    edge = [(-180.0, lat) for lat in latitudes] + [(180.0, lat) for lat in reversed(latitudes)]
    points = [project(lat, lon) for lon, lat in edge]
    return "M" + "L".join(f"{x:g} {y:g}" for x, y in points) + "Z"


def graticule_data(every: int = 30) -> str:
    """Meridians and parallels every ``every`` degrees, as one path."""
    lines = []
    for longitude in range(-180 + every, 180, every):
        points = [project(lat, longitude) for lat in (SOUTH, *range(-55, 84, 5), NORTH)]
        lines.append("M" + "L".join(f"{x:g} {y:g}" for x, y in points))
    for latitude in range(-30, 61, every):
        points = [project(latitude, lon) for lon in range(-180, 181, 10)]
        lines.append("M" + "L".join(f"{x:g} {y:g}" for x, y in points))
    return "".join(lines)


# The frame needs no atlas: it is drawn even while the land is missing.
VIEW_BOX = f"0 0 {WIDTH:g} {HEIGHT:g}"
OUTLINE = outline_data()
GRATICULE = graticule_data()


@dataclass(frozen=True)
class Country:
    name: str
    path: str


def draw(topology: dict) -> tuple[Country, ...]:
    """Project a world-atlas topology's countries, each as one path."""
    drawn = []
    for name, shapes in countries(topology):
        # Outer rings and holes alike: the path fills with the even-odd rule.
        data = path_data(points for polygon in shapes for points in polygon
                         if points and max(lat for _, lat in points) > SOUTH)
        if data:
            drawn.append(Country(name, data))
    return tuple(drawn)


@lru_cache(maxsize=1)
def _drawn(path: str, modified_ns: int) -> tuple[Country, ...]:
    with open(path, encoding="utf-8") as handle:
        drawn = draw(json.load(handle))
    logger.info("world map drawn from %s: %d countries", path, len(drawn))
    return drawn


def world(path: Path | None = None) -> tuple[Country, ...] | None:
    """The countries drawn (from ``ATLAS_FILE`` unless told), or None while
    the file is missing or unreadable."""
    path = path or ATLAS_FILE
    try:
        modified_ns = path.stat().st_mtime_ns
    except OSError:
        return None
    try:
        return _drawn(str(path), modified_ns)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("the world map cannot be drawn from %s (%s); fetch it again with %s",
                       path, exc, FETCH_COMMAND)
        return None
