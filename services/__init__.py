"""The Kindle review rating service (BentoML, HTTP and gRPC); see services/README.md."""

import os
import warnings

# One Polars thread per process: the server runs one API worker per core, and each worker's
# feature kernels sharing the cores with the others' threads would only contend. Read by
# Polars when it is first imported, which is after this.
os.environ.setdefault("POLARS_MAX_THREADS", "1")

# The legacy API (bentoml.io, Runner, bentoml.legacy.Service) is used on purpose: in BentoML
# 1.4 it is the only way to serve gRPC (services/README.md, "Why the legacy API"). Its
# deprecation notices would be the only non-JSON lines of every server process's output.
warnings.filterwarnings(
    "ignore",
    message=r"`(bentoml\.io|Runner|bentoml\.legacy\.Service)` is deprecated",
    category=DeprecationWarning,
)
