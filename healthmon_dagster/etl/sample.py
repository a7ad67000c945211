"""Synthea-format ``patients.csv`` sample data, clean or with one chosen defect.

Deterministic: the same arguments give byte-identical files (all randomness comes from
``random.Random`` seeded from ``seed`` and the file number; dates are relative to the fixed
:data:`REFERENCE_DATE`, not today).

A batch of ``files`` files imitates a daily full-ish export feeding an SCD2 merge: file 1 holds only
new patients; from file 2 on, about 10% of each file's rows are patients re-sent from earlier files,
half of them changed (new address, marital status, or a death date) and half unchanged, mixed in
with new patients.

Defects are injected into the LAST file of a batch only. Row-level defects hit
``max(1, rows * 3 // 100)`` rows at fixed positions (see :func:`defect_rows`); file-level defects
change the whole file:

- ``null_ids``: ``Id`` is empty in the defect rows.
- ``duplicate_ids``: each defect row carries the ``Id`` of the row just before it.
- ``unknown_gender``: ``GENDER`` is ``U`` or ``X`` (alternating) in the defect rows.
- ``future_birthdate``: ``BIRTHDATE`` is in the 2090s and ``DEATHDATE`` empty in the defect rows.
- ``death_before_birth``: ``DEATHDATE`` is 1-3650 days before ``BIRTHDATE`` in the defect rows.
- ``out_of_range_coordinates``: ``LAT`` is ``95.0`` and ``LON`` is ``-200.0`` in the defect rows.
- ``non_utf8``: ``FIRST`` is an accented name encoded as latin-1 (invalid UTF-8) in the defect rows.
- ``missing_column``: ``HEALTHCARE_COVERAGE`` is dropped from the header and every row.
- ``extra_column``: a ``LOYALTY_TIER`` column is appended to the header and every row.
- ``semicolon_delimiter``: the whole file is ``;``-delimited.
- ``empty_file``: the file is 0 bytes.
- ``truncated_last_line``: the last data line is cut in its middle, with no trailing newline.
- ``volume_drop``: the file has ``max(1, rows // 10)`` rows (otherwise clean).
- ``bom_crlf``: UTF-8 BOM and CRLF line endings (otherwise valid).
- ``header_whitespace``: the header names `` Id`` and ``GENDER `` carry a space (otherwise valid).
- ``header_case``: the header names ``Id`` and ``BIRTHDATE`` are written ``id`` and ``Birthdate``.
- ``columns_reordered``: ``FIRST`` and ``LAST`` swap places in the header and every row.
- ``blank_lines``: an empty line follows every 50th record (otherwise valid).
- ``cr_line_endings``: every line ends with a lone CR, as old Mac exports do (otherwise valid).
- ``headerless``: the header line is missing; the file starts with its first record.
- ``header_joined``: the line break after the header is missing: the header runs into the first
  record.
- ``zip_leading_zeros_stripped``: every ``ZIP`` loses its leading zeros (``2101``), as a spreadsheet
  round trip does; all generated Massachusetts ZIPs start with ``0``.
- ``locale_numbers``: ``HEALTHCARE_EXPENSES`` and ``HEALTHCARE_COVERAGE`` are written as
  ``1.234,56`` (quoted, since they contain the delimiter) in every row.
- ``identity_change``: the defect rows are other people sent under the ``Id`` of a patient of an
  earlier file (one not otherwise in this file), with another ``BIRTHDATE`` and ``SSN``: an upstream
  system that reused ids. Every field is valid, so only the identity check can see it. Needs an
  earlier file (``files >= 2`` or ``start_index >= 1``).
"""

import csv
import functools
import io
import random
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Protocol

from sqlalchemy.engine import Engine

from healthmon_dagster.etl.catalog import RAW_PATIENTS
from healthmon_dagster.store.metrics import MetricPoint, write_metrics
from healthmon_dagster.store.tables import REQUIRED_COLUMNS

COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS
"""The columns Synthea writes to patients.csv, in its order: the loader's contract."""

DEFECTS: tuple[str, ...] = (
    "null_ids",
    "duplicate_ids",
    "unknown_gender",
    "future_birthdate",
    "death_before_birth",
    "out_of_range_coordinates",
    "missing_column",
    "extra_column",
    "semicolon_delimiter",
    "empty_file",
    "truncated_last_line",
    "volume_drop",
    "bom_crlf",
    "header_whitespace",
    "header_case",
    "columns_reordered",
    "blank_lines",
    "cr_line_endings",
    "headerless",
    "header_joined",
    "non_utf8",
    "zip_leading_zeros_stripped",
    "locale_numbers",
    "identity_change",
)

