"""A fake Labelbox API server for tests and local development (never used by the product).

The real ``labelbox`` SDK (7.17.0) is pointed at it with
``Client(api_key, endpoint=fake.endpoint, rest_endpoint=fake.rest_endpoint,
enable_experimental=True)``; see docs/fake-labelbox.md for what it serves and how to inject
failures.
"""

from lbtrain_dev.fake_labelbox.server import FakeLabelbox
from lbtrain_dev.fake_labelbox.state import FailureMode, RecordedRequest, StatusUpdate

__all__ = ["FailureMode", "FakeLabelbox", "RecordedRequest", "StatusUpdate"]
