"""The API contract: routes, request and answer bodies, the error shape."""
