"""A repository rule that installs the pinned lock file as one py_library per distribution.

Usage in WORKSPACE:

    load("//third_party/python:pip_repository.bzl", "pip_repository")
    pip_repository(name = "pypi", lock = "//third_party/python:requirements_lock.txt", ...)
    register_toolchains("@pypi//:python_toolchain")

and in BUILD files:

    load("@pypi//:requirements.bzl", "requirement")
    py_library(..., deps = [requirement("pandas")])

The Python runtime is a virtual environment (no pip, no site-packages of its own) made
from the host's CPython 3.11 in the user's cache. It lives outside Bazel's output base
so its path, which is part of every Python action, is the same for every clone: the
disk cache then serves one clone's results to another. Being a venv, it does not see
packages installed into the host interpreter, so targets import only what they declare.

Optional requirements (`optional`, torch) are not in the lock: each is added only when a
`find_links` folder holds a matching wheel whose sha256 its pin file lists. Without one,
`requirement("torch")` still loads (its target fails with a message if built) and

    load("@pypi//:requirements.bzl", "optional_tags")
    py_test(..., tags = optional_tags("torch"))

tags the targets that need it `manual`, so `//...` leaves them out (docs/torch.md). The
environment variable KINDLE_WHEELS, when set, replaces `find_links` (a colon-separated
list; empty for none); the wheel folders are read when @pypi is fetched, so a wheel added
later needs `bazel sync --only=pypi`.
"""

def _cache_root(ctx):
    if ctx.attr.cache_dir:
        return ctx.attr.cache_dir
    cache = ctx.os.environ.get("XDG_CACHE_HOME") or (ctx.os.environ["HOME"] + "/.cache")
    return cache + "/kindle-sentiment"

def _run(ctx, command, what, quiet = True):
    result = ctx.execute(command, timeout = 3600, quiet = quiet)
    if result.return_code != 0:
        fail("%s failed (exit %d):\n%s\n%s" % (what, result.return_code, result.stdout, result.stderr))
    return result.stdout.strip()

def _pip_repository_impl(ctx):
    python = ctx.which(ctx.attr.python)
    if python == None:
        fail("%s not found on PATH: install CPython 3.11 (tools/setup.sh does)" % ctx.attr.python)
    real_python = _run(ctx, [python, "-c", "import sys; print(sys.executable)"], "locating " + ctx.attr.python)
    version = _run(ctx, [real_python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], "python version")
    if version != "3.11":
        fail("%s is Python %s; the lock is for 3.11" % (real_python, version))

    cache = _cache_root(ctx)
    venv = "%s/bazel-python%s" % (cache, version)
    if not ctx.path(venv + "/bin/python3").exists:
        _run(ctx, [real_python, "-m", "venv", "--without-pip", venv], "creating " + venv)

    installer = ctx.path(ctx.attr._installer)
    command = [
        real_python,
        installer,
    ]
    find_links = ctx.attr.find_links
    if "KINDLE_WHEELS" in ctx.os.environ:
        find_links = [link for link in ctx.os.environ["KINDLE_WHEELS"].split(":") if link]
    for link in find_links:
        command += ["--find-links", link]
    command += [
        "bazel-repo",
        "--lock", ctx.path(ctx.attr.lock),
        "--wheelhouse", cache + "/wheels",
        "--requirements-in", ctx.path(ctx.attr.requirements_in),
        "--repo-dir", ctx.path("."),
        "--repo-name", ctx.name,
        "--interpreter", venv + "/bin/python3",
    ]
    for pins in ctx.attr.optional:
        command += ["--optional", ctx.path(pins)]
    ctx.report_progress("installing the Python lock file (first run fetches wheels)")
    _run(ctx, command, "installing " + str(ctx.attr.lock), quiet = False)
    available = ctx.execute(["grep", "-h", "_AVAILABLE = False", ctx.path("requirements.bzl")]).stdout.strip()
    if available:
        print(("@%s: %s (wheel folders searched: %s): the targets that need it are tagged " +
               "manual, so //... leaves them out; see docs/torch.md") % (ctx.name, available, ", ".join(find_links) or "none"))

pip_repository = repository_rule(
    implementation = _pip_repository_impl,
    attrs = {
        "lock": attr.label(allow_single_file = True, mandatory = True),
        "requirements_in": attr.label(allow_single_file = True, mandatory = True),
        "python": attr.string(default = "python3.11"),
        "find_links": attr.string_list(
            doc = "Local folders of wheels that are not on the index (the CPU build of torch). " +
                  "KINDLE_WHEELS, when set, replaces them.",
        ),
        "optional": attr.label_list(
            allow_files = True,
            doc = "Pin files (name==version with sha256 hashes) installed only from a find_links wheel.",
        ),
        "cache_dir": attr.string(doc = "Defaults to $XDG_CACHE_HOME/kindle-sentiment."),
        "_installer": attr.label(default = "//third_party/python:wheel_installer.py"),
    },
    environ = ["HOME", "XDG_CACHE_HOME", "PATH", "KINDLE_WHEELS"],
)
