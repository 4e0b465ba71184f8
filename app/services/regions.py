"""Where common cloud regions and cities are: a built-in table of places.

An instance that does not set ``INSTANCE_LATITUDE`` / ``INSTANCE_LONGITUDE``
is placed on the location map by its ``INSTANCE_LOCATION`` when that names
a place here: a region of AWS (``us-east-1``), Google Cloud
(``europe-west3``), Azure (``westeurope``), DigitalOcean (``fra1``) or
Hetzner (``fsn1``), a major city (``frankfurt``, ``sao-paulo``) or its
airport code (``fra``, as Fly.io names regions). Coordinates are the
region's metropolitan area, which is as close as a map of the world needs.

Names are compared case- and separator-insensitively (``US_EAST_1``,
``us east 1``, ``São Paulo``), and a name may be part of a longer location
(``aws-eu-west-1``, ``frankfurt-2``, ``us-central1-a``).
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Place:
    """A named point: what the map shows for a location it knows."""

    name: str
    latitude: float
    longitude: float


# (what it is, latitude, longitude) by the provider's own region name.
AWS_REGIONS = {
    "us-east-1": ("N. Virginia", 39.04, -77.49),
    "us-east-2": ("Ohio", 39.96, -83.00),
    "us-west-1": ("N. California", 37.34, -121.89),
    "us-west-2": ("Oregon", 45.84, -119.70),
    "us-gov-east-1": ("Ohio", 39.96, -83.00),
    "us-gov-west-1": ("Oregon", 45.84, -119.70),
    "ca-central-1": ("Montréal", 45.50, -73.57),
    "ca-west-1": ("Calgary", 51.05, -114.07),
    "mx-central-1": ("Querétaro", 20.59, -100.39),
    "sa-east-1": ("São Paulo", -23.55, -46.63),
    "eu-central-1": ("Frankfurt", 50.11, 8.68),
    "eu-central-2": ("Zürich", 47.37, 8.54),
    "eu-west-1": ("Ireland", 53.35, -6.26),
    "eu-west-2": ("London", 51.51, -0.13),
    "eu-west-3": ("Paris", 48.86, 2.35),
    "eu-north-1": ("Stockholm", 59.33, 18.07),
    "eu-south-1": ("Milan", 45.46, 9.19),
    "eu-south-2": ("Spain", 41.65, -0.89),
    "il-central-1": ("Tel Aviv", 32.09, 34.78),
    "me-south-1": ("Bahrain", 26.07, 50.56),
    "me-central-1": ("UAE", 25.20, 55.27),
    "af-south-1": ("Cape Town", -33.92, 18.42),
    "ap-east-1": ("Hong Kong", 22.32, 114.17),
    "ap-south-1": ("Mumbai", 19.08, 72.88),
    "ap-south-2": ("Hyderabad", 17.39, 78.49),
    "ap-southeast-1": ("Singapore", 1.35, 103.82),
    "ap-southeast-2": ("Sydney", -33.87, 151.21),
    "ap-southeast-3": ("Jakarta", -6.21, 106.85),
    "ap-southeast-4": ("Melbourne", -37.81, 144.96),
    "ap-southeast-5": ("Malaysia", 3.14, 101.69),
    "ap-southeast-7": ("Thailand", 13.76, 100.50),
    "ap-northeast-1": ("Tokyo", 35.68, 139.69),
    "ap-northeast-2": ("Seoul", 37.57, 126.98),
    "ap-northeast-3": ("Osaka", 34.69, 135.50),
}

GOOGLE_CLOUD_REGIONS = {
    "us-central1": ("Iowa", 41.26, -95.86),
    "us-east1": ("South Carolina", 33.20, -80.01),
    "us-east4": ("N. Virginia", 39.04, -77.49),
    "us-east5": ("Columbus", 39.96, -83.00),
    "us-south1": ("Dallas", 32.78, -96.80),
    "us-west1": ("Oregon", 45.59, -121.18),
    "us-west2": ("Los Angeles", 34.05, -118.24),
    "us-west3": ("Salt Lake City", 40.76, -111.89),
    "us-west4": ("Las Vegas", 36.17, -115.14),
    "northamerica-northeast1": ("Montréal", 45.50, -73.57),
    "northamerica-northeast2": ("Toronto", 43.65, -79.38),
    "northamerica-south1": ("Querétaro", 20.59, -100.39),
    "southamerica-east1": ("São Paulo", -23.55, -46.63),
    "southamerica-west1": ("Santiago", -33.45, -70.67),
    "europe-west1": ("Belgium", 50.47, 3.82),
    "europe-west2": ("London", 51.51, -0.13),
    "europe-west3": ("Frankfurt", 50.11, 8.68),
    "europe-west4": ("Netherlands", 53.44, 6.83),
    "europe-west6": ("Zürich", 47.37, 8.54),
    "europe-west8": ("Milan", 45.46, 9.19),
    "europe-west9": ("Paris", 48.86, 2.35),
    "europe-west10": ("Berlin", 52.52, 13.40),
    "europe-west12": ("Turin", 45.07, 7.69),
    "europe-central2": ("Warsaw", 52.23, 21.01),
    "europe-north1": ("Finland", 60.57, 27.20),
    "europe-north2": ("Stockholm", 59.33, 18.07),
    "europe-southwest1": ("Madrid", 40.42, -3.70),
    "me-west1": ("Tel Aviv", 32.09, 34.78),
    "me-central1": ("Doha", 25.29, 51.53),
    "me-central2": ("Dammam", 26.42, 50.09),
    "africa-south1": ("Johannesburg", -26.20, 28.05),
    "asia-east1": ("Taiwan", 24.05, 120.52),
    "asia-east2": ("Hong Kong", 22.32, 114.17),
    "asia-northeast1": ("Tokyo", 35.68, 139.69),
    "asia-northeast2": ("Osaka", 34.69, 135.50),
    "asia-northeast3": ("Seoul", 37.57, 126.98),
    "asia-south1": ("Mumbai", 19.08, 72.88),
    "asia-south2": ("Delhi", 28.61, 77.21),
    "asia-southeast1": ("Singapore", 1.35, 103.82),
    "asia-southeast2": ("Jakarta", -6.21, 106.85),
    "australia-southeast1": ("Sydney", -33.87, 151.21),
    "australia-southeast2": ("Melbourne", -37.81, 144.96),
}

# Azure writes its names without separators ("westeurope"); "West Europe"
# finds them too, since names are also compared with separators removed.
AZURE_REGIONS = {
    "eastus": ("Virginia", 37.37, -79.82),
    "eastus2": ("Virginia", 36.67, -78.39),
    "centralus": ("Iowa", 41.59, -93.62),
    "northcentralus": ("Illinois", 41.88, -87.63),
    "southcentralus": ("Texas", 29.42, -98.49),
    "westcentralus": ("Wyoming", 41.14, -104.82),
    "westus": ("California", 37.78, -122.42),
    "westus2": ("Washington", 47.23, -119.85),
    "westus3": ("Arizona", 33.45, -112.07),
    "canadacentral": ("Toronto", 43.65, -79.38),
    "canadaeast": ("Québec", 46.81, -71.21),
    "mexicocentral": ("Querétaro", 20.59, -100.39),
    "brazilsouth": ("São Paulo", -23.55, -46.63),
    "northeurope": ("Ireland", 53.35, -6.26),
    "westeurope": ("Netherlands", 52.37, 4.90),
    "uksouth": ("London", 51.51, -0.13),
    "ukwest": ("Cardiff", 51.48, -3.18),
    "francecentral": ("Paris", 48.86, 2.35),
    "germanywestcentral": ("Frankfurt", 50.11, 8.68),
    "switzerlandnorth": ("Zürich", 47.37, 8.54),
    "norwayeast": ("Oslo", 59.91, 10.75),
    "swedencentral": ("Gävle", 60.67, 17.14),
    "polandcentral": ("Warsaw", 52.23, 21.01),
    "italynorth": ("Milan", 45.46, 9.19),
    "spaincentral": ("Madrid", 40.42, -3.70),
    "israelcentral": ("Israel", 32.09, 34.78),
    "qatarcentral": ("Doha", 25.29, 51.53),
    "uaenorth": ("Dubai", 25.20, 55.27),
    "southafricanorth": ("Johannesburg", -26.20, 28.05),
    "centralindia": ("Pune", 18.52, 73.86),
    "southindia": ("Chennai", 13.08, 80.27),
    "westindia": ("Mumbai", 19.08, 72.88),
    "eastasia": ("Hong Kong", 22.32, 114.17),
    "southeastasia": ("Singapore", 1.35, 103.82),
    "japaneast": ("Tokyo", 35.68, 139.69),
    "japanwest": ("Osaka", 34.69, 135.50),
    "koreacentral": ("Seoul", 37.57, 126.98),
    "koreasouth": ("Busan", 35.18, 129.08),
    "australiaeast": ("Sydney", -33.87, 151.21),
    "australiasoutheast": ("Melbourne", -37.81, 144.96),
    "australiacentral": ("Canberra", -35.28, 149.13),
}

# DigitalOcean and Hetzner data centres.
HOSTING_REGIONS = {
    "nyc1": ("New York", 40.71, -74.01), "nyc2": ("New York", 40.71, -74.01), "nyc3": ("New York", 40.71, -74.01),
    "sfo1": ("San Francisco", 37.77, -122.42), "sfo2": ("San Francisco", 37.77, -122.42),
    "sfo3": ("San Francisco", 37.77, -122.42),
    "tor1": ("Toronto", 43.65, -79.38), "ams2": ("Amsterdam", 52.37, 4.90), "ams3": ("Amsterdam", 52.37, 4.90),
    "lon1": ("London", 51.51, -0.13), "fra1": ("Frankfurt", 50.11, 8.68), "sgp1": ("Singapore", 1.35, 103.82),
    "blr1": ("Bangalore", 12.97, 77.59), "syd1": ("Sydney", -33.87, 151.21),
    "fsn1": ("Falkenstein", 50.48, 12.37), "nbg1": ("Nuremberg", 49.45, 11.08), "hel1": ("Helsinki", 60.17, 24.94),
    "ash": ("Ashburn", 39.04, -77.49), "hil": ("Hillsboro", 45.52, -122.99),
}

CITIES = {
    # North America
    "virginia": ("N. Virginia", 39.04, -77.49), "ashburn": ("Ashburn", 39.04, -77.49),
    "washington-dc": ("Washington, D.C.", 38.90, -77.04), "new-york": ("New York", 40.71, -74.01),
    "nyc": ("New York", 40.71, -74.01), "newark": ("Newark", 40.74, -74.17), "boston": ("Boston", 42.36, -71.06),
    "chicago": ("Chicago", 41.88, -87.63), "atlanta": ("Atlanta", 33.75, -84.39), "miami": ("Miami", 25.76, -80.19),
    "dallas": ("Dallas", 32.78, -96.80), "houston": ("Houston", 29.76, -95.37), "denver": ("Denver", 39.74, -104.99),
    "phoenix": ("Phoenix", 33.45, -112.07), "los-angeles": ("Los Angeles", 34.05, -118.24),
    "san-francisco": ("San Francisco", 37.77, -122.42), "san-jose": ("San José", 37.34, -121.89),
    "silicon-valley": ("Silicon Valley", 37.39, -122.08), "seattle": ("Seattle", 47.61, -122.33),
    "portland": ("Portland", 45.52, -122.68), "oregon": ("Oregon", 45.84, -119.70), "ohio": ("Ohio", 39.96, -83.00),
    "iowa": ("Iowa", 41.26, -95.86), "california": ("California", 37.34, -121.89),
    "toronto": ("Toronto", 43.65, -79.38), "montreal": ("Montréal", 45.50, -73.57),
    "vancouver": ("Vancouver", 49.28, -123.12), "mexico-city": ("Mexico City", 19.43, -99.13),
    # South America
    "sao-paulo": ("São Paulo", -23.55, -46.63), "rio-de-janeiro": ("Rio de Janeiro", -22.91, -43.17),
    "santiago": ("Santiago", -33.45, -70.67), "buenos-aires": ("Buenos Aires", -34.60, -58.38),
    "bogota": ("Bogotá", 4.71, -74.07), "lima": ("Lima", -12.05, -77.04),
    # Europe
    "london": ("London", 51.51, -0.13), "dublin": ("Dublin", 53.35, -6.26), "ireland": ("Ireland", 53.35, -6.26),
    "paris": ("Paris", 48.86, 2.35), "amsterdam": ("Amsterdam", 52.37, 4.90), "brussels": ("Brussels", 50.85, 4.35),
    "frankfurt": ("Frankfurt", 50.11, 8.68), "berlin": ("Berlin", 52.52, 13.40), "munich": ("Munich", 48.14, 11.58),
    "hamburg": ("Hamburg", 53.55, 9.99), "nuremberg": ("Nuremberg", 49.45, 11.08),
    "falkenstein": ("Falkenstein", 50.48, 12.37), "zurich": ("Zürich", 47.37, 8.54), "geneva": ("Geneva", 46.20, 6.14),
    "vienna": ("Vienna", 48.21, 16.37), "milan": ("Milan", 45.46, 9.19), "rome": ("Rome", 41.90, 12.50),
    "madrid": ("Madrid", 40.42, -3.70), "barcelona": ("Barcelona", 41.39, 2.17), "lisbon": ("Lisbon", 38.72, -9.14),
    "warsaw": ("Warsaw", 52.23, 21.01), "prague": ("Prague", 50.08, 14.44), "budapest": ("Budapest", 47.50, 19.04),
    "bucharest": ("Bucharest", 44.43, 26.10), "athens": ("Athens", 37.98, 23.73),
    "stockholm": ("Stockholm", 59.33, 18.07), "oslo": ("Oslo", 59.91, 10.75),
    "copenhagen": ("Copenhagen", 55.68, 12.57), "helsinki": ("Helsinki", 60.17, 24.94),
    "istanbul": ("Istanbul", 41.01, 28.98), "kyiv": ("Kyiv", 50.45, 30.52), "moscow": ("Moscow", 55.76, 37.62),
    # Middle East and Africa
    "tel-aviv": ("Tel Aviv", 32.09, 34.78), "dubai": ("Dubai", 25.20, 55.27), "bahrain": ("Bahrain", 26.07, 50.56),
    "doha": ("Doha", 25.29, 51.53), "riyadh": ("Riyadh", 24.71, 46.68), "cairo": ("Cairo", 30.04, 31.24),
    "lagos": ("Lagos", 6.52, 3.38), "nairobi": ("Nairobi", -1.29, 36.82),
    "johannesburg": ("Johannesburg", -26.20, 28.05), "cape-town": ("Cape Town", -33.92, 18.42),
    # Asia and Oceania
    "mumbai": ("Mumbai", 19.08, 72.88), "delhi": ("Delhi", 28.61, 77.21), "new-delhi": ("New Delhi", 28.61, 77.21),
    "bangalore": ("Bangalore", 12.97, 77.59), "bengaluru": ("Bengaluru", 12.97, 77.59),
    "chennai": ("Chennai", 13.08, 80.27), "hyderabad": ("Hyderabad", 17.39, 78.49), "pune": ("Pune", 18.52, 73.86),
    "singapore": ("Singapore", 1.35, 103.82), "jakarta": ("Jakarta", -6.21, 106.85),
    "kuala-lumpur": ("Kuala Lumpur", 3.14, 101.69), "bangkok": ("Bangkok", 13.76, 100.50),
    "manila": ("Manila", 14.60, 120.98), "hong-kong": ("Hong Kong", 22.32, 114.17), "taipei": ("Taipei", 25.03, 121.57),
    "shanghai": ("Shanghai", 31.23, 121.47), "beijing": ("Beijing", 39.90, 116.41),
    "shenzhen": ("Shenzhen", 22.54, 114.06), "seoul": ("Seoul", 37.57, 126.98), "busan": ("Busan", 35.18, 129.08),
    "tokyo": ("Tokyo", 35.68, 139.69), "osaka": ("Osaka", 34.69, 135.50), "sydney": ("Sydney", -33.87, 151.21),
    "melbourne": ("Melbourne", -37.81, 144.96), "brisbane": ("Brisbane", -27.47, 153.03),
    "perth": ("Perth", -31.95, 115.86), "canberra": ("Canberra", -35.28, 149.13),
    "auckland": ("Auckland", -36.85, 174.76),
}

# Airport codes, as Fly.io and many operators name their locations.
AIRPORT_CODES = {
    "iad": "ashburn", "ewr": "newark", "jfk": "new-york", "bos": "boston", "ord": "chicago", "atl": "atlanta",
    "mia": "miami", "dfw": "dallas", "den": "denver", "phx": "phoenix", "lax": "los-angeles",
    "sjc": "san-jose", "sfo": "san-francisco", "sea": "seattle", "yyz": "toronto", "yul": "montreal",
    "gru": "sao-paulo", "scl": "santiago", "eze": "buenos-aires", "bog": "bogota", "lhr": "london",
    "dub": "dublin", "cdg": "paris", "ams": "amsterdam", "fra": "frankfurt", "muc": "munich",
    "zrh": "zurich", "mad": "madrid", "arn": "stockholm", "cph": "copenhagen", "hel": "helsinki",
    "waw": "warsaw", "otp": "bucharest", "jnb": "johannesburg", "dxb": "dubai", "bom": "mumbai",
    "del": "delhi", "blr": "bangalore", "maa": "chennai", "sin": "singapore", "hkg": "hong-kong",
    "nrt": "tokyo", "hnd": "tokyo", "kix": "osaka", "icn": "seoul", "syd": "sydney", "mel": "melbourne",
    "akl": "auckland",
}

# Longer locations are cut to their first words when looked up.
MAX_WORDS = 12


def _key(text: str) -> str:
    """Lower case, accents dropped, every run of separators one hyphen."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", plain.lower()).strip("-")


