"""`py_pytest`: a py_test that runs its `srcs` with pytest."""

load("@pypi//:requirements.bzl", "requirement")

def py_pytest(name, srcs, deps = [], args = [], **kwargs):
    native.py_test(
        name = name,
        srcs = srcs + ["//third_party/python:pytest_main.py"],
        main = "//third_party/python:pytest_main.py",
        args = args + ["$(rootpath %s)" % src for src in srcs],
        deps = deps + [requirement("pytest")],
        python_version = "PY3",
        **kwargs
    )
