"""Places by name, the projection, TopoJSON decoding, and the world drawn
from the real world-atlas file (skipped, with the reason, when it is not
fetched)."""
import json
import math
import os
import re

import pytest

from app.services import regions, world_map
from app.services.regions import place_of

# --- the table of places --------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "place", "latitude"),
    [
        ("us-east-1", "N. Virginia", 39.04),
        ("US_EAST_1", "N. Virginia", 39.04),
        ("us east 1", "N. Virginia", 39.04),
        ("us-east-1a", "N. Virginia", 39.04),  # an availability zone of it
        ("aws-eu-west-1", "Ireland", 53.35),
        ("eu-central-1", "Frankfurt", 50.11),
        ("ap-southeast-1", "Singapore", 1.35),
        ("ap-northeast-1", "Tokyo", 35.68),
        ("us-west-2", "Oregon", 45.84),
        ("us-east1", "South Carolina", 33.20),  # Google's, not AWS's
        ("gcp:europe-west3", "Frankfurt", 50.11),
        ("us-central1-a", "Iowa", 41.26),
        ("westeurope", "Netherlands", 52.37),
        ("West Europe", "Netherlands", 52.37),
        ("East US 2", "Virginia", 36.67),
        ("fra1", "Frankfurt", 50.11),
        ("Frankfurt", "Frankfurt", 50.11),
        ("frankfurt-2", "Frankfurt", 50.11),
        ("Frankfurt am Main, DE", "Frankfurt", 50.11),
        ("virginia", "N. Virginia", 39.04),
        ("SINGAPORE", "Singapore", 1.35),
        ("london", "London", 51.51),
        ("tokyo", "Tokyo", 35.68),
        ("sydney", "Sydney", -33.87),
        ("sao-paulo", "São Paulo", -23.55),
        ("São Paulo", "São Paulo", -23.55),
        ("saopaulo", "São Paulo", -23.55),
        ("gru", "São Paulo", -23.55),
    ],
)
def test_it_finds_regions_and_cities_whatever_the_case_and_separators(location, place, latitude):
    found = place_of(location)
    assert found is not None, location
    assert (found.name, found.latitude) == (place, latitude)


@pytest.mark.parametrize("location", ["default", "lab", "eu-west", "", "  ", "---", None, "useast1"])
def test_it_places_nothing_it_does_not_know(location):
    # "useast1" would be AWS's us-east-1 or Google's us-east1: neither.
    assert place_of(location) is None


def test_every_place_is_on_the_globe():
    assert len(regions.PLACES) > 200
    for name, place in regions.PLACES.items():
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name), name
        assert -90 <= place.latitude <= 90 and -180 <= place.longitude <= 180, name


def test_the_cloud_regions_are_where_their_cities_are():
    for region, city in (("eu-central-1", "frankfurt"), ("ap-southeast-1", "singapore"), ("eu-west-2", "london"),
                         ("ap-northeast-1", "tokyo"), ("ap-southeast-2", "sydney"), ("sa-east-1", "sao-paulo"),
                         ("asia-southeast1", "singapore"), ("germanywestcentral", "frankfurt")):
        a, b = place_of(region), place_of(city)
        assert (a.latitude, a.longitude) == (b.latitude, b.longitude), region


# --- the projection -------------------------------------------------------------


def test_the_projection_is_d3s_natural_earth():
    # d3.geoNaturalEarth1Raw(Math.PI, 0) and (0, Math.PI / 2)
    x, y = world_map.natural_earth(180, 0)
    assert x == pytest.approx(math.pi * 0.8707)
    assert world_map.natural_earth(0, 90)[1] == pytest.approx(1.4224, abs=1e-4)
    assert world_map.natural_earth(-30, -45) == pytest.approx(tuple(-v for v in world_map.natural_earth(30, 45)))


def test_points_land_on_the_map_west_to_east_and_north_to_south():
    width, height = world_map.WIDTH, world_map.HEIGHT
    assert world_map.project(0, 0)[0] == width / 2
    assert world_map.project(0, -180)[0] == 0 and world_map.project(0, 180)[0] == width
    assert world_map.project(world_map.NORTH, 0)[1] == 0 and world_map.project(world_map.SOUTH, 0)[1] == height
    london, tokyo, sydney = world_map.project(51.5, -0.1), world_map.project(35.7, 139.7), world_map.project(-33.9, 151.2)
    assert london[0] < tokyo[0] < sydney[0] and london[1] < tokyo[1] < sydney[1]
    # Beyond the map's latitudes: on its edge, not off it.
    assert world_map.project(-77.8, 166.7)[1] == height
    assert world_map.VIEW_BOX == f"0 0 {width:g} {height:g}"


# --- TopoJSON -------------------------------------------------------------------

# Two squares sharing an edge (arc 1), quantized: arcs are deltas, then scaled.
SQUARES = {
    "type": "Topology",
    "transform": {"scale": [0.5, 0.25], "translate": [10, 20]},
    "arcs": [
        [[2, 0], [-2, 0], [0, 4], [2, 0]],  # (11,20) (10,20) (10,21) (11,21)
        [[2, 4], [0, -4]],                  # (11,21) (11,20): the shared edge
        [[2, 4], [2, 0], [0, -4], [-2, 0]],  # (11,21) (12,21) (12,20) (11,20)
    ],
    "objects": {"countries": {"type": "GeometryCollection", "geometries": [
        {"type": "Polygon", "arcs": [[0, 1]], "properties": {"name": "West"}},
        {"type": "MultiPolygon", "arcs": [[[2, ~1]]], "properties": {"name": "East"}},
        {"type": "Point", "coordinates": [0, 0], "properties": {"name": "Nowhere"}},
    ]}},
}


