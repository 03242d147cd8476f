"""URL handling: dialects, masking, and clear errors for URLs that are not Postgres."""

from __future__ import annotations

import pytest

from orbit_pipelines.errors import OrbitError
from orbit_pipelines.store.urls import (
    dagster_storage_url,
    describe_target,
    mask_secrets,
    mask_url,
    parse_url,
    safe_target,
    sqlalchemy_url,
)

SECRET_URL = "postgresql://etl:s3cr3t-pw@db.example.com:6543/orbit"


def test_mask_url_hides_the_password() -> None:
    masked = mask_url(SECRET_URL)
    assert "s3cr3t-pw" not in masked
    assert masked == "postgresql://etl:***@db.example.com:6543/orbit"


def test_mask_url_copes_with_unparseable_text() -> None:
    masked = mask_url("not a url://etl:s3cr3t-pw@host")
    assert "s3cr3t-pw" not in masked


def test_our_engines_use_psycopg3_and_dagster_gets_psycopg2() -> None:
    assert sqlalchemy_url(SECRET_URL).drivername == "postgresql+psycopg"
    assert dagster_storage_url(SECRET_URL).startswith("postgresql+psycopg2://etl:s3cr3t-pw@")


def test_describe_target_names_host_port_and_database() -> None:
    assert describe_target(SECRET_URL) == "db.example.com:6543/orbit"
    assert describe_target("postgresql://postgres:@/postgres?host=/tmp/sock").startswith(
        "/tmp/sock"
    )


@pytest.mark.parametrize("bad", ["mysql://u:pw@host/db", "just-text"])
def test_non_postgres_urls_fail_with_a_code(bad: str) -> None:
    with pytest.raises(OrbitError) as info:
        parse_url(bad)
    assert info.value.code == "E-2007"
    assert "pw" not in str(info.value).replace("postgresql://user:password", "")


def test_a_port_that_is_not_a_number_is_e2007_with_the_password_masked() -> None:
    with pytest.raises(OrbitError) as caught:
        parse_url("postgresql://orbit:hunter2@db:port/orbit")
    assert caught.value.error.code == "E-2007"
    assert "hunter2" not in caught.value.render() and "***" in caught.value.render()


def test_a_password_in_the_query_string_is_masked() -> None:
    masked = mask_url("postgresql://etl@db:5432/orbit?sslmode=require&password=s3cr3t-pw")
    assert "s3cr3t-pw" not in masked
    assert masked.endswith("password=***")
    assert "s3cr3t-pw" not in mask_url(parse_url("postgresql://etl@db/orbit?password=s3cr3t-pw"))


def test_a_libpq_keyword_string_is_e2007_with_the_password_masked() -> None:
    text = "host=db port=5432 dbname=orbit user=etl password=s3cr3t-pw"
    assert mask_url(text) == "host=db port=5432 dbname=orbit user=etl password=***"
    assert "s3cr3t-pw" not in mask_url("host=db password='s3cr3t pw' user=etl")
    with pytest.raises(OrbitError) as caught:
        parse_url(text)
    assert caught.value.code == "E-2007"
    assert "s3cr3t-pw" not in caught.value.render()


def test_an_unescaped_at_in_the_password_is_masked_and_parsed_as_meant() -> None:
    url = "postgresql://etl:pre@s3cr3t-pw@db.example.com:6543/orbit"
    assert mask_url(url) == "postgresql://etl:***@db.example.com:6543/orbit"
    parsed = parse_url(url)
    assert (parsed.password, parsed.host) == ("pre@s3cr3t-pw", "db.example.com")
    assert describe_target(url) == "db.example.com:6543/orbit"


def test_mask_secrets_cleans_free_text() -> None:
    text = "could not connect with postgresql://etl:pre@pw@h/db, then password=pw2 failed"
    cleaned = mask_secrets(text)
    assert "pre@pw" not in cleaned and "pw2" not in cleaned


def test_safe_target_never_carries_credentials() -> None:
    assert safe_target("postgresql://etl:pw@db:5432/orbit?password=x") == "db:5432/orbit"
    assert safe_target("host=db password=pw") == "(unparseable URL)"
