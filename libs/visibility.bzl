"""Who may depend on a library: the layers above it, never the other way round."""

LIB_VISIBILITY = [
    "//libs:__subpackages__",
    "//services:__subpackages__",
    "//tests:__subpackages__",
    "//tools:__subpackages__",
    "//workflows:__subpackages__",
]
