"""With an API key, the Triton and metrics ports require it, except the health routes."""

import pytest
from tritonclient.utils import InferenceServerException

from tests.conftest import TINY
from tests.triton.wire import client, error, request

KEY = "s3cret"


@pytest.fixture(scope="module")
def keyed_server(tiny_repository):
    from tests.conftest import RunningServer, make_config

    with RunningServer(make_config(tiny_repository, api_key=KEY)) as server:
        yield server


def test_health_routes_are_exempt(keyed_server):
    triton = client(keyed_server)
    assert triton.is_server_live() and triton.is_server_ready()


def test_missing_or_wrong_key_is_401_in_tritons_shape(keyed_server):
    status, _, body = request(keyed_server.http_port, "GET", f"/v2/models/{TINY}")
    assert status == 401 and "API key" in error(body)
    status, _, body = request(keyed_server.http_port, "GET", "/v2/nothing",
                              headers={"Authorization": "Bearer wrong"})
    assert status == 401 and error(body) == "invalid API key"
    with pytest.raises(InferenceServerException) as info:
        client(keyed_server).get_model_metadata(TINY)
    assert info.value.status() == "401"
    status, _, body = request(keyed_server.metrics_port, "GET", "/metrics")
    assert status == 401 and "API key" in error(body)


def test_the_key_in_a_header_works_with_tritonclient(keyed_server):
    headers = {"Authorization": f"Bearer {KEY}"}
    meta = client(keyed_server).get_model_metadata(TINY, headers=headers)
    assert meta["name"] == TINY
    status, _, _ = request(keyed_server.metrics_port, "GET", "/metrics", headers=headers)
    assert status == 200
