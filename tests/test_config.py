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


CLIENT = {"SHOPIFY_SHOP_DOMAIN": "acme.myshopify.com", "SHOPIFY_CLIENT_ID": "dev-dashboard-client-id",
          "SHOPIFY_CLIENT_SECRET": "test-client-secret-value"}


def test_client_credentials_are_the_other_way_in_and_their_secret_is_redacted():
    settings = load_settings(CLIENT)
    shop = settings.shopify
    assert shop.client_id == "dev-dashboard-client-id" and shop.access_token is None
    assert shop.client_secret.get_secret_value() == "test-client-secret-value"
    assert "test-client-secret-value" in settings.secrets()
    assert "test-client-secret-value" not in repr(settings)


def test_the_token_endpoint_is_on_the_shop_unless_the_api_base_url_is_overridden():
    assert load_settings(CLIENT).shopify.token_url == "https://acme.myshopify.com/admin/oauth/access_token"
    moved = load_settings({**CLIENT, "SHOPIFY_API_BASE_URL": "http://127.0.0.1:8080"})
    assert moved.shopify.token_url == "http://127.0.0.1:8080/admin/oauth/access_token"


@pytest.mark.parametrize("extra, names", [
    ({"SHOPIFY_ACCESS_TOKEN": "shpat_test_secret_value"}, ["SHOPIFY_CLIENT_ID", "SHOPIFY_ACCESS_TOKEN", "not both"]),
    ({"SHOPIFY_CLIENT_SECRET": None}, ["SHOPIFY_CLIENT_ID is set but SHOPIFY_CLIENT_SECRET is not"]),
    ({"SHOPIFY_CLIENT_ID": None}, ["SHOPIFY_CLIENT_SECRET is set but SHOPIFY_CLIENT_ID is not"]),
])
def test_both_ways_at_once_or_half_a_pair_is_refused_naming_the_variables(extra, names):
    env = {k: v for k, v in {**CLIENT, **extra}.items() if v is not None}
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert all(name in str(caught.value) for name in names)
    assert "test-client-secret-value" not in str(caught.value) and "shpat_test_secret_value" not in str(caught.value)


def test_a_shop_without_either_way_in_names_both():
    reason = load_settings({"SHOPIFY_SHOP_DOMAIN": "acme.myshopify.com"}).not_configured["shopify"]
    assert "SHOPIFY_CLIENT_ID and SHOPIFY_CLIENT_SECRET" in reason and "SHOPIFY_ACCESS_TOKEN" in reason
