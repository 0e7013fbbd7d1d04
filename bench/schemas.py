"""Real-world JSON schemas for the structured-output bench (``bench.structured``).

The kinds of schema people send as ``response_format`` or as a tool's ``parameters``: flat
records, nested objects with arrays of objects, enums, ``date-time``/``email``/``uuid``/``uri``
formats, numeric bounds, string patterns and lengths, ``additionalProperties: false``,
``anyOf``/``oneOf`` unions, ``$defs`` with ``$ref`` (a recursive tree and a recursive comment
thread), nullable fields, and OpenAI-function-style parameter objects. Written by hand for this
bench; every one must compile through the server's own path (a schema the server refuses would
measure an error, not a grammar), which ``python -m bench.structured --compile-only`` checks.

Every schema requires at least one property, so no constrained answer is a bare ``{}``.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Schema(NamedTuple):
    name: str  # the json_schema name sent with the request
    ask: str  # what the prompt asks for ("a user profile for ...")
    schema: dict[str, Any]


def _obj(properties: dict[str, Any], required: list[str] | None = None, *,
         closed: bool = True, **extra: Any) -> dict[str, Any]:
    """An object schema; every property is required unless ``required`` says otherwise."""
    out: dict[str, Any] = {"type": "object", "properties": properties,
                           "required": list(properties) if required is None else required}
    if closed:
        out["additionalProperties"] = False
    return {**out, **extra}


def _str(**extra: Any) -> dict[str, Any]:
    return {"type": "string", **extra}


def _int(**extra: Any) -> dict[str, Any]:
    return {"type": "integer", **extra}


def _num(**extra: Any) -> dict[str, Any]:
    return {"type": "number", **extra}


def _enum(*values: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


def _arr(items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "array", "items": items, **extra}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


_BOOL = {"type": "boolean"}
_DATE = _str(format="date")
_DATETIME = _str(format="date-time")
_EMAIL = _str(format="email")
_UUID = _str(format="uuid")
_URI = _str(format="uri")
_CURRENCY = _str(pattern="^[A-Z]{3}$")
_MONEY = _num(minimum=0)

_ADDRESS = _obj({
    "street": _str(maxLength=80), "city": _str(maxLength=40),
    "postal_code": _str(pattern="^[0-9A-Z -]{3,10}$"), "region": _str(maxLength=40),
    "country": _str(pattern="^[A-Z]{2}$"),
}, ["street", "city", "postal_code", "country"])

_LINE_ITEM = _obj({
    "sku": _str(pattern="^[A-Z]{3}-[0-9]{4}$"), "description": _str(maxLength=80),
    "quantity": _int(minimum=1, maximum=1000), "unit_price": _MONEY,
    "tax_rate": _num(minimum=0, maximum=0.5),
})

_PERSON = _obj({"name": _str(minLength=1, maxLength=60), "email": _EMAIL})


def _tool(description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """An OpenAI function's ``parameters`` object (strict mode: closed, all listed)."""
    return _obj(properties, required, description=description)


