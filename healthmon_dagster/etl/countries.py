"""Country formats for staging: which country a record's ``STATE`` implies, and that country's
postal-code and national-id formats (regexes for ``regexp_match``, the same on SQLite and Postgres).

Synthea's US exports name US states in ``STATE``; its international configurations name the
regions of their country (German Länder, Brazilian states, Canadian provinces). A state of no
listed country leaves the country unknown: the configured default country applies, else the
generic patterns.
"""

from dataclasses import dataclass, field

ACCENTED = "ÀÁÂÃÄÅÇÈÉÊËÌÍÎÏÑÒÓÔÕÖÙÚÛÜÝàáâãäåçèéêëìíîïñòóôõöùúûüýÿ"
UNACCENTED = "AAAAAACEEEEIIIINOOOOOUUUUYaaaaaaceeeeiiiinooooouuuuyy"
"""``translate(state, ACCENTED, UNACCENTED)`` then ``lower`` folds a state name for matching:
the same in SQL (Postgres' ``translate``, a registered function on SQLite) and in Python. After
the translation the text is ASCII, so ``lower`` folds it on either database and in any locale."""
_FOLD = str.maketrans(ACCENTED, UNACCENTED)


def fold(name: str) -> str:
    """``name`` without accents, in lower case: how state names are matched."""
    return name.translate(_FOLD).lower()


@dataclass(frozen=True)
class Format:
    """A value format: ``regex`` (for ``regexp_match``) and, for the generic formats, length
    bounds kept out of the regex (a bounded repetition such as ``{2,30}`` makes the regex several
    times slower on Postgres)."""

    regex: str
    min_length: int | None = None
    max_length: int | None = None


GENERIC_POSTAL = Format(r"^[A-Za-z0-9 -]+$", 2, 10)
"""A postal code of any country: letters, digits, spaces and hyphens, 2-10 characters."""
GENERIC_ID = Format(r"^[A-Za-z0-9 ./-]+$", 2, 30)
"""An identity document number of any country: letters, digits, ``. / -`` and spaces, 2-30."""
US_SSN_RE = r"^[0-9]{3}-[0-9]{2}-[0-9]{4}$"


@dataclass(frozen=True)
class Country:
    code: str
    postal: Format
    # The format of the SSN column; None: the generic id format.
    national_id: Format | None
    states: tuple[str, ...]
    # The states folded (:func:`fold`): real exports spell some in another case or without
    # accents (synthea-international's DE files write ``Nordrhein-westfalen``).
    folded_states: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "folded_states", tuple(sorted({fold(s) for s in self.states})))


US = Country(
    "US",
    Format(r"^[0-9]{5}(-[0-9]{4})?$"),
    Format(US_SSN_RE),
    (
        "Alabama",
        "Alaska",
        "Arizona",
        "Arkansas",
        "California",
        "Colorado",
        "Connecticut",
        "Delaware",
        "District of Columbia",
        "Florida",
        "Georgia",
        "Hawaii",
        "Idaho",
        "Illinois",
        "Indiana",
        "Iowa",
        "Kansas",
        "Kentucky",
        "Louisiana",
        "Maine",
        "Maryland",
        "Massachusetts",
        "Michigan",
        "Minnesota",
        "Mississippi",
        "Missouri",
        "Montana",
        "Nebraska",
        "Nevada",
        "New Hampshire",
        "New Jersey",
        "New Mexico",
        "New York",
        "North Carolina",
        "North Dakota",
        "Ohio",
        "Oklahoma",
        "Oregon",
        "Pennsylvania",
        "Rhode Island",
        "South Carolina",
        "South Dakota",
        "Tennessee",
        "Texas",
        "Utah",
        "Vermont",
        "Virginia",
        "Washington",
        "West Virginia",
        "Wisconsin",
        "Wyoming",
        "Puerto Rico",
        "Guam",
        "American Samoa",
        "Northern Mariana Islands",
        "U.S. Virgin Islands",
    ),
)
DE = Country(
    "DE",
    Format(r"^[0-9]{5}$"),
    None,
    (
        "Baden-Württemberg",
        "Bayern",
        "Berlin",
        "Brandenburg",
        "Bremen",
        "Hamburg",
        "Hessen",
        "Mecklenburg-Vorpommern",
        "Niedersachsen",
        "Nordrhein-Westfalen",
        "Rheinland-Pfalz",
        "Saarland",
        "Sachsen",
        "Sachsen-Anhalt",
        "Schleswig-Holstein",
        "Thüringen",
    ),
)
BR = Country(
    "BR",
    Format(r"^[0-9]{5}-?[0-9]{3}$"),
    None,
    (
        "Acre",
        "Alagoas",
        "Amapá",
        "Amazonas",
        "Bahia",
        "Ceará",
        "Distrito Federal",
        "Espírito Santo",
        "Goiás",
        "Maranhão",
        "Mato Grosso",
        "Mato Grosso do Sul",
        "Minas Gerais",
        "Pará",
        "Paraíba",
        "Paraná",
        "Pernambuco",
        "Piauí",
        "Rio de Janeiro",
        "Rio Grande do Norte",
        "Rio Grande do Sul",
        "Rondônia",
        "Roraima",
        "Santa Catarina",
        "São Paulo",
        "Sergipe",
        "Tocantins",
    ),
)
CA = Country(
    "CA",
    # A full postal code, or its forward sortation area alone (synthea-international's CA
    # exports write 3-character codes such as ``T5B``).
    Format(r"^[A-Za-z][0-9][A-Za-z]( ?[0-9][A-Za-z][0-9])?$"),
    None,
    (
        "Alberta",
        "British Columbia",
        "Manitoba",
        "New Brunswick",
        "Newfoundland and Labrador",
        "Northwest Territories",
        "Nova Scotia",
        "Nunavut",
        "Ontario",
        "Prince Edward Island",
        "Quebec",
        "Saskatchewan",
        "Yukon",
    ),
)

COUNTRIES: dict[str, Country] = {c.code: c for c in (US, DE, BR, CA)}
"""The countries with a pattern of their own; any other country gets the generic patterns."""


def postal_format(country: str | None) -> Format:
    """The postal-code format of ``country`` (generic for None or a country without one)."""
    known = COUNTRIES.get(country or "")
    return known.postal if known else GENERIC_POSTAL


def national_id_format(country: str | None) -> Format:
    """The format of the SSN column for ``country`` (generic unless the country has one)."""
    known = COUNTRIES.get(country or "")
    return known.national_id if known and known.national_id else GENERIC_ID
