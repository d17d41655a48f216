"""Store fixtures: every conformance test runs against each backend and wrapper."""

import boto3
import pytest
from moto import mock_aws

from razordav.store import GuardedStore, RetryingStore, open_store
from razordav.store.local import LocalStore


@pytest.fixture(params=["local", "moto", "retrying-local", "guarded-local"])
def store(request, tmp_path, monkeypatch):
    if request.param == "local":
        yield LocalStore(tmp_path / "objects")
    elif request.param == "retrying-local":
        yield RetryingStore(LocalStore(tmp_path / "objects"), base_delay=0.001)
    elif request.param == "guarded-local":
        yield GuardedStore(LocalStore(tmp_path / "objects"), lambda op: None)
    else:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
        monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
        with mock_aws():
            boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="conformance")
            s = open_store("s3://conformance/some/prefix")
            yield s
            s.close()
