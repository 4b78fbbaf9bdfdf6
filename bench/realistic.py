"""Deterministic "realistic" shop data for bench/engines.py: customers, orders and reviews.

Mixed integers, short and long text drawn from a vocabulary with a skewed
(Zipf-like) word frequency, parcel tracking numbers, timestamps and
numerics: at scale 1.0 about 800 MB as a PostgreSQL database (805 MiB
measured), whose ``pg_dump -Fc -Z0`` compresses 2.5x under zstd -3. The
rows are written once as tab-separated files (the text format both ``COPY
FROM STDIN`` and ``LOAD DATA LOCAL INFILE`` read), then loaded into each
server.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

COMMON = (
    "the of and to in is you that it was for on are as with they at be this have from or one had by "
    "word but not what all were we when your can said there use each which do how their if will up "
    "other about out many then them these so some would make like into time has look two more write "
    "see number way could people than first been call who now find long down day did get come made "
    "may part order shipped delayed refund invoice customer payment pending warehouse backorder "
    "express standard priority returned damaged gift wrap coupon great quality product arrived late "
    "works fine buy again size color fits small large box broken quickly service support battery "
    "cable charger screen sound light heavy cheap price value recommend love hate okay poor excellent"
).split()
SYLLABLES = (
    "ka lo mi ne ru sa ti vo be da fe gi ho ju ky la ma no pe qu re si to un ve wi xa yo ze ar el in "
    "or us an en on st tr pl gr br ch sh th"
).split()
FIRST = (
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara Richard "
    "Susan Joseph Jessica Thomas Sarah Christopher Karen Charles Lisa Daniel Nancy Matthew Betty "
    "Anthony Margaret Mark Sandra Donald Ashley Steven Kimberly Paul Emily Zoë José Łukasz Søren "
    "Aiko Chen Priya Olumide Fatima Mateo Ingrid Dmitri Ana Kwame"
).split()
LAST = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez "
    "Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris "
    "Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill "
    "Müller Kowalski Tanaka Okafor Ivanova Haddad Silva Johansson Novak O'Brien"
).split()
CITIES = (
    "London Paris Berlin Madrid Rome Lisbon Dublin Vienna Prague Warsaw Oslo Stockholm Helsinki "
    "Copenhagen Amsterdam Brussels Zürich Athens Lagos Nairobi Tokyo Osaka Seoul Mumbai Delhi Lima "
    "Bogotá Toronto Chicago Boston Denver Seattle Austin Sydney Auckland"
).split()
COUNTRIES = "GB FR DE ES IT PT IE AT CZ PL NO SE FI DK NL BE CH GR NG KE JP KR IN PE CO CA US AU NZ".split()
DOMAINS = ["example.com", "mail.example.org", "corp.example.net", "shop.example.io"]
CARRIERS = ["1Z", "JD", "TBA", "RR"]
STATUSES = ["new", "paid", "shipped", "delivered", "delivered", "delivered", "cancelled", "refunded"]

# Rows at scale 1.0.
CUSTOMERS = 400_000
ORDERS = 2_800_000
REVIEWS = 650_000
VOCABULARY = 40000
SPAN = 5 * 365 * 86400
BATCH = 20_000

TABLES = ("customers", "orders", "reviews")

POSTGRES_DDL = """
CREATE TABLE customers (id integer NOT NULL, name text NOT NULL, email text NOT NULL, city text,
    country char(2), signup_at timestamptz NOT NULL, credit numeric(12,2), tier smallint);
CREATE TABLE orders (id bigint NOT NULL, customer_id integer NOT NULL, status text NOT NULL,
    placed_at timestamptz NOT NULL, shipped_at timestamptz, total numeric(12,2) NOT NULL,
    items integer NOT NULL, discount numeric(5,2), tracking text, note text);
CREATE TABLE reviews (id bigint NOT NULL, order_id bigint NOT NULL, customer_id integer NOT NULL,
    rating smallint NOT NULL, created_at timestamptz NOT NULL, title text, body text);