SCHEMAS: tuple[Schema, ...] = (
    Schema("user_profile", "a user profile for a new member of a hiking club", _obj({
        "id": _UUID, "username": _str(pattern="^[a-z][a-z0-9_]{2,19}$"),
        "full_name": _str(maxLength=60), "email": _EMAIL, "age": _int(minimum=13, maximum=120),
        "is_active": _BOOL, "roles": _arr(_enum("admin", "editor", "viewer"), minItems=1,
                                           maxItems=3),
    })),
    Schema("postal_address", "the postal address of a bakery in Lyon", _ADDRESS),
    Schema("invoice", "an invoice for three items of office furniture", _obj({
        "invoice_number": _str(pattern="^INV-[0-9]{6}$"), "issued": _DATE, "due": _DATE,
        "currency": _CURRENCY, "customer": _obj({"name": _str(maxLength=60),
                                                 "billing_address": _ADDRESS}),
        "items": _arr(_LINE_ITEM, minItems=1, maxItems=20),
        "status": _enum("draft", "sent", "paid", "overdue", "void"),
        "total": _MONEY,
    })),
    Schema("calendar_event", "a calendar event for a team planning meeting", _obj({
        "title": _str(maxLength=80), "start": _DATETIME, "end": _DATETIME,
        "timezone": _str(pattern="^[A-Za-z]+/[A-Za-z_]+$"), "location": _nullable(_str()),
        "attendees": _arr(_obj({"email": _EMAIL, "optional": _BOOL,
                                "response": _enum("accepted", "declined", "tentative",
                                                  "needs_action")}), maxItems=10),
        "recurrence": _nullable(_enum("daily", "weekly", "monthly", "yearly")),
        "reminder_minutes": _arr(_int(minimum=0, maximum=10080), maxItems=3),
    })),
    Schema("product_catalog", "a small catalog of three kinds of running shoes", _obj({
        "catalog_id": _str(), "updated_at": _DATETIME,
        "products": _arr(_obj({
            "sku": _str(pattern="^[A-Z]{3}-[0-9]{4}$"), "name": _str(maxLength=60),
            "price": _obj({"amount": _MONEY, "currency": _CURRENCY}),
            "sizes": _arr(_num(minimum=3, maximum=16), maxItems=12),
            "in_stock": _BOOL, "tags": _arr(_str(maxLength=20), maxItems=5),
        }), minItems=1, maxItems=10),
    })),
    Schema("github_issue", "a GitHub issue reporting a crash when uploading a large file", _obj({
        "number": _int(minimum=1), "title": _str(maxLength=120), "body": _str(),
        "state": _enum("open", "closed"), "labels": _arr(_obj({
            "name": _str(maxLength=30), "color": _str(pattern="^[0-9a-f]{6}$")}), maxItems=6),
        "assignees": _arr(_str(pattern="^[A-Za-z0-9-]{1,39}$"), maxItems=3),
        "milestone": _nullable(_str()), "created_at": _DATETIME, "comments": _int(minimum=0),
    })),
    Schema("get_weather_args", "the arguments of a call to get the weather in Oslo", _tool(
        "Get the current weather for a location.", {
            "location": _str(description="City and country, e.g. Paris, France"),
            "unit": _enum("celsius", "fahrenheit"),
        }, ["location", "unit"])),
    Schema("search_flights_args", "the arguments of a flight search from Berlin to Lisbon",
           _tool("Search for flights.", {
               "origin": _str(pattern="^[A-Z]{3}$"), "destination": _str(pattern="^[A-Z]{3}$"),
               "departure_date": _DATE, "return_date": _nullable(_DATE),
               "passengers": _int(minimum=1, maximum=9),
               "cabin": _enum("economy", "premium_economy", "business", "first"),
               "max_stops": _int(minimum=0, maximum=3),
           }, ["origin", "destination", "departure_date", "passengers", "cabin"])),
    Schema("send_email_args", "the arguments of a call that emails a meeting summary", _tool(
        "Send an email.", {
            "to": _arr(_EMAIL, minItems=1, maxItems=5), "cc": _arr(_EMAIL, maxItems=5),
            "subject": _str(maxLength=100), "body": _str(),
            "priority": _enum("low", "normal", "high"),
        }, ["to", "subject", "body"])),
    Schema("sql_query_args", "the arguments of a call that queries last month's orders", _tool(
        "Run a read-only SQL query.", {
            "query": _str(pattern="^SELECT "), "limit": _int(minimum=1, maximum=1000),
            "timeout_ms": _int(minimum=100, maximum=60000),
        }, ["query", "limit"])),
    Schema("create_ticket_args", "the arguments of a call that opens a support ticket", _tool(
        "Create a support ticket.", {
            "title": _str(maxLength=100), "description": _str(),
            "severity": _enum("sev1", "sev2", "sev3", "sev4"),
            "component": _enum("api", "web", "mobile", "billing", "auth"),
            "customer_id": _str(pattern="^cus_[A-Za-z0-9]{8,14}$"),
        }, ["title", "description", "severity", "component"])),
    Schema("file_tree", "a directory tree of a small Python project", {
        "$defs": {"node": _obj({
            "name": _str(maxLength=40), "kind": _enum("file", "directory"),
            "size_bytes": _int(minimum=0),
            "children": _arr({"$ref": "#/$defs/node"}, maxItems=8),
        }, ["name", "kind"])},
        **_obj({"root": {"$ref": "#/$defs/node"}}),
    }),
    Schema("comment_thread", "a comment thread under a blog post about sourdough", {
        "$defs": {"comment": _obj({
            "author": _str(maxLength=30), "text": _str(maxLength=280),
            "likes": _int(minimum=0), "replies": _arr({"$ref": "#/$defs/comment"}, maxItems=5),
        }, ["author", "text", "replies"])},
        **_obj({"post_id": _int(minimum=1), "comments": _arr({"$ref": "#/$defs/comment"})}),
    }),
    Schema("payment_method", "the payment method a customer chose at checkout", _obj({
        "customer_id": _str(), "method": {"oneOf": [
            _obj({"type": {"const": "card"}, "brand": _enum("visa", "mastercard", "amex"),
                  "last4": _str(pattern="^[0-9]{4}$"), "exp_month": _int(minimum=1, maximum=12),
                  "exp_year": _int(minimum=2024, maximum=2045)}),
            _obj({"type": {"const": "bank_transfer"},
                  "iban": _str(pattern="^[A-Z]{2}[0-9]{2}[A-Z0-9]{10,30}$")}),
            _obj({"type": {"const": "wallet"}, "provider": _enum("paypal", "apple_pay",
                                                                "google_pay")}),
        ]},
    })),
    Schema("shape", "a shape to draw on a whiteboard", _obj({"shape": {"anyOf": [
        _obj({"kind": {"const": "circle"}, "radius": _num(exclusiveMinimum=0)}),
        _obj({"kind": {"const": "rectangle"}, "width": _num(exclusiveMinimum=0),
              "height": _num(exclusiveMinimum=0)}),
        _obj({"kind": {"const": "polygon"},
              "points": _arr(_obj({"x": _num(), "y": _num()}), minItems=3, maxItems=12)}),
    ]}, "color": _str(pattern="^#[0-9a-f]{6}$")})),
    Schema("sentiment", "the sentiment of a restaurant review", _obj({
        "sentiment": _enum("positive", "neutral", "negative"),
        "confidence": _num(minimum=0, maximum=1),
        "aspects": _arr(_obj({"aspect": _enum("food", "service", "price", "ambience"),
                              "score": _int(minimum=-2, maximum=2)}), maxItems=4),
    })),
    Schema("named_entities", "the named entities in a news sentence about a merger", _obj({
        "entities": _arr(_obj({
            "text": _str(maxLength=60),
            "label": _enum("PERSON", "ORG", "LOCATION", "DATE", "MONEY", "PRODUCT"),
            "start": _int(minimum=0), "end": _int(minimum=0),
        }), maxItems=12),
    })),
    Schema("recipe", "a recipe for a vegetable curry", _obj({
        "title": _str(maxLength=80), "servings": _int(minimum=1, maximum=12),
        "prep_minutes": _int(minimum=0, maximum=600), "cook_minutes": _int(minimum=0),
        "difficulty": _enum("easy", "medium", "hard"),
        "ingredients": _arr(_obj({"item": _str(maxLength=40), "quantity": _num(minimum=0),
                                  "unit": _enum("g", "kg", "ml", "l", "tsp", "tbsp", "cup",
                                                "piece")}), minItems=1, maxItems=20),
        "steps": _arr(_str(maxLength=200), minItems=1, maxItems=12),
        "vegetarian": _BOOL,
    })),
    Schema("job_posting", "a job posting for a backend engineer", _obj({
        "title": _str(maxLength=80), "company": _str(maxLength=60),
        "location": _obj({"city": _str(), "country": _str(pattern="^[A-Z]{2}$"),
                          "remote": _enum("onsite", "hybrid", "remote")}),
        "salary": _nullable(_obj({"min": _int(minimum=0), "max": _int(minimum=0),
                                  "currency": _CURRENCY,
                                  "period": _enum("hour", "month", "year")})),
        "employment_type": _enum("full_time", "part_time", "contract", "internship"),
        "skills": _arr(_str(maxLength=30), maxItems=10), "posted": _DATE, "apply_url": _URI,
    })),
    Schema("resume", "a short resume of a data analyst", _obj({
        "name": _str(maxLength=60), "email": _EMAIL,
        "phone": _str(pattern="^\\+[0-9]{7,15}$"),
        "experience": _arr(_obj({"company": _str(maxLength=60), "role": _str(maxLength=60),
                                 "start": _DATE, "end": _nullable(_DATE),
                                 "highlights": _arr(_str(maxLength=140), maxItems=4)}),
                           maxItems=6),
        "education": _arr(_obj({"school": _str(), "degree": _str(),
                                "year": _int(minimum=1950, maximum=2030)}), maxItems=3),
        "skills": _arr(_str(maxLength=30), maxItems=12),
    })),
    Schema("order_status", "the status of an online order that shipped yesterday", _obj({
        "order_id": _str(pattern="^ORD-[0-9]{8}$"),
        "status": _enum("pending", "paid", "shipped", "delivered", "cancelled", "refunded"),
        "carrier": _nullable(_enum("ups", "fedex", "dhl", "usps")),
        "tracking_number": _nullable(_str(pattern="^[A-Z0-9]{10,22}$")),
        "estimated_delivery": _nullable(_DATE), "updated_at": _DATETIME,
    })),
    Schema("support_triage", "the triage of a customer message about a double charge", _obj({
        "category": _enum("billing", "technical", "account", "shipping", "other"),
        "urgency": _int(minimum=1, maximum=5), "language": _str(pattern="^[a-z]{2}$"),
        "summary": _str(maxLength=200), "needs_human": _BOOL,
        "suggested_reply": _nullable(_str(maxLength=500)),
    })),
    Schema("meeting_notes", "the notes of a weekly engineering sync", _obj({
        "date": _DATE, "attendees": _arr(_str(maxLength=40), minItems=1, maxItems=15),
        "decisions": _arr(_str(maxLength=200), maxItems=10),
        "action_items": _arr(_obj({"owner": _str(maxLength=40), "task": _str(maxLength=160),
                                   "due": _nullable(_DATE)}), maxItems=10),
    })),
    Schema("book", "a library record for a classic novel", _obj({
        "isbn": _str(pattern="^97[89][0-9]{10}$"), "title": _str(maxLength=120),
        "authors": _arr(_str(maxLength=60), minItems=1, maxItems=4),
        "published_year": _int(minimum=1450, maximum=2030),
        "genres": _arr(_enum("fiction", "mystery", "romance", "science_fiction", "fantasy",
                             "biography", "history", "poetry"), maxItems=3),
        "rating": _num(minimum=0, maximum=5), "available": _BOOL,
    })),
    Schema("movie_review", "a review of a science fiction film", _obj({
        "movie": _str(maxLength=80), "year": _int(minimum=1888, maximum=2030),
        "stars": _int(minimum=1, maximum=5), "pros": _arr(_str(maxLength=100), maxItems=5),
        "cons": _arr(_str(maxLength=100), maxItems=5), "verdict": _str(maxLength=300),
        "spoilers": _BOOL,
    })),
    Schema("bank_transaction", "a categorised card payment at a supermarket", _obj({
        "transaction_id": _UUID, "booked_at": _DATETIME, "amount": _num(),
        "currency": _CURRENCY, "merchant": _str(maxLength=60),
        "category": _enum("groceries", "rent", "transport", "dining", "utilities",
                          "entertainment", "salary", "other"),
        "counterparty_iban": _nullable(_str(pattern="^[A-Z]{2}[0-9]{2}[A-Z0-9]{10,30}$")),
    })),
    Schema("medication_schedule", "a medication schedule for a two-week antibiotic course", _obj({
        "patient_id": _str(pattern="^P[0-9]{6}$"),
        "medications": _arr(_obj({"name": _str(maxLength=60),
                                  "dose_mg": _num(exclusiveMinimum=0, maximum=5000),
                                  "times_per_day": _int(minimum=1, maximum=6),
                                  "route": _enum("oral", "iv", "topical", "inhaled"),
                                  "with_food": _BOOL}), minItems=1, maxItems=8),
        "start": _DATE, "end": _DATE,
    })),
    Schema("server_config", "the configuration of a web service in production", _obj({
        "service": _str(pattern="^[a-z][a-z0-9-]{1,30}$"),
        "port": _int(minimum=1, maximum=65535), "replicas": _int(minimum=1, maximum=100),
        "log_level": _enum("debug", "info", "warning", "error"),
        "tls": _obj({"enabled": _BOOL, "cert_path": _nullable(_str())}),
        "env": _obj({}, [], closed=False, additionalProperties=_str(maxLength=100)),
        "healthcheck": _obj({"path": _str(pattern="^/"),
                             "interval_seconds": _int(minimum=1, maximum=300)}),
    })),
    Schema("log_event", "a structured log event for a failed login", _obj({
        "timestamp": _DATETIME, "level": _enum("DEBUG", "INFO", "WARN", "ERROR", "FATAL"),
        "logger": _str(maxLength=60), "message": _str(maxLength=300),
        "request_id": _UUID, "client_ip": _str(format="ipv4"),
        "context": _obj({}, [], closed=False),
    })),
    Schema("geo_feature", "a GeoJSON point for a museum", _obj({
        "type": {"const": "Feature"},
        "geometry": _obj({"type": {"const": "Point"},
                          "coordinates": _arr(_num(minimum=-180, maximum=180), minItems=2,
                                              maxItems=2)}),
        "properties": _obj({"name": _str(maxLength=80), "category": _str(maxLength=30),
                            "open_now": _BOOL}),
    })),
    Schema("quiz", "a three-question quiz about the solar system", _obj({
        "topic": _str(maxLength=60),
        "questions": _arr(_obj({"question": _str(maxLength=200),
                                "choices": _arr(_str(maxLength=80), minItems=4, maxItems=4),
                                "answer_index": _int(minimum=0, maximum=3)}),
                          minItems=1, maxItems=10),
    })),
    Schema("translation", "a French translation of a hotel's check-in instructions", _obj({
        "source_language": _str(pattern="^[a-z]{2}$"),
        "target_language": _str(pattern="^[a-z]{2}$"), "translation": _str(),
        "formality": _enum("formal", "informal"),
        "glossary": _arr(_obj({"term": _str(), "rendering": _str()}), maxItems=5),
    })),
    Schema("classification", "the topic labels of a news headline about interest rates", _obj({
        "labels": _arr(_enum("politics", "economy", "sports", "technology", "health",
                             "science", "entertainment", "world"), minItems=1, maxItems=3),
        "primary": _enum("politics", "economy", "sports", "technology", "health", "science",
                         "entertainment", "world"),
        "confidence": _num(minimum=0, maximum=1),
    })),
    Schema("contact_card", "a contact card for a plumber", _obj({
        "name": _str(maxLength=60), "company": _nullable(_str(maxLength=60)),
        "phones": _arr(_obj({"kind": _enum("mobile", "work", "home"),
                             "number": _str(pattern="^\\+?[0-9 ()-]{6,20}$")}), maxItems=3),
        "emails": _arr(_EMAIL, maxItems=3), "address": _nullable(_ADDRESS),
        "website": _nullable(_URI),
    })),
    Schema("sports_match", "the result of a football match", _obj({
        "competition": _str(maxLength=60), "kickoff": _DATETIME,
        "home": _obj({"team": _str(maxLength=40), "score": _int(minimum=0, maximum=30)}),
        "away": _obj({"team": _str(maxLength=40), "score": _int(minimum=0, maximum=30)}),
        "scorers": _arr(_obj({"player": _str(maxLength=40), "minute": _int(minimum=1,
                                                                            maximum=130),
                              "team": _enum("home", "away")}), maxItems=12),
        "attendance": _nullable(_int(minimum=0)),
    })),
    Schema("team_roster", "the roster of a small design team", _obj({
        "team": _str(maxLength=60), "lead": _PERSON,
        "members": _arr(_obj({"person": _PERSON, "role": _enum("designer", "researcher",
                                                               "writer", "manager"),
                              "started": _DATE}), maxItems=8),
    })),
)
