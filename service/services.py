"""The app's objects: built once by create_app (service/app.py), stored once (app.state.services), and read by the
routes, the middleware and gRPC alike.

    app = state(request)              # service/http.py: the Services of the request's app
    model = app.runtime.model         # typed: an attribute that is not declared here is an error, not a None

Nothing here does any work: the lifespan starts and stops what needs it (service/app.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # types only: importing this module imports none of them
    from service.admission import Admission, BodyBudget
    from service.batching import MicroBatcher
    from service.connections import ConnectionGuard
    from service.experiment import Experiment
    from service.fanout import ReloadFanout
    from service.feedback import FeedbackConfig, FeedbackStore
    from service.feedback.keeper import StoreKeeper
    from service.feedback.prometheus import FeedbackMetrics
    from service.items.serving import ItemStores
    from service.metrics import Metrics
    from service.runtime import Runtime
    from service.scorer import Scorer
    from service.settings import Settings
    from service.shadow import Shadow


@dataclass(slots=True, eq=False)
class Services:
    settings: Settings
    metrics: Metrics
    runtime: Runtime  # the served models, their reload and their thread pool
    scorer: Scorer  # encode, infer, observe: every scoring route and gRPC's ModelInfer
    admission: Admission  # scoring's back-pressure rule (service/admission.py)
    feedback_admission: Admission  # POST /feedback's own places
    bodies: BodyBudget  # request-body bytes in transit (APG_MAX_INFLIGHT_BODY_BYTES)
    connections: ConnectionGuard  # connection deadline and cap (service/connections.py)
    batcher: MicroBatcher | None = None  # APG_BATCHING
    fanout: ReloadFanout | None = None  # --workers N: a reload in one worker reaches them all (service/fanout.py)
    experiment: Experiment | None = None  # APG_EXPERIMENT
    shadow: Shadow | None = None  # APG_SHADOW
    items: ItemStores | None = None  # ranking by id (APG_ITEM_STORE, service/items)
    feedback_config: FeedbackConfig | None = None  # the click store configured (APG_FEEDBACK) ...
    feedback_metrics: FeedbackMetrics | None = None
    feedback_keeper: StoreKeeper | None = None  # ... opened in the lifespan, or later (service/feedback/keeper.py)
    feedback: FeedbackStore | None = None  # ... and open: /score records, /feedback joins
    openapi_key: Any = None  # the served models the cached OpenAPI schema documents
