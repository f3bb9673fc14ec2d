"""The Labelbox model-training webhook: `GET /models` from TrainingTemplates, `POST /model_run`
into a ModelRun, both signed with the shared secret (`X-Hub-Signature: sha1=<hmac>`).

Start it with `lbtrain webhook`; build it in code (tests, benchmarks) with
`lbtrain_webhook.app.make_app(Settings(...))`.
"""

from lbtrain_webhook.app import make_app
from lbtrain_webhook.settings import Settings

__all__ = ["Settings", "make_app"]
