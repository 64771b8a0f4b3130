"""The API contract: routes, request and answer bodies, the error shape."""

API_VERSION = "1.0.0"  # of the contract (routes, bodies, errors), shown in /docs.json
API_INFO = {
    "title": "Flat price service",
    "version": API_VERSION,
    "description": (
        "Prices of Moscow flats in rubles from their 15 features (the Yandex Realty model). "
        "Every error answers {error, detail: [{type, loc, msg}], total}; the limits and settings are in the README."
    ),
    "contact": {"name": "ML platform team"},
}
