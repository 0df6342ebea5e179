"""The price refresh from AWS's public price list: a slice of the real offer-file shape, served
over HTTP from 127.0.0.1 by a real server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench.facts.catalog import Catalog
from cloud import prices
from cloud.cli import main
from tests.conftest import REPO

SLICE = REPO / "tests" / "data" / "aws-offer-file-slice.json"
NOW = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)


@pytest.fixture
def price_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An HTTP server on 127.0.0.1 with eu-west-1's offer file; DLSTATION_OFFER_URL points there."""
    root = tmp_path / "offers"
    (root / "eu-west-1").mkdir(parents=True)
    (root / "eu-west-1" / "index.json").write_text(SLICE.read_text())
    handler = partial(SimpleHTTPRequestHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{{region}}/index.json"
    monkeypatch.setenv(prices.OFFER_URL_ENV, url)
    yield root
    server.shutdown()
    server.server_close()


def test_the_linux_on_demand_price_is_the_one_taken(price_list: Path) -> None:
    lines: list[str] = []
    data = prices.refresh_from_offer_files(Catalog.packaged(), ["eu-west-1"], NOW, say=lines.append)
    refreshed = Catalog(data)
    # Windows, dedicated tenancy, an unused reservation and the reserved term are other prices.
    assert refreshed.on_demand("g5.xlarge", "eu-west-1").usd_per_hour == 1.123
    assert refreshed.on_demand("p5.4xlarge", "eu-west-1").usd_per_hour == 7.648
    assert refreshed.on_demand("g5.xlarge", "us-east-1").usd_per_hour == 1.006, "kept"
    assert "m5.large" not in refreshed.types, "only the catalog's GPU types"
    assert data["as_of"] == "2026-12-01"
    assert data["sources"]["on_demand"] == (
        "AWS price list (offer files), Linux: eu-west-1 2026-11-20T00:00:00Z"
    )
    assert lines[0].startswith("eu-west-1: 2 on-demand prices; not offered there: g4dn.12xlarge")


def test_dlcloud_writes_the_refreshed_catalog(price_list: Path, tmp_path: Path, capsys) -> None:
    output = tmp_path / "catalog.json"
    code = main(
        ["--region", "eu-west-1", "prices", "--refresh", "--offer-file", "--output", str(output)]
    )
    assert code == 0, capsys.readouterr().err
    written = Catalog.load(output)
    assert written.on_demand("g5.xlarge", "eu-west-1").usd_per_hour == 1.123
    assert f"catalog written to {output}" in capsys.readouterr().out


def test_a_missing_or_foreign_file_leaves_the_catalog_alone(
    price_list: Path, tmp_path: Path, capsys
) -> None:
    output = tmp_path / "catalog.json"
    code = main(
        ["prices", "--refresh", "--offer-file", "--regions", "ap-south-9", "--output", str(output)]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "could not read AWS's price list" in err and "404" in err and "Traceback" not in err
    (price_list / "eu-west-1" / "index.json").write_text(json.dumps({"formatVersion": "v1.0"}))
    code = main(
        ["prices", "--refresh", "--offer-file", "--regions", "eu-west-1", "--output", str(output)]
    )
    assert code == 1
    assert "is not an AWS offer file" in capsys.readouterr().err
    assert not output.exists()


def test_offers_say_the_catalogs_date(capsys) -> None:
    assert main(["--region", "us-east-1", "offers", "--gpu", "H100"]) == 0
    out = capsys.readouterr().out
    assert "p5.4xlarge" in out and "6.88" in out
    assert f"catalog of {Catalog.packaged().as_of}" in out


def test_the_catalog_has_what_people_rent_now() -> None:
    catalog = Catalog.packaged()
    expected = {
        "p5.4xlarge": ("H100", 1, 80, 6.88),
        "p5.48xlarge": ("H100", 8, 80, 55.04),
        "p5en.48xlarge": ("H200", 8, 141, 63.30),
        "p6-b200.48xlarge": ("B200", 8, 179, 113.93),
        "g7e.2xlarge": ("RTX PRO 6000", 1, 96, 3.36),
        "g7.2xlarge": ("RTX PRO 4500", 1, 32, 2.52),
        "gr6.4xlarge": ("L4", 1, 24, 1.5392),
    }
    for kind, (gpu, count, memory, usd) in expected.items():
        found = catalog.get(kind)
        assert gpu in found.gpu and (found.gpu_count, found.gpu_memory_gib) == (count, memory)
        assert catalog.on_demand(kind, "us-east-1").usd_per_hour == usd
    assert catalog.as_of == "2026-12-01"
    assert all(t.on_demand for t in catalog.types.values()), "every type has a price"
