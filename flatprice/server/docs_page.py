"""The Swagger UI page at `/`, served by the guard instead of BentoML's: BentoML's page loads Google Tag
Manager into the service's origin and its CSS hides the API's title. This one loads only BentoML's own
Swagger UI files from this server, and its Content-Security-Policy refuses scripts from anywhere else."""

from __future__ import annotations

from ..api import API_INFO
from ..intervals import DEFAULT_LEVEL, LEVEL_PARAMETER, LEVELS

PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<title>{API_INFO["title"]}</title>
<link rel="stylesheet" type="text/css" href="./static_content/swagger-ui.css">
<style>.topbar {{ display: none; }} body {{ margin: 0; background: #fafafa; }}</style>
</head>
<body>
<div id="swagger-ui"></div>
<script src="./static_content/swagger-ui-bundle.js" charset="UTF-8"></script>
<script src="./static_content/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
<script src="./static_content/swagger-initializer.js" charset="UTF-8"></script>
</body>
</html>
""".encode()

# Swagger UI sets inline styles as it renders; scripts, data and fonts come from this origin only.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def page_messages() -> tuple[dict, dict]:
    headers = [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", str(len(PAGE)).encode()),
        (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
        (b"x-content-type-options", b"nosniff"),
    ]
    return {"type": "http.response.start", "status": 200, "headers": headers}, {
        "type": "http.response.body",
        "body": PAGE,
    }


IO_SUFFIX = "IODescriptor"


def plain_schema_names(spec: dict) -> None:
    """BentoML names request and answer schemas `<Model>IODescriptor`: name them after the model. Where
    the plain name is taken by an identical schema, the two become one."""
    schemas = spec.get("components", {}).get("schemas", {})
    renames = {}
    for name in [n for n in schemas if n.endswith(IO_SUFFIX)]:
        plain = name.removesuffix(IO_SUFFIX)
        schema = {**schemas.pop(name), "title": plain}
        if plain in schemas and {**schemas[plain], "title": plain} != schema:
            plain += "Body"
            schema["title"] = plain
        schemas.setdefault(plain, schema)
        renames[name] = plain
    _rename(spec, renames)


def _rename(node, renames: dict) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.rsplit("/", 1)[-1] in renames:
                node[key] = value.rsplit("/", 1)[0] + "/" + renames[value.rsplit("/", 1)[-1]]
            elif key == "title" and isinstance(value, str) and value in renames:
                node[key] = renames[value]
            else:
                _rename(value, renames)
    elif isinstance(node, list):
        for item in node:
            _rename(item, renames)


def document_get_routes(spec: dict, get_routes) -> None:
    """GET on a GET route is served by its POST API (the guard): document it as such."""
    for path in get_routes:
        post = spec.get("paths", {}).get(path, {}).get("post")
        if post is not None:
            get = {key: value for key, value in post.items() if key != "requestBody"}
            get["operationId"] = f"{post.get('operationId', path.strip('/'))}__get"
            spec["paths"][path]["get"] = get


def document_range_level(spec: dict, routes) -> None:
    """The pricing routes take ?interval_level= (read by the handler, not in BentoML's input model)."""
    parameter = {
        "name": LEVEL_PARAMETER,
        "in": "query",
        "required": False,
        "description": f"The level of each price's range (default {DEFAULT_LEVEL}); any other value: 400",
        "schema": {"type": "number", "enum": list(LEVELS), "default": DEFAULT_LEVEL},
    }
    for path in routes:
        for operation in spec.get("paths", {}).get(path, {}).values():
            operation.setdefault("parameters", []).append(parameter)
