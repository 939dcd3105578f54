"""The framework's limit, for bench/serve_bench.py: the smallest BentoML service answering a posted
/predict body with a fixed JSON body, served the way Helios is (`bentoml serve`, one worker, an async
endpoint) and with BentoML's defaults otherwise (its middlewares, tracing and access log included).

    bentoml serve bench.minimal_bentoml:MinimalService
"""

from __future__ import annotations

import bentoml

from bench.minimal_asgi import ANSWER


@bentoml.service(name="minimal", workers=1)
class MinimalService:
    @bentoml.api(route="/predict")
    async def predict(self, metric: str, horizon: int = 15) -> dict:
        """The same typed inputs as Helios' /predict; the answer is fixed."""
        return ANSWER