ROW_DEFECTS: frozenset[str] = frozenset(
    {
        "null_ids",
        "duplicate_ids",
        "unknown_gender",
        "future_birthdate",
        "death_before_birth",
        "out_of_range_coordinates",
        "non_utf8",
    }
)

# Defects that only make sense for a whole in-memory file; write_patients_csv rejects them.
_BYTES_DEFECTS: frozenset[str] = frozenset(
    {"empty_file", "truncated_last_line", "volume_drop", "non_utf8"}
)

REFERENCE_DATE = date(2025, 1, 1)
"""'Today' for generated data: no death date after it, birth dates up to it."""

RESEND_FRACTION = 0.10

# Column positions, named to keep the generator readable.
_ID, _BIRTH, _DEATH, _SSN = 0, 1, 2, 3
_FIRST, _LAST_NAME, _MARITAL, _GENDER = 7, 8, 11, 14
_COUNTY, _ADDRESS, _ZIP, _LAT, _LON = 19, 16, 20, 21, 22
_EXPENSES, _COVERAGE = 23, 24

_FIRST_M = (
    "James",
    "John",
    "Robert",
    "Michael",
    "William",
    "David",
    "Joseph",
    "Thomas",
    "Carlos",
    "José",
    "Luis",
    "Juan",
    "Kevin",
    "Brian",
    "Wei",
    "Hiroshi",
    "Ahmed",
    "Omar",
    "Dmitri",
    "Liam",
    "Noah",
    "Ethan",
    "Mason",
    "Lucas",
)
_FIRST_F = (
    "Mary",
    "Patricia",
    "Jennifer",
    "Linda",
    "Elizabeth",
    "Barbara",
    "Susan",
    "Jessica",
    "María",
    "Sofía",
    "Lucía",
    "Ana",
    "Mei",
    "Yuki",
    "Fatima",
    "Aisha",
    "Olga",
    "Chloé",
    "Emma",
    "Olivia",
    "Ava",
    "Isabella",
    "Mia",
    "Zoë",
)
_LAST = (
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodríguez",
    "Martínez",
    "Hernández",
    "López",
    "González",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Pérez",
    "Thompson",
    "White",
    "Harris",
    "Sánchez",
    "Clark",
    "Ramírez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Nguyen",
    "O'Connor",
    "Kowalski",
    "Schmidt",
    "Müller",
    "Dubois",
    "Rossi",
    "Kim",
    "Chen",
)
# Accented names that are written latin-1 encoded for the non_utf8 defect.
_LATIN1_NAMES = ("José", "María", "Chloé", "Zoë", "Sofía", "Françoise")
_STREETS = (
    "Schiller",
    "Kuhn",
    "Hickle",
    "Bode",
    "Dickens",
    "Lind",
    "Feeney",
    "Gutmann",
    "Kertzmann",
    "Wunsch",
    "Oberbrunner",
    "Ritchie",
    "Greenholt",
    "Abshire",
    "Marquardt",
    "Zieme",
    "Crist",
    "Hansen",
    "Runolfsson",
    "Bogan",
)
_STREET_SUFFIX = (
    "Street",
    "Avenue",
    "Road",
    "Lane",
    "Way",
    "Tunnel",
    "Mill",
    "Gate",
    "Crossing",
    "Heights",
    "Park",
    "Knoll",
    "Rapid",
    "Ferry",
    "Branch",
    "Plaza",
)
_UNITS = ("", "", "", "", " Unit {}", " Apt {}", " Suite {}")
# (city, county, zip, lat, lon): a Massachusetts sample; every MA ZIP starts with 0.
_CITIES = (
    ("Boston", "Suffolk County", "02101", 42.3601, -71.0589),
    ("Worcester", "Worcester County", "01608", 42.2626, -71.8023),
    ("Springfield", "Hampden County", "01103", 42.1015, -72.5898),
    ("Cambridge", "Middlesex County", "02139", 42.3736, -71.1097),
    ("Lowell", "Middlesex County", "01852", 42.6334, -71.3162),
    ("Brockton", "Plymouth County", "02301", 42.0834, -71.0184),
    ("New Bedford", "Bristol County", "02740", 41.6362, -70.9342),
    ("Quincy", "Norfolk County", "02169", 42.2529, -71.0023),
    ("Lynn", "Essex County", "01901", 42.4668, -70.9495),
    ("Fall River", "Bristol County", "02720", 41.7015, -71.1550),
    ("Newton", "Middlesex County", "02458", 42.3370, -71.2092),
    ("Pittsfield", "Berkshire County", "01201", 42.4501, -73.2454),
    ("Barnstable", "Barnstable County", "02630", 41.7003, -70.3002),
    ("Northampton", "Hampshire County", "01060", 42.3251, -72.6412),
    ("Salem", "Essex County", "01970", 42.5195, -70.8967),
    ("Framingham", "Middlesex County", "01701", 42.2793, -71.4162),
)
# Synthea's international configurations: (city, state, county, postal code, lat, lon).
_INTL_CITIES: dict[str, tuple[tuple[str, str, str, str, float, float], ...]] = {
    "DE": (
        ("Berlin", "Berlin", "Berlin", "10115", 52.5200, 13.4050),
        ("München", "Bayern", "Oberbayern", "80331", 48.1351, 11.5820),
        ("Hamburg", "Hamburg", "Hamburg", "20095", 53.5511, 9.9937),
        # State names as synthea-international's DE exports spell them (case after a hyphen
        # lowered); matched ignoring case and accents.
        ("Köln", "Nordrhein-westfalen", "Köln", "50667", 50.9375, 6.9603),
        ("Düsseldorf", "Nordrhein-westfalen", "Düsseldorf", "40213", 51.2277, 6.7735),
        ("Frankfurt am Main", "Hessen", "Darmstadt", "60311", 50.1109, 8.6821),
        ("Stuttgart", "Baden-württemberg", "Stuttgart", "70173", 48.7758, 9.1829),
        ("Erfurt", "Thuringen", "Erfurt", "99084", 50.9848, 11.0299),
        ("Leipzig", "Sachsen", "Leipzig", "04109", 51.3397, 12.3731),
        ("Dresden", "Sachsen", "Dresden", "01067", 51.0504, 13.7373),
    ),
    "BR": (
        ("São Paulo", "São Paulo", "São Paulo", "01310-100", -23.5505, -46.6333),
        ("Rio de Janeiro", "Rio de Janeiro", "Rio de Janeiro", "20040-020", -22.9068, -43.1729),
        ("Belo Horizonte", "Minas Gerais", "Belo Horizonte", "30130-010", -19.9167, -43.9345),
        ("Salvador", "Bahia", "Salvador", "40020-000", -12.9777, -38.5016),
        ("Brasília", "Distrito Federal", "Brasília", "70040-010", -15.7939, -47.8828),
        ("Curitiba", "Paraná", "Curitiba", "80010-000", -25.4284, -49.2733),
    ),
    "CA": (
        ("Toronto", "Ontario", "Toronto", "M5H 2N2", 43.6532, -79.3832),
        ("Ottawa", "Ontario", "Ottawa", "K1P 1J1", 45.4215, -75.6972),
        ("Montréal", "Quebec", "Montréal", "H2Y 1C6", 45.5017, -73.5673),
        ("Vancouver", "British Columbia", "Greater Vancouver", "V6B 1A1", 49.2827, -123.1207),
        ("Calgary", "Alberta", "Division No. 6", "T2P 1J9", 51.0447, -114.0719),
        ("Halifax", "Nova Scotia", "Halifax", "B3H 1A1", 44.6488, -63.5752),
    ),
}
_INTL_STREETS: dict[str, tuple[str, ...]] = {
    "DE": ("Hauptstraße", "Schulstraße", "Gartenweg", "Bahnhofstraße", "Lindenallee", "Am Markt"),
    "BR": ("Rua das Flores", "Avenida Paulista", "Rua XV de Novembro", "Rua da Praia"),
    "CA": ("Main Street", "King Street West", "Rue Sainte-Catherine", "Maple Avenue"),
}
COUNTRIES: tuple[str, ...] = ("US", *_INTL_CITIES)
"""Countries :func:`generate_sample` writes exports of: US (Massachusetts, Synthea's default) and
Synthea's international configurations DE, BR and CA (local cities, states and postal codes;
national ids instead of US SSNs, empty for children)."""
_RACES = ("white",) * 14 + ("black",) * 3 + ("asian",) * 2 + ("native", "other")
_SUFFIXES = ("",) * 46 + ("MD", "PhD", "JD", "DDS")
_TIERS = ("bronze", "silver", "gold", "platinum")
# County FIPS codes of the generated Massachusetts counties (newer Synthea's FIPS column).
_MA_FIPS = {
    "Barnstable County": "25001",
    "Berkshire County": "25003",
    "Bristol County": "25005",
    "Essex County": "25009",
    "Hampden County": "25013",
    "Hampshire County": "25015",
    "Middlesex County": "25017",
    "Norfolk County": "25021",
    "Plymouth County": "25023",
    "Suffolk County": "25025",
    "Worcester County": "25027",
}
_BIRTH_MIN = date(1920, 1, 1).toordinal()
_BIRTH_SPAN = REFERENCE_DATE.toordinal() - _BIRTH_MIN
_REF_ORD = REFERENCE_DATE.toordinal()
_ADULT_IDX = _REF_ORD - 18 * 365 - _BIRTH_MIN
_LOCALE_TABLE = str.maketrans(",.", ".,")