def test_it_decodes_quantized_arcs_to_coordinates():
    arcs = world_map.decode_arcs(SQUARES)
    assert arcs[0] == [(11, 20), (10, 20), (10, 21), (11, 21)]
    assert arcs[1] == [(11, 21), (11, 20)]
    assert world_map.decode_arcs({"arcs": [[[1.5, 2.5], [3, 4]]]}) == [[(1.5, 2.5), (3, 4)]]


def test_it_stitches_rings_from_arcs_reversing_the_negative_ones():
    (west, west_shapes), (east, east_shapes), (nowhere, nothing) = world_map.countries(SQUARES)
    assert (west, east, nowhere) == ("West", "East", "Nowhere")
    assert west_shapes == [[[(11, 20), (10, 20), (10, 21), (11, 21), (11, 20)]]]
    # ~1 is the shared edge walked the other way: from (11,20) back up to (11,21).
    assert east_shapes == [[[(11, 21), (12, 21), (12, 20), (11, 20), (11, 21)]]]
    assert nothing == []


def test_rings_across_the_antimeridian_are_drawn_on_both_edges():
    island = [(179.0, -16.0), (-179.0, -16.0), (-179.0, -17.0), (179.0, -17.0), (179.0, -16.0)]
    assert [lon for lon, _ in world_map.unwrap(island)] == [179.0, 181.0, 181.0, 179.0, 179.0]
    subpaths = _subpaths(world_map.path_data([island]))
    assert len(subpaths) == 2
    west_edges = sorted(min(x for x, _ in ring) for ring in subpaths)
    assert west_edges == pytest.approx([world_map.project(-16, -181)[0], world_map.project(-17, 179)[0]], abs=0.2)


def _subpaths(data: str) -> list[list[tuple[float, float]]]:
    """Absolute points of each subpath of ``M x y l dx dy ... z`` path data."""
    rings = []
    for part in re.findall(r"M([^Mz]+)z", data):
        head, _, steps = part.partition("l")
        x, y = map(float, head.split())
        points = [(x, y)]
        numbers = [float(n) for n in steps.split()]
        for dx, dy in zip(numbers[::2], numbers[1::2]):
            x, y = x + dx, y + dy
            points.append((x, y))
        rings.append(points)
    return rings


def _inside(point, ring) -> bool:
    x, y = point
    inside = False
    for (x1, y1), (x2, y2) in zip(ring, ring[1:] + ring[:1]):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


# --- the real atlas -------------------------------------------------------------


@pytest.fixture(scope="module")
def atlas():
    if not world_map.ATLAS_FILE.exists():
        pytest.skip(f"{world_map.ATLAS_FILE} is not fetched: run {world_map.FETCH_COMMAND}")
    return json.loads(world_map.ATLAS_FILE.read_text())


def test_the_atlas_decodes_to_the_worlds_countries(atlas):
    countries = dict(world_map.countries(atlas))
    assert len(countries) == 177
    lons = [lon for polygon in countries["Germany"] for ring in polygon for lon, _ in ring]
    lats = [lat for polygon in countries["Germany"] for ring in polygon for _, lat in ring]
    assert 5.5 < min(lons) < 6.5 and 14.5 < max(lons) < 15.5
    assert 47 < min(lats) < 48 and 54.5 < max(lats) < 55.5
    assert all(ring[0] == ring[-1] for polygon in countries["Brazil"] for ring in polygon)


def test_markers_fall_on_the_land_drawn_for_their_country(atlas):
    drawn = {country.name: _subpaths(country.path) for country in world_map.draw(atlas)}
    assert "Antarctica" not in drawn  # south of the map
    for city, country in (("frankfurt", "Germany"), ("sao-paulo", "Brazil"), ("sydney", "Australia"),
                          ("tokyo", "Japan"), ("virginia", "United States of America"), ("mumbai", "India")):
        place = place_of(city)
        point = world_map.project(place.latitude, place.longitude)
        assert any(_inside(point, ring) for ring in drawn[country]), city
        assert not any(_inside(point, ring) for ring in drawn["Russia"]), city
    # Fiji and the east of Russia cross the antimeridian: drawn at both edges.
    for country in ("Fiji", "Russia"):
        xs = [x for ring in drawn[country] for x, _ in ring]
        assert min(xs) < 50 and max(xs) > world_map.WIDTH - 150, country


def test_the_world_is_drawn_once_per_process_and_again_when_the_file_changes(atlas, tmp_path):
    copy = tmp_path / "countries-110m.json"
    copy.write_text(json.dumps(atlas))
    first = world_map.world(copy)
    assert first is not None and world_map.world(copy) is first
    atlas_without_fiji = json.loads(json.dumps(atlas))
    geometries = atlas_without_fiji["objects"]["countries"]["geometries"]
    geometries[:] = [g for g in geometries if g["properties"]["name"] != "Fiji"]
    copy.write_text(json.dumps(atlas_without_fiji))
    os.utime(copy, ns=(1, 1))  # a changed file, whatever the clock's resolution
    again = world_map.world(copy)
    assert again is not first and len(again) == len(first) - 1


def test_a_missing_or_broken_atlas_draws_nothing(tmp_path):
    assert world_map.world(tmp_path / "absent.json") is None
    broken = tmp_path / "broken.json"
    broken.write_text('{"type": "Topology"')
    assert world_map.world(broken) is None
