"""The JSON API's OpenAPI description, served at /api/v1/openapi.json.

Each route of the blueprint is described here with the models that validate
its input and describe its answers; ``app.services.openapi`` builds the
document from these and the app's URL map.
"""
from flask import current_app, jsonify

from app import __version__
from app.blueprints.api import bp
from app.blueprints.api.views import ResultsQuery
from app.services.config_documents import (
    ConfigDocument,
    ExportQuery,
    ImportOutcomeAnswer,
    ImportQuery,
    InvalidDocumentAnswer,
)
from app.services.endpoints import (
    MAX_BATCH_ENDPOINTS,
    EndpointAnswer,
    EndpointBatchAnswer,
    EndpointBatchInput,
    EndpointFilters,
    EndpointInput,
    EndpointListAnswer,
)
from app.services.failover import ClusterAnswer, FailoverOrderChange
from app.services.maintenance import MaintenanceWindowAnswer, MaintenanceWindowInput, MaintenanceWindowListAnswer
from app.services.notifications import (
    DeliveryAnswer,
    ServiceAnswer,
    ServiceInput,
    ServiceListAnswer,
    TestRequest,
)
from app.services.openapi import REF_TEMPLATE, Description, ErrorCase, Operation, Patch
from app.services.results import ResultsAnswer
from app.services.sync.schemas import InstanceAnswer

DESCRIPTION = Description(
    "Endpoint monitor JSON API", "api",
    description=("Endpoints, their results and consensus, notification services, maintenance windows and the "
                 "cluster's membership. "
                 "Every route needs a user's HTTP basic credentials or an API key (`Authorization: Bearer epm_...`); "
                 "changes need an administrator, and are refused (409) on an instance that is not the primary. "
                 "Bodies are JSON objects sent as `application/json`, at most 1 MiB, validated strictly (`\"60\"` "
                 "is not a number); an error names each bad field under `fields`. The configuration document "
                 "(`/config`) is the exception: JSON or YAML, up to 16 MiB, its problems listed under `problems`."),
    security_schemes={
        "basicAuth": {"type": "http", "scheme": "basic", "description": "A user's email and password"},
        "apiKey": {"type": "http", "scheme": "bearer", "description": "An API key made on the API keys page"},
    },
    security=(("basicAuth",), ("apiKey",)),
)
# Errors any route can answer: credentials; a number too large for the database.
_READ = (400, 401)
CREATED = {"Location": {"required": True, "description": "The new resource's path", "schema": {"type": "string"}}}
_CHANGE = (400, 401, 403, 409, 413, 415)

DESCRIPTION.describe("openapi", "GET", Operation(
    "This description", {200: {"type": "object"}}, security=(), tag="meta",
    description="Open to all: the description holds no data."))

DESCRIPTION.describe("list_endpoints", "GET", Operation(
    "List endpoints, by name", {200: EndpointListAnswer}, _READ, query=EndpointFilters, tag="endpoints"))
DESCRIPTION.describe("create_endpoint", "POST", Operation(
    "Create an endpoint", {201: EndpointAnswer}, _CHANGE, body=EndpointInput, answer_headers=CREATED,
    tag="endpoints",
    description="Without `notificationServiceIds` the endpoint alerts through the default services."))
DESCRIPTION.describe("create_endpoints", "POST", Operation(
    "Create many endpoints at once, all or none", {201: EndpointBatchAnswer}, _CHANGE, body=EndpointBatchInput,
    tag="endpoints",
    error_answers={400: ErrorCase("Nothing was created: `fields` names each bad field of each bad endpoint as "
                                  f"`endpoints[INDEX].FIELD` (INDEX from 0), or `endpoints` when it holds none "
                                  f"or more than {MAX_BATCH_ENDPOINTS:,}"),
                   413: ErrorCase("The body is larger than 16 MiB; nothing was created")},
    description=(f"Up to {MAX_BATCH_ENDPOINTS:,} endpoints in one transaction, each validated as "
                 "`POST /endpoints` validates one. One bad endpoint and none is created. The configuration "
                 "version moves once for the whole batch, and dependents pull the new endpoints together.")))
DESCRIPTION.describe("get_endpoint", "GET", Operation(
    "An endpoint with its consensus", {200: EndpointAnswer}, (*_READ, 404), tag="endpoints"))
DESCRIPTION.describe("update_endpoint", "PUT", Operation(
    "Replace an endpoint's settings", {200: EndpointAnswer}, (*_CHANGE, 404), body=EndpointInput, tag="endpoints",
    description="Omitted fields take their defaults. A masked secret sent back as shown keeps the stored one."))
DESCRIPTION.describe("update_endpoint", "PATCH", Operation(
    "Change some of an endpoint's settings", {200: EndpointAnswer}, (*_CHANGE, 404), body=Patch(EndpointInput),
    tag="endpoints"))
DESCRIPTION.describe("delete_endpoint", "DELETE", Operation(
    "Delete an endpoint with its results", {204: None}, (400, 401, 403, 404, 409), tag="endpoints"))
DESCRIPTION.describe("endpoint_results", "GET", Operation(
    "An endpoint's newest results, newest first", {200: ResultsAnswer}, (*_READ, 404), query=ResultsQuery,
    tag="endpoints"))

DESCRIPTION.describe("list_notification_services", "GET", Operation(
    "List notification services, secrets masked", {200: ServiceListAnswer}, _READ, tag="notification services"))
DESCRIPTION.describe("create_notification_service", "POST", Operation(
    "Create a notification service", {201: ServiceAnswer}, _CHANGE, body=ServiceInput, answer_headers=CREATED,
    tag="notification services"))