def _table() -> dict[str, Place]:
    places: dict[str, Place] = {}
    for table in (AWS_REGIONS, GOOGLE_CLOUD_REGIONS, AZURE_REGIONS, HOSTING_REGIONS, CITIES):
        for name, (label, latitude, longitude) in table.items():
            if name in places:
                raise ValueError(f"{name} is in the table of places twice")
            places[name] = Place(label, latitude, longitude)
    for code, city in AIRPORT_CODES.items():
        if code in places:
            raise ValueError(f"airport code {code} is also a region name")
        places[code] = places[city]
    return places


PLACES: dict[str, Place] = _table()


def _compact_table() -> dict[str, Place]:
    """The places by name with separators removed, where that is unambiguous:
    AWS ``us-east-1`` (Virginia) and Google ``us-east1`` (South Carolina)
    both become ``useast1``, which then names neither."""
    compact: dict[str, Place] = {}
    ambiguous = set()
    for name, place in PLACES.items():
        short = name.replace("-", "")
        seen = compact.get(short)
        if seen is not None and (seen.latitude, seen.longitude) != (place.latitude, place.longitude):
            ambiguous.add(short)
        compact.setdefault(short, place)
    return {short: place for short, place in compact.items() if short not in ambiguous}


_COMPACT = _compact_table()


def _find(words: list[str]) -> Place | None:
    name = "-".join(words)
    found = PLACES.get(name) or _COMPACT.get(name.replace("-", ""))
    if found is None and re.search(r"\d[a-z]$", name):
        # An availability zone of a region: us-east-1a
        found = PLACES.get(name[:-1])
    return found


@lru_cache(maxsize=1024)
def place_of(location: str | None) -> Place | None:
    """The known place that ``location`` names or contains, or None.

    The whole name first, then ever shorter runs of its words, leftmost
    first: ``aws-eu-west-1`` finds ``eu-west-1``, ``frankfurt-2``
    finds ``frankfurt``, ``us-central1-a`` finds ``us-central1``.
    """
    words = [word for word in _key(location or "").split("-") if word][:MAX_WORDS]
    if not words:
        return None
    for length in range(len(words), 0, -1):
        for start in range(len(words) - length + 1):
            found = _find(words[start:start + length])
            if found is not None:
                return found
    return None
