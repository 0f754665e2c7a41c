"""Prometheus metrics of one server (its own registry, so several apps in one process never collide)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: latency buckets in seconds, from a warm tiny-model call (~1 s on CPU) to a real-size image (minutes)
_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class ServerMetrics:
    """Requests by endpoint and status, queue depth, per-stage latencies, images and images/s."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("mindglm_requests", "HTTP requests answered, by endpoint and status",
                                ("endpoint", "status"), registry=self.registry)
        self.queue_depth = Gauge("mindglm_queue_depth", "requests waiting for the generation worker",
                                 registry=self.registry)
        self.running = Gauge("mindglm_running_requests", "requests in the batch the worker is generating",
                             registry=self.registry)
        self.stage_seconds = Histogram("mindglm_stage_seconds", "seconds per stage: queue wait (per request); "
                                       "ar, denoise, decode, total (per batch)", ("stage",), buckets=_BUCKETS,
                                       registry=self.registry)
        self.batch_images = Histogram("mindglm_batch_images", "images generated per pipeline call",
                                      buckets=(1, 2, 4, 8, 16, 32), registry=self.registry)
        self.images = Counter("mindglm_images_generated", "images generated and returned", registry=self.registry)
        self.images_per_second = Gauge("mindglm_images_per_second", "throughput of the last batch (images / its "
                                       "wall seconds)", registry=self.registry)
        self.dropped = Counter("mindglm_requests_dropped", "accepted requests not generated, by reason",
                               ("reason",), registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
