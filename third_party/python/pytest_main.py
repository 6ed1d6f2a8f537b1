"""Entry point of every `py_pytest` target: runs pytest on the target's test files.

Bazel's sandbox has a read-only source tree, so pytest's cache is off; a JUnit report
goes where Bazel collects it (XML_OUTPUT_FILE).
"""

import os
import sys

import pytest

if __name__ == "__main__":
    args = ["-p", "no:cacheprovider", "-q", "-ra", *sys.argv[1:]]
    if "XML_OUTPUT_FILE" in os.environ:
        args.append(f"--junitxml={os.environ['XML_OUTPUT_FILE']}")
    sys.exit(pytest.main(args))