"""
POSTGRES_INDEXES = """
ALTER TABLE customers ADD PRIMARY KEY (id);
ALTER TABLE orders ADD PRIMARY KEY (id);
ALTER TABLE reviews ADD PRIMARY KEY (id);
CREATE INDEX orders_customer_id ON orders (customer_id);
CREATE INDEX reviews_order_id ON reviews (order_id);
"""
MARIADB_DDL = [
    "CREATE TABLE customers (id int NOT NULL PRIMARY KEY, name varchar(100) NOT NULL, email varchar(150) NOT NULL, "
    "city varchar(50), country char(2), signup_at datetime NOT NULL, credit decimal(12,2), tier smallint) "
    "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE orders (id bigint NOT NULL PRIMARY KEY, customer_id int NOT NULL, status varchar(20) NOT NULL, "
    "placed_at datetime NOT NULL, shipped_at datetime, total decimal(12,2) NOT NULL, items int NOT NULL, "
    "discount decimal(5,2), tracking varchar(20), note text, KEY orders_customer_id (customer_id)) "
    "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE reviews (id bigint NOT NULL PRIMARY KEY, order_id bigint NOT NULL, customer_id int NOT NULL, "
    "rating smallint NOT NULL, created_at datetime NOT NULL, title varchar(255), body text, "
    "KEY reviews_order_id (order_id)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
]


def vocabulary(rnd: random.Random) -> tuple[list[str], list[float]]:
    """Return the words and cumulative weights (Zipf-like: the k-th word has weight 1/k**0.8)."""
    words = list(dict.fromkeys(COMMON))
    seen = set(words)
    while len(words) < VOCABULARY:
        word = "".join(rnd.choice(SYLLABLES) for _ in range(rnd.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words, list(itertools.accumulate(rank ** -0.8 for rank in range(1, len(words) + 1)))


class _Words:
    """Draw words in big batches (random.choices is fast per call, slow per word)."""

    def __init__(self, rnd: random.Random) -> None:
        self.rnd = rnd
        self.words, self.weights = vocabulary(rnd)
        self.pool: list[str] = []
        self.at = 0

    def text(self, count: int) -> str:
        if self.at + count > len(self.pool):
            self.pool = self.rnd.choices(self.words, cum_weights=self.weights, k=1_000_000)
            self.at = 0
        start, self.at = self.at, self.at + count
        return " ".join(self.pool[start:self.at])


def _stamp(seconds: int) -> str:
    # Formatting by hand is several times faster than time.strftime per row.
    days, rest = divmod(seconds, 86400)
    return f"{_DATES[days]} {rest // 3600:02d}:{rest // 60 % 60:02d}:{rest % 60:02d}"


def _dates() -> list[str]:
    import datetime

    start = datetime.date(2019, 1, 1)
    return [(start + datetime.timedelta(days=n)).isoformat() for n in range(SPAN // 86400 + 400)]


_DATES = _dates()


def _write(path: Path, rows) -> int:
    count = 0
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        for batch in rows:
            out.write("".join(batch))
            count += len(batch)
    return count


def _customers(rnd: random.Random, count: int):
    randint, choice = rnd.randint, rnd.choice
    for start in range(1, count + 1, BATCH):
        batch = []
        for cid in range(start, min(start + BATCH, count + 1)):
            first, last = choice(FIRST), choice(LAST)
            mail = f"{first.lower()}.{last.lower().replace(chr(39), '')}{randint(1, 999)}@{choice(DOMAINS)}"
            batch.append(f"{cid}\t{first} {last}\t{mail}\t{choice(CITIES)}\t{choice(COUNTRIES)}\t"
                         f"{_stamp(randint(0, SPAN))}\t{randint(0, 2_000_000) / 100:.2f}\t{randint(1, 5)}\n")
        yield batch


def _orders(rnd: random.Random, words: _Words, count: int, customers: int):
    randint, random_ = rnd.randint, rnd.random
    placed = 0
    for start in range(1, count + 1, BATCH):
        batch = []
        for oid in range(start, min(start + BATCH, count + 1)):
            placed += randint(0, 2 * SPAN // count)
            status = STATUSES[randint(0, 7)]
            sent = status in ("shipped", "delivered")
            shipped = _stamp(placed + randint(3600, 7 * 86400)) if sent else "\\N"
            tracking = f"{CARRIERS[randint(0, 3)]}{randint(10 ** 11, 10 ** 12 - 1)}" if sent else "\\N"
            discount = f"{randint(0, 3000) / 100:.2f}" if random_() < 0.3 else "\\N"
            note = words.text(randint(2, 9)) if random_() < 0.4 else "\\N"
            batch.append(f"{oid}\t{randint(1, customers)}\t{status}\t{_stamp(placed)}\t{shipped}\t"
                         f"{randint(100, 5_000_000) / 100:.2f}\t{randint(1, 12)}\t{discount}\t{tracking}\t{note}\n")
        yield batch


def _reviews(rnd: random.Random, words: _Words, count: int, orders: int, customers: int):
    randint = rnd.randint
    for start in range(1, count + 1, BATCH):
        batch = []
        for rid in range(start, min(start + BATCH, count + 1)):
            batch.append(f"{rid}\t{randint(1, orders)}\t{randint(1, customers)}\t{randint(1, 5)}\t"
                         f"{_stamp(randint(0, SPAN))}\t{words.text(randint(3, 9))}\t"
                         f"{words.text(randint(20, 100))}\n")
        yield batch


def write_tables(directory: Path, scale: float = 1.0, seed: int = 20240611) -> dict[str, tuple[Path, int]]:
    """Write the three tables as TSV files into ``directory``; return {table: (path, rows)}."""
    rnd = random.Random(seed)
    words = _Words(rnd)
    customers = max(1, int(CUSTOMERS * scale))
    orders = max(1, int(ORDERS * scale))
    reviews = max(1, int(REVIEWS * scale))
    written = {}
    for table, rows in (("customers", _customers(rnd, customers)),
                        ("orders", _orders(rnd, words, orders, customers)),
                        ("reviews", _reviews(rnd, words, reviews, orders, customers))):
        path = directory / f"{table}.tsv"
        written[table] = (path, _write(path, rows))
    return written