DESCRIPTION.describe("get_notification_service", "GET", Operation(
    "A notification service, secrets masked", {200: ServiceAnswer}, (*_READ, 404), tag="notification services"))
DESCRIPTION.describe("update_notification_service", "PUT", Operation(
    "Replace a notification service", {200: ServiceAnswer}, (*_CHANGE, 404), body=ServiceInput,
    tag="notification services",
    description="Secrets omitted, empty or sent back masked keep the stored values while the kind stays."))
DESCRIPTION.describe("update_notification_service", "PATCH", Operation(
    "Change some of a notification service's fields", {200: ServiceAnswer}, (*_CHANGE, 404),
    body=Patch(ServiceInput), tag="notification services"))
DESCRIPTION.describe("delete_notification_service", "DELETE", Operation(
    "Delete a notification service with its deliveries", {204: None}, (400, 401, 403, 404, 409),
    tag="notification services"))
DESCRIPTION.describe("test_notification_service", "POST", Operation(
    "Send a test message now", {200: DeliveryAnswer}, (*_CHANGE, 404), body=TestRequest,
    tag="notification services",
    description="Answers the delivery: `status` is `sent`, or `failed` with the reason in `lastError`."))

_WINDOW_TIMES = ("`startsAt`/`endsAt` without a zone are read in `timeZone` (UTC when absent); a recurring window "
                 "gives `cronExpression`, `timeZone` and `durationMinutes` instead. It names at least one endpoint "
                 "(`endpointIds`) or group (`groups`), each of which must exist.")
DESCRIPTION.describe("list_maintenance_windows", "GET", Operation(
    "List maintenance windows, by id", {200: MaintenanceWindowListAnswer}, _READ, tag="maintenance windows"))
DESCRIPTION.describe("create_maintenance_window", "POST", Operation(
    "Create a maintenance window", {201: MaintenanceWindowAnswer}, _CHANGE, body=MaintenanceWindowInput,
    answer_headers=CREATED, tag="maintenance windows",
    description="A one-off window gives `startsAt` and `endsAt`. " + _WINDOW_TIMES))
DESCRIPTION.describe("get_maintenance_window", "GET", Operation(
    "A maintenance window with its current and next occurrence", {200: MaintenanceWindowAnswer}, (*_READ, 404),
    tag="maintenance windows"))
DESCRIPTION.describe("update_maintenance_window", "PUT", Operation(
    "Replace a maintenance window's settings", {200: MaintenanceWindowAnswer}, (*_CHANGE, 404),
    body=MaintenanceWindowInput, tag="maintenance windows", description="As on creation: " + _WINDOW_TIMES))
DESCRIPTION.describe("update_maintenance_window", "PATCH", Operation(
    "Change some of a maintenance window's settings", {200: MaintenanceWindowAnswer}, (*_CHANGE, 404),
    body=Patch(MaintenanceWindowInput), tag="maintenance windows",
    description=("Fields not sent keep their values. Sending `cronExpression` makes the window recurring (its "
                 "`startsAt`/`endsAt` are dropped); sending `startsAt` or `endsAt` makes it one-off.")))
DESCRIPTION.describe("delete_maintenance_window", "DELETE", Operation(
    "Delete a maintenance window", {204: None}, (400, 401, 403, 404, 409), tag="maintenance windows",
    description="Alerts it held back are raised by the next sweep if the endpoint's status still calls for one."))

DESCRIPTION.describe("list_instances", "GET", Operation(
    "The cluster: role, epoch, members in failover order, transitions", {200: ClusterAnswer}, _READ,
    tag="cluster"))
DESCRIPTION.describe("update_instance", "PATCH", Operation(
    "Change a member's failover order (on the primary)", {200: InstanceAnswer}, (*_CHANGE, 404),
    body=FailoverOrderChange, tag="cluster"))

# The same document written as YAML (which is how a person writes one).
_YAML_TEXT = {"application/yaml": {"$ref": REF_TEMPLATE.format(model="ConfigDocument")}}
_RETRY_AFTER = {"Retry-After": {"required": True, "description": "Seconds until a request is taken again",
                                "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
_CONFIG_ERRORS = {
    403: ErrorCase("Only an administrator reads or applies the configuration"),
    429: ErrorCase("More than 10 configuration requests in a minute by this user", headers=_RETRY_AFTER),
}
DESCRIPTION.describe("export_config", "GET", Operation(
    "The whole configuration as one document", {200: ConfigDocument}, (400, 401, 403, 429), query=ExportQuery,
    answer_types=_YAML_TEXT, error_answers=_CONFIG_ERRORS, tag="configuration",
    description=("JSON, or YAML when `Accept` prefers `application/yaml`. Secrets are masked (`********`, "
                 "`••••••`) unless `withSecrets=true`; an import keeps the stored value of a mask.")))
DESCRIPTION.describe("import_config", "POST", Operation(
    "Apply a configuration document", {200: ImportOutcomeAnswer}, (400, 401, 403, 409, 413, 415, 429),
    body=ConfigDocument, query=ImportQuery, body_types=_YAML_TEXT, tag="configuration",
    error_answers={**_CONFIG_ERRORS,
                   400: ErrorCase("Nothing was applied: `problems` lists each problem with its line, "
                                  "or `fields` names the bad query parameter", InvalidDocumentAnswer),
                   413: ErrorCase("The document is larger than 16 MiB"),
                   415: ErrorCase("The document was not sent as application/json or application/yaml")},
    description=("Items are matched by name (a window by title) and only what differs changes, in one "
                 "transaction: the same document applied twice changes nothing the second time. A section "
                 "left out is left alone; `prune=true` removes what a section does not name.")))


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI 3.1 description of this API."""
    return jsonify(DESCRIPTION.document(current_app, __version__))
