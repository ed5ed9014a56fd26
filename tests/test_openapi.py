"""The OpenAPI document: complete, valid, rendered at /docs, and true of the running app."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from openapi_spec_validator import validate

from livekit_auth.apidoc import operation_of

from bench.servers import live_server

from .support import clear_database

# Endpoints that are pages or files for people, or Prometheus text, not JSON API operations.
NOT_API = {"static", "docs.docs_page", "docs.docs_asset", "health.metrics", "health.favicon"}


def api_endpoints(app) -> set[str]:
    """Every endpoint of the app that belongs in the document: not pages, not the admin."""
    return {
        rule.endpoint for rule in app.url_map.iter_rules()
        if rule.endpoint not in NOT_API and not rule.endpoint.startswith("admin.")
    }


def test_every_route_of_the_app_is_documented(app, client) -> None:
    document = client.get("/openapi.json").json
    for rule in app.url_map.iter_rules():
        if rule.endpoint not in api_endpoints(app):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        assert path in document["paths"], rule.rule
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in document["paths"][path], (rule.rule, method)
    documented = {endpoint for endpoint, view in app.view_functions.items() if operation_of(view) is not None}
    assert documented == api_endpoints(app)


def test_each_operation_states_every_status_its_route_can_answer(client) -> None:
    paths = client.get("/openapi.json").json["paths"]

    def answered(path: str, method: str) -> set[str]:
        responses = set(paths[path][method]["responses"])
        assert {"414", "431"} <= responses  # gunicorn's limits, before any route
        return responses - {"414", "431"}

    # The gate's refusal, scope check and throttle on every route behind it; a body's 400, 413 and 415.
    assert answered("/auth/check-key", "get") == {"200", "400", "401", "403", "429", "500", "503"}
    assert answered("/auth/verify", "get") == {"204", "400", "401", "403", "429", "500", "503"}
    assert answered("/auth/keys", "post") == {"200", "400", "401", "403", "409", "413", "415", "429", "500", "503"}
    assert answered("/auth/keys/{key_id}", "delete") == {"200", "400", "401", "403", "404", "429", "500", "503"}
    # A public route's 429 comes from its own limit; a probe without the database has no 503.
    assert answered("/auth/create-key", "post") == {"200", "400", "409", "413", "415", "429", "500", "503"}
    assert answered("/health", "get") == {"200", "500"}
    assert answered("/health/ready", "get") == {"200", "500", "503"}


def test_only_a_400_describes_field_errors(client) -> None:
    responses = client.get("/openapi.json").json["components"]["responses"]
    for name, response in responses.items():
        schema = response["content"]["application/json"]["schema"]
        assert ("errors" in schema["properties"]) == (name == "Error400"), name


def test_the_document_is_valid_openapi_3_1(client) -> None:
    document = client.get("/openapi.json").json
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_the_document_describes_the_key_header_and_public_operations(client) -> None:
    document = client.get("/openapi.json").json
    scheme = document["components"]["securitySchemes"]["ApiKeyHeader"]
    assert scheme == {"type": "apiKey", "in": "header", "name": "x-api-key"}
    assert document["paths"]["/auth/create-key"]["post"]["security"] == []
    assert "security" not in document["paths"]["/auth/check-key"]["get"]
    responses = document["paths"]["/auth/create-key"]["post"]["responses"]
    assert {"200", "400", "409", "413", "415", "500"} <= set(responses)


def test_the_docs_page_uses_only_assets_the_app_serves(client) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "http://" not in html and "https://" not in html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert len(assets) == 3
    for asset in assets:
        with client.get(asset) as response:
            assert response.status_code == 200, asset


# Revoking or rotating the fuzzer's own key would leave it nothing to test the rest with,
# so those two operations run after the others, each with keys of their own.
KEY_ENDING_OPERATIONS = ["auth_revoke_key", "auth_rotate_key"]


def schemathesis(server, key: str, workdir: Path, *selection: str) -> str:
    """Run schemathesis on the live app's document; fail on any check it fails."""
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"), "run", f"{server.url}/openapi.json",
            "--checks", "not_a_server_error,status_code_conformance,"
            "content_type_conformance,response_schema_conformance",
            "--max-examples", "25", "--seed", "1", "--generation-database", "none",
            "--header", f"x-api-key: {key}", "--request-timeout", "10", *selection,
        ],
        cwd=workdir, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    return result.stdout


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_schema_violation(database_uri, tmp_path) -> None:
    if database_uri.startswith("sqlite"):
        database_uri = f"sqlite:///{tmp_path / 'schemathesis.db'}"
    with live_server(database_uri, tmp_path) as server:

        def new_key(email: str) -> str:
            body = {"user_name": "Fuzz", "user_email": email}
            response = requests.post(f"{server.url}/auth/create-key", json=body, timeout=10)
            return response.json()["data"]["api_key"]

        excluded = [arg for op in KEY_ENDING_OPERATIONS for arg in ("--exclude-operation-id", op)]
        output = schemathesis(server, new_key("fuzz@example.com"), tmp_path, *excluded)
        assert "Authentication failed" not in output
        for number, operation_id in enumerate(KEY_ENDING_OPERATIONS):
            key = new_key(f"fuzz{number}@example.com")
            schemathesis(server, key, tmp_path, "--include-operation-id", operation_id)
        assert "Traceback" not in server.log()
    if not database_uri.startswith("sqlite"):
        clear_database(database_uri)  # the tests after this one start from empty tables


@pytest.mark.parametrize("asset", ["index.html", "oauth2-redirect.html", "swagger-initializer.js", "../__init__.py"])
def test_no_file_of_swagger_ui_but_the_two_the_page_loads_is_served(client, asset) -> None:
    assert client.get(f"/docs/assets/{asset}").status_code == 404


@pytest.mark.parametrize("path", ["/docs", "/docs/assets/swagger-ui.css", "/docs/assets/swagger-ui-bundle.js"])
def test_the_docs_carry_the_admins_protections(client, path) -> None:
    with client.get(path) as response:
        assert response.status_code == 200
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert "script-src 'self';" in response.headers["Content-Security-Policy"]