class Putter(Protocol):
    """What :func:`write_to` needs from a landing source."""

    def put(self, key: str, data: bytes, overwrite: bool = True) -> None: ...


@dataclass(frozen=True)
class SampleFile:
    """One generated file: its landing key, bytes, number of data lines and injected defect."""

    key: str
    data: bytes
    rows: int
    defect: str | None


def _check_defect(defect: str | None) -> None:
    if defect is not None and defect not in DEFECTS:
        raise ValueError(f"unknown defect {defect!r}; choose one of: {', '.join(DEFECTS)}")


def _check_country(country: str) -> None:
    if country not in COUNTRIES:
        raise ValueError(f"unknown country {country!r}; choose one of: {', '.join(COUNTRIES)}")


def defect_count(rows: int) -> int:
    """How many rows a row-level defect hits in a file of ``rows`` rows (3%, at least 1)."""
    return max(1, rows * 3 // 100) if rows > 0 else 0


def defect_rows(rows: int) -> list[int]:
    """0-based data row positions hit by a row-level defect: one in the middle of each of
    ``defect_count(rows)`` equal blocks (``i * step + step // 2`` with ``step = rows // count``)."""
    count = defect_count(rows)
    if count == 0:
        return []
    step = rows // count
    return [i * step + step // 2 for i in range(count)]


_UUID_MASK = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID_BITS = (4 << 76) | (0x8000 << 48)
_DATES = tuple(date.fromordinal(o).isoformat() for o in range(_BIRTH_MIN, _REF_ORD + 1))
_POOL_BITS = 14


def _uuid4(rng: random.Random) -> str:
    # Version 4 and RFC 4122 variant bits set, as uuid.UUID(version=4) does.
    h = "%032x" % (rng.getrandbits(128) & _UUID_MASK | _UUID_BITS)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _address_block(r: random.Random, country: str = "US") -> str:
    if country != "US":
        city, state, county, code, lat, lon = r.choice(_INTL_CITIES[country])
        address = f"{r.choice(_INTL_STREETS[country])} {r.randint(1, 250)}"
        code = "" if r.random() < 0.05 else code
        if country == "CA" and r.random() < 0.3:
            code = code[:3]  # the forward sortation area alone, as synthea-international writes
        lat_s, lon_s = repr(lat + (r.random() - 0.5) * 0.2), repr(lon + (r.random() - 0.5) * 0.2)
        return f"{address},{city},{state},{county},{code},{lat_s},{lon_s}"
    city, county, zip_code, lat, lon = r.choice(_CITIES)
    address = f"{r.randint(10, 9999)} {r.choice(_STREETS)} {r.choice(_STREET_SUFFIX)}"
    unit = r.choice(_UNITS)
    if unit:
        address += unit.format(r.randint(1, 90))
    zip_value = "" if r.random() < 0.05 else zip_code
    lat_s, lon_s = repr(lat + (r.random() - 0.5) * 0.2), repr(lon + (r.random() - 0.5) * 0.2)
    return f"{address},{city},Massachusetts,{county},{zip_value},{lat_s},{lon_s}"


def _national_id(r: random.Random, country: str) -> str:
    """The SSN column of an international export: the country's own id number."""
    if country == "DE":  # Steuer-ID: 11 digits
        return str(r.randint(10_000_000_000, 99_999_999_999))
    if country == "BR":  # CPF: 000.000.000-00
        d = f"{r.randint(0, 999_999_999):09d}"
        return f"{d[:3]}.{d[3:6]}.{d[6:]}-{r.randint(0, 99):02d}"
    return f"{r.randint(100, 999)} {r.randint(100, 999)} {r.randint(100, 999)}"  # CA: SIN


def _ids_block(r: random.Random, adult: bool, country: str = "US") -> str:
    if country != "US":
        ssn = _national_id(r, country) if adult else ""
        drivers = (
            f"{country}{r.randint(1_000_000, 9_999_999)}" if adult and r.random() < 0.8 else ""
        )
        passport = f"C{r.randint(10_000_000, 99_999_999)}" if adult and r.random() < 0.6 else ""
        return f"{ssn},{drivers},{passport}"
    ssn = f"999-{r.randint(10, 99)}-{r.randint(1000, 9999)}"
    drivers = f"S999{r.randint(10000, 99999)}" if adult and r.random() < 0.85 else ""
    passport = f"X{r.randint(10_000_000, 99_999_999)}X" if adult and r.random() < 0.75 else ""
    return f"{ssn},{drivers},{passport}"


def _demo_block(r: random.Random, gender: str, country: str = "US") -> str:
    race = r.choice(_RACES)
    ethnicity = "hispanic" if r.random() < 0.12 else "nonhispanic"
    if country != "US":
        city, state, *_ = r.choice(_INTL_CITIES[country])
        return f"{race},{ethnicity},{gender},{city}  {state}  {country}"
    return f"{race},{ethnicity},{gender},{r.choice(_CITIES)[0]}  Massachusetts  US"


def _money_block(r: random.Random, adult: bool) -> str:
    expenses = r.random() * (2_000_000 if adult else 150_000)
    return f"{expenses:.2f},{r.random() * expenses * 0.3:.2f}"


class _Pools:
    """Pre-rendered field groups, picked per row by index.

    Formatting numbers and floats dominates the cost of a row; rendering ``2**14`` variants of each
    field group once (from fixed seeds) and picking among them keeps the streaming writer fast.
    Every group is comma-joined and never contains a delimiter, quote or newline.
    """

    def __init__(self, country: str = "US") -> None:
        n = 1 << _POOL_BITS

        def pool(seed: int, make: Callable[[random.Random], str]) -> tuple[str, ...]:
            r = random.Random(seed)
            return tuple(make(r) for _ in range(n))

        def numbered(names: tuple[str, ...]) -> Callable[[random.Random], str]:
            return lambda r: f"{r.choice(names)}{r.randint(10, 999)}"  # Synthea style: José123

        self.address = pool(1, lambda r: _address_block(r, country))
        self.ids_adult = pool(2, lambda r: _ids_block(r, True, country))
        self.ids_child = pool(3, lambda r: _ids_block(r, False, country))
        self.first_m = pool(4, numbered(_FIRST_M))
        self.first_f = pool(5, numbered(_FIRST_F))
        self.last = pool(6, numbered(_LAST))
        self.demo_m = pool(7, lambda r: _demo_block(r, "M", country))
        self.demo_f = pool(8, lambda r: _demo_block(r, "F", country))
        self.money_adult = pool(9, lambda r: _money_block(r, True))
        self.money_child = pool(10, lambda r: _money_block(r, False))


@functools.cache
def _pools(country: str = "US") -> _Pools:
    return _Pools(country)


def _patient_line(rng: random.Random, pools: _Pools) -> str:
    """One clean Synthea patient as a CSV line (with ``\\n``); no field ever needs quoting."""
    rand = rng.random
    bits = rng.getrandbits
    b = _POOL_BITS
    birth = int(rand() * _BIRTH_SPAN)
    death = _DATES[birth + int(rand() * (_BIRTH_SPAN - birth + 1))] if rand() < 0.1 else ""
    male = rand() < 0.5
    if birth <= _ADULT_IDX:
        r = rand()
        marital = "M" if r < 0.5 else ("S" if r < 0.9 else "")
        if male:
            prefix, maiden = "Mr.", ""
        elif marital == "M":
            prefix, maiden = "Mrs.", pools.last[bits(b)]
        else:
            prefix, maiden = "Ms.", ""
        suffix = _SUFFIXES[int(rand() * len(_SUFFIXES))]
        ids = pools.ids_adult[bits(b)]
        money = pools.money_adult[bits(b)]
    else:
        marital = prefix = maiden = suffix = ""
        ids = pools.ids_child[bits(b)]
        money = pools.money_child[bits(b)]
    if male:
        first, demo = pools.first_m[bits(b)], pools.demo_m[bits(b)]
    else:
        first, demo = pools.first_f[bits(b)], pools.demo_f[bits(b)]
    return (
        f"{_uuid4(rng)},{_DATES[birth]},{death},{ids},{prefix},{first},{pools.last[bits(b)]},"
        f"{suffix},{maiden},{marital},{demo},{pools.address[bits(b)]},{money}\n"
    )


def _patient(rng: random.Random, country: str = "US") -> list[str]:
    """One clean Synthea patient row, as strings in :data:`COLUMNS` order."""
    return _patient_line(rng, _pools(country))[:-1].split(",")


def _changed(rng: random.Random, row: list[str], country: str = "US") -> list[str]:
    """A re-sent patient with one realistic change: moved, marital status, or died."""
    new = list(row)
    kind = int(rng.random() * 3)
    if kind == 2 and not new[_DEATH]:
        birth_ord = date.fromisoformat(new[_BIRTH]).toordinal()
        new[_DEATH] = date.fromordinal(
            birth_ord + int(rng.random() * (_REF_ORD - birth_ord + 1))
        ).isoformat()
    elif kind == 1 and new[_MARITAL]:
        new[_MARITAL] = {"M": "S", "S": "M"}.get(new[_MARITAL], "M")
    else:
        new[_ADDRESS : _LON + 1] = _pools(country).address[rng.getrandbits(_POOL_BITS)].split(",")
    if new == row:  # the address drawn happened to be the old one
        new[_ADDRESS] += " Unit 1"
    return new


def _file_rng(seed: int, number: int) -> random.Random:
    return random.Random(seed * 1_000_003 + number)


def _locale(value: str) -> str:
    return f"{float(value):,.2f}".translate(_LOCALE_TABLE) if value else value


def _widen(row: list[str], is_header: bool = False) -> list[str]:
    """``row`` in Synthea 3.x's 28-column layout: MIDDLE after FIRST, FIPS after COUNTY, INCOME
    last (:data:`~healthmon_dagster.store.tables.SYNTHEA_COLUMN_ORDER`). The values derive from
    the row's Id, so the output stays deterministic."""
    if is_header:
        middle, fips, income = "MIDDLE", "FIPS", "INCOME"
    else:
        h = zlib.crc32(row[_ID].encode())
        names = _FIRST_F if h % 2 else _FIRST_M
        middle = names[(h >> 1) % len(names)] if h % 3 else ""  # a third have none
        fips = _MA_FIPS.get(row[_COUNTY], "")  # Synthea leaves it empty outside the US
        income = str(15_000 + (h >> 4) % 185_000)
    return [
        *row[: _FIRST + 1],
        middle,
        *row[_FIRST + 1 : _COUNTY + 1],
        fips,
        *row[_COUNTY + 1 :],
        income,
    ]


class _Widening:
    """A csv writer that writes each row in Synthea 3.x's 28-column layout (:func:`_widen`)."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer

    def writerow(self, row: list[str]) -> None:
        self._writer.writerow(_widen(row))

    def writerows(self, rows: Iterable[list[str]]) -> None:
        self._writer.writerows(_widen(r) for r in rows)


def _render(
    out: IO[str],
    rows: Iterable[list[str]],
    n_rows: int,
    defect: str | None,
    newer_columns: bool = False,
) -> None:
    """Write header and ``rows`` (``n_rows`` of them) to ``out`` with ``defect`` applied; in
    Synthea 3.x's 28-column layout with ``newer_columns`` (defects apply first, by the older
    layout's positions)."""
    header = list(COLUMNS)
    if defect == "missing_column":
        header.pop()
    elif defect == "extra_column":
        header.append("LOYALTY_TIER")
    elif defect == "header_whitespace":
        header[_ID], header[_GENDER] = " Id", "GENDER "
    elif defect == "header_case":
        header[_ID], header[_BIRTH] = "id", "Birthdate"
    elif defect == "columns_reordered":
        header[_FIRST], header[_LAST_NAME] = header[_LAST_NAME], header[_FIRST]
    if newer_columns:
        header = _widen(header, is_header=True)
    if defect == "bom_crlf":
        out.write("\ufeff")
    writer: Any = csv.writer(
        out,
        delimiter=";" if defect == "semicolon_delimiter" else ",",
        lineterminator={"bom_crlf": "\r\n", "cr_line_endings": "\r"}.get(defect or "", "\n"),
        quoting=csv.QUOTE_MINIMAL,
    )
    if defect == "header_joined":
        out.write(",".join(header))  # no line break: the first record follows on line 1
    elif defect != "headerless":
        writer.writerow(header)
    if newer_columns:
        writer = _Widening(writer)
    if defect is None or defect in (
        "semicolon_delimiter",
        "bom_crlf",
        "cr_line_endings",
        "headerless",
        "header_joined",
        "header_whitespace",
        "header_case",
        "volume_drop",
        "identity_change",  # applied to the rows by generate_sample
    ):
        writer.writerows(rows)
        return
    positions = set(defect_rows(n_rows)) if defect in ROW_DEFECTS else set()
    prev_id = ""
    hit = 0
    for i, row in enumerate(rows):
        row_id = row[_ID]
        if i in positions:
            row = list(row)
            _apply_row_defect(defect, row, prev_id, hit)
            hit += 1
        elif defect == "missing_column":
            row = row[:-1]
        elif defect == "extra_column":
            row = [*row, _TIERS[i % len(_TIERS)]]
        elif defect == "columns_reordered":
            row = list(row)
            row[_FIRST], row[_LAST_NAME] = row[_LAST_NAME], row[_FIRST]
        elif defect == "zip_leading_zeros_stripped":
            row = list(row)
            row[_ZIP] = row[_ZIP].lstrip("0")
        elif defect == "locale_numbers":
            row = list(row)
            row[_EXPENSES] = _locale(row[_EXPENSES])
            row[_COVERAGE] = _locale(row[_COVERAGE])
        writer.writerow(row)
        if defect == "blank_lines" and (i + 1) % 50 == 0:
            out.write("\n")
        prev_id = row_id


def _apply_row_defect(defect: str, row: list[str], prev_id: str, hit: int) -> None:
    if defect == "null_ids":
        row[_ID] = ""
    elif defect == "duplicate_ids":
        row[_ID] = prev_id
    elif defect == "unknown_gender":
        row[_GENDER] = "UX"[hit % 2]
    elif defect == "future_birthdate":
        row[_BIRTH] = date(2090 + hit % 10, 1 + hit % 12, 1 + hit % 28).isoformat()
        row[_DEATH] = ""
    elif defect == "death_before_birth":
        birth_ord = date.fromisoformat(row[_BIRTH]).toordinal()
        row[_DEATH] = date.fromordinal(birth_ord - 1 - (hit * 97) % 3650).isoformat()
    elif defect == "out_of_range_coordinates":
        row[_LAT], row[_LON] = "95.0", "-200.0"
    elif defect == "non_utf8":
        row[_FIRST] = f"{_LATIN1_NAMES[hit % len(_LATIN1_NAMES)]}{100 + hit % 900}"


def _encode(text: str, n_rows: int, defect: str | None) -> bytes:
    if defect == "empty_file":
        return b""
    if defect == "non_utf8":
        lines = text.split("\n")  # generated fields never contain newlines
        for pos in defect_rows(n_rows):
            lines[pos + 1] = lines[pos + 1].encode("latin-1").decode("utf-8", "surrogateescape")
        return "\n".join(lines).encode("utf-8", "surrogateescape")
    data = text.encode("utf-8")
    if defect == "truncated_last_line" and n_rows > 0:
        body = data[:-1]  # without the final newline
        start = body.rfind(b"\n") + 1
        last = body[start:]
        data = body[: start + len(last) // 2]
    return data


def generate_sample(
    rows: int,
    files: int = 1,
    seed: int = 42,
    defect: str | None = None,
    prefix: str = "patients",
    start_index: int = 0,
    country: str = "US",
    newer_columns: bool = False,
) -> list[SampleFile]:
    """Generate ``files`` Synthea ``patients.csv`` files of ``rows`` rows each.

    Keys are ``{prefix}_{n:04d}.csv`` with ``n = start_index + 1 ...``. ``start_index`` continues an
    earlier batch: ``generate_sample(r, 1, s, start_index=3)[0]`` equals
    ``generate_sample(r, 4, s)[3]`` (earlier files are generated to know whom to re-send).
    ``defect`` (one of :data:`DEFECTS`) goes into the last file only; see the module docstring.
    ``SampleFile.rows`` counts data lines (a truncated last line counts; an empty file has 0).
    ``country`` (one of :data:`COUNTRIES`) picks the Synthea configuration the export imitates.
    ``newer_columns`` writes Synthea 3.x's 28 columns in its order (MIDDLE after FIRST, FIPS after
    COUNTY, INCOME last) instead of the older 25.
    """
    _check_defect(defect)
    _check_country(country)
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    if files < 1:
        raise ValueError(f"files must be at least 1, got {files}")
    if start_index < 0:
        raise ValueError(f"start_index must be >= 0, got {start_index}")
    if defect == "duplicate_ids" and rows < 2:
        raise ValueError("the duplicate_ids defect needs at least 2 rows per file")
    if defect == "identity_change" and start_index + files < 2:
        raise ValueError(
            "the identity_change defect reuses ids of an earlier file: give files >= 2 "
            "(or start_index >= 1)"
        )

    total = start_index + files
    pool: dict[str, list[str]] = {}  # latest version of every patient sent so far
    result: list[SampleFile] = []
    for number in range(1, total + 1):
        rng = _file_rng(seed, number)
        is_last = number == total
        file_defect = defect if is_last else None
        n_rows = max(1, rows // 10) if file_defect == "volume_drop" else rows
        n_resend = int(n_rows * RESEND_FRACTION) if number > 1 else 0
        n_resend = min(n_resend, len(pool))
        batch = [_patient(rng, country) for _ in range(n_rows - n_resend)]
        if n_resend:
            for i, old_id in enumerate(rng.sample(sorted(pool), n_resend)):
                old = pool[old_id]
                batch.append(_changed(rng, old, country) if i % 2 == 0 else list(old))
            rng.shuffle(batch)
        if file_defect == "identity_change":
            _reuse_ids(rng, batch, pool, n_rows)
        for row in batch:
            pool[row[_ID]] = row
        if number <= start_index:
            continue
        buf = io.StringIO()
        _render(buf, batch, n_rows, file_defect, newer_columns)
        data = _encode(buf.getvalue(), n_rows, file_defect)
        result.append(
            SampleFile(
                key=f"{prefix}_{number:04d}.csv",
                data=data,
                rows=0 if file_defect == "empty_file" else n_rows,
                defect=file_defect,
            )
        )
    return result


def _reuse_ids(
    rng: random.Random, batch: list[list[str]], pool: dict[str, list[str]], n_rows: int
) -> None:
    """The identity_change defect: the rows at :func:`defect_rows` take the ``Id`` of earlier
    patients that this file does not otherwise send, and keep their own (different) birth date and
    SSN."""
    in_batch = {row[_ID] for row in batch}
    reusable = sorted(set(pool) - in_batch)
    positions = defect_rows(n_rows)
    for pos, old_id in zip(positions, rng.sample(reusable, len(positions)), strict=True):
        row = list(batch[pos])
        old = pool[old_id]
        row[_ID] = old_id
        if row[_BIRTH] == old[_BIRTH]:  # another person: never the same birth date
            shifted = date.fromisoformat(row[_BIRTH]).toordinal() - 1
            row[_BIRTH] = date.fromordinal(shifted).isoformat()  # death dates stay after it
        if row[_SSN] == old[_SSN]:  # nor the same SSN
            last = int(row[_SSN][-4:])
            row[_SSN] = f"{row[_SSN][:-4]}{(last + 1) % 9000 + 1000:04d}"
        batch[pos] = row


def _stream_patients(rng: random.Random, rows: int, country: str) -> Iterator[list[str]]:
    for _ in range(rows):
        yield _patient(rng, country)


def write_patients_csv(
    out: IO[str] | str | Path,
    rows: int,
    seed: int = 42,
    defect: str | None = None,
    chunk_rows: int = 10_000,
    country: str = "US",
) -> None:
    """Stream ``rows`` new patients to ``out`` (a text stream, or a path written as UTF-8).

    Memory stays bounded by ``chunk_rows`` rows, so millions of rows are fine. The output equals
    the first file of ``generate_sample(rows, 1, seed, defect)`` for the defects it supports (all
    but ``empty_file``, ``truncated_last_line``, ``volume_drop`` and ``non_utf8``, which need the
    whole file in memory or bytes that are not text).
    """
    _check_defect(defect)
    _check_country(country)
    if defect == "identity_change":
        raise ValueError(
            "write_patients_csv writes one file of new patients; the identity_change defect "
            "reuses ids of an earlier file: use generate_sample with files >= 2"
        )
    if defect in _BYTES_DEFECTS:
        raise ValueError(
            f"write_patients_csv cannot stream the {defect!r} defect; use generate_sample"
        )
    if defect == "duplicate_ids" and rows < 2:
        raise ValueError("the duplicate_ids defect needs at least 2 rows")
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    if isinstance(out, str | Path):
        with open(out, "w", encoding="utf-8", newline="") as f:
            write_patients_csv(f, rows, seed, defect, chunk_rows, country)
        return
    rng = _file_rng(seed, 1)
    if defect is None:
        # Clean lines never need quoting (see _Pools), so they are written as rendered:
        # csv-exact and several times faster than csv.writer.
        out.write(",".join(COLUMNS) + "\n")
        line, pools = _patient_line, _pools(country)
        done = 0
        while done < rows:
            n = min(chunk_rows, rows - done)
            out.write("".join([line(rng, pools) for _ in range(n)]))
            done += n
        return
    _render(out, _stream_patients(rng, rows, country), rows, defect)


def next_start_index(names: Iterable[str], prefix: str = "patients") -> int:
    """The ``start_index`` that continues after the highest-numbered ``{prefix}_<n>.csv`` among
    ``names`` (file names, or keys: the part after the last ``/`` counts), so a new batch never
    takes an existing name: ``patients_0004.csv`` after ``patients_0001..0003.csv``; 0 for none."""
    pattern = re.compile(rf"{re.escape(prefix)}_(\d+)\.csv")
    numbers = [
        int(m.group(1)) for name in names if (m := pattern.fullmatch(name.rsplit("/", 1)[-1]))
    ]
    return max(numbers, default=0)


def write_to(source: Putter, files: list[SampleFile], overwrite: bool = True) -> None:
    """Put every file into a landing source (``LocalLandingSource`` or ``S3LandingSource``); with
    ``overwrite=False`` a key that exists raises ``LandingFileExists`` and is left as it was."""
    for f in files:
        source.put(f.key, f.data, overwrite=overwrite)


def write_volume_history(engine: Engine, rows: float, days: int = 10) -> None:
    """Past daily row counts of raw/patients around ``rows``, recorded as the raw asset records
    them (``etl.metrics``), so the volume check has history to judge a new load against (tests,
    benchmarks, a demo of a volume drop)."""
    start = datetime.now(UTC) - timedelta(days=days + 1)
    write_metrics(
        engine,
        [
            MetricPoint(
                RAW_PATIENTS.component,
                RAW_PATIENTS.volume_metric,
                rows + (i % 3) * 2,
                "rows",
                {"asset": RAW_PATIENTS.key},
                start + timedelta(days=i),
            )
            for i in range(days)
        ],
    )
