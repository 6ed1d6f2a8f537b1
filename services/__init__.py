"""The Kindle review rating service (BentoML, HTTP and gRPC); see services/README.md."""

import warnings

# The legacy API (bentoml.io, Runner, bentoml.legacy.Service) is used on purpose: in BentoML
# 1.4 it is the only way to serve gRPC (services/README.md, "Why the legacy API"). Its
# deprecation notices would be the only non-JSON lines of every server process's output.
warnings.filterwarnings(
    "ignore",
    message=r"`(bentoml\.io|Runner|bentoml\.legacy\.Service)` is deprecated",
    category=DeprecationWarning,
)
