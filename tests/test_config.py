"""Settings: every malformed value is an exit-2 error naming the variable, never echoing a secret."""

from __future__ import annotations

import pytest

from pipelines.config import REPO_ROOT, ConfigError, load_settings

BASE = {"SHOPIFY_SHOP_DOMAIN": "acme.myshopify.com", "SHOPIFY_ACCESS_TOKEN": "shpat_test_secret_value"}


@pytest.mark.parametrize("domain", ["acme.myshopify.com\n", "https://acme.myshopify.com", "user@acme.myshopify.com",
                                    "acme.myshopify.com:443", "acme.myshopify.com/admin", "ACME.myshopify.com",
                                    "acme.myshopify.com.evil.example", "acme.example.com", "-acme.myshopify.com"])
def test_shop_domain_must_be_exactly_name_myshopify_com(domain):
    with pytest.raises(ConfigError, match="SHOPIFY_SHOP_DOMAIN"):
        load_settings({**BASE, "SHOPIFY_SHOP_DOMAIN": domain})


@pytest.mark.parametrize("url", ["http://example.com", "ftp://127.0.0.1", "not a url", "http://user:pw@127.0.0.1:8080",
                                 "http://127.0.0.1:8080/admin", "https://host.example?x=1"])
def test_base_url_override_is_checked(url):
    with pytest.raises(ConfigError, match="SHOPIFY_API_BASE_URL"):
        load_settings({**BASE, "SHOPIFY_API_BASE_URL": url})


@pytest.mark.parametrize("url, expected", [("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
                                           ("http://localhost:9/", "http://localhost:9"),
                                           ("https://proxy.example.com", "https://proxy.example.com")])
def test_base_url_override_accepted(url, expected):
    settings = load_settings({**BASE, "SHOPIFY_API_BASE_URL": url})
    assert settings.shopify.graphql_url == f"{expected}/admin/api/2026-10/graphql.json"


def test_defaults_are_anchored_at_the_repository_and_point_at_the_real_shop():
    settings = load_settings(BASE)
    assert settings.data_dir == REPO_ROOT / "data" and settings.logs_dir == REPO_ROOT / "logs"
    assert settings.cache_dir == REPO_ROOT / ".cache" / "api"
    assert settings.shopify.graphql_url == "https://acme.myshopify.com/admin/api/2026-10/graphql.json"


def test_relative_paths_in_settings_are_relative_to_the_repository():
    assert load_settings({**BASE, "PIPELINE_DATA_DIR": "elsewhere"}).data_dir == REPO_ROOT / "elsewhere"


def test_errors_never_echo_the_token():
    env = {**BASE, "SHOPIFY_API_VERSION": "latest"}
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert "shpat_test_secret_value" not in str(caught.value)
    assert "shpat_test_secret_value" not in repr(load_settings(BASE))


def test_partial_credentials_mean_not_configured_naming_the_missing_variable():
    settings = load_settings({"SHOPIFY_SHOP_DOMAIN": "acme.myshopify.com"})
    assert settings.shopify is None
    assert "SHOPIFY_ACCESS_TOKEN" in settings.not_configured["shopify"]


@pytest.mark.parametrize("name, value", [("PIPELINE_QUARANTINE_MAX_PERCENT", "two"), ("PIPELINE_OUTPUT_FILE_MODE", "rw-r"),
                                         ("PIPELINE_MAX_ATTEMPTS", "0")])
def test_malformed_numbers_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        load_settings({**BASE, name: value})
