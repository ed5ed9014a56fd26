"""The OpenAPI document: complete, valid, rendered at /docs, and true of the running app."""

import re
import subprocess
import sys
from pathlib import Path

import requests
from openapi_spec_validator import validate

from livekit_auth.openapi import OPERATIONS

from .support import live_server

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
    assert set(OPERATIONS) == api_endpoints(app)


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
