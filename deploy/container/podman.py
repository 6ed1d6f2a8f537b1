"""Podman for the tests of the service's images: whether this machine can build and run
them, the base images, `bentoml containerize`, and containers and compose projects as
test servers (tests.fixtures.servers: reserved loopback ports, counted as started only
once their processes listen on them, started again on bind failure).

Every command runs with this folder's containers.conf (CONTAINERS_CONF), as the README's
commands do, so the tests use the settings users are told to use.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from services.packaging import REPO_ROOT
from tests.fixtures.servers import ServerProcess, listening_ports
from tests.fixtures.service import python_path

HERE = Path(__file__).absolute().parent  # not resolve(): under Bazel, the runfiles tree
CONTAINERS_CONF = HERE / "containers.conf"
IMAGE_BASE = REPO_ROOT / "tools" / "image_base.sh"
# The CA certificates the build machine trusts, mounted over the image's own in the build's
# RUN steps only (never into the image): pip and uv then reach the package index through
# whatever TLS-inspecting proxy the machine itself trusts, as its own pip does.
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
GRACE_S = 30  # `podman stop` sends SIGKILL after this many seconds
TOOLS = ("podman", "buildah", "mmdebstrap", "podman-compose")
BUILD_TIMEOUT_S = 1200  # a cold build downloads every wheel from the package index


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF), **extra}


def run(command: Sequence[str], timeout: float = 120, **env: str) -> str:
    """stdout of `command` run with the project's containers.conf; its output on failure."""
    result = subprocess.run(
        list(command), env=environment(**env), capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-4000:]
        raise RuntimeError(f"{' '.join(command[:4])} ... failed ({result.returncode}):\n{output}")
    return result.stdout


def podman(*args: str, timeout: float = 120) -> str:
    return run(["podman", *args], timeout=timeout)


def unsupported() -> str | None:
    """Why this machine cannot build and run the images, in one line (None: it can)."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (tools/setup.sh installs them on Debian 12)"
    if os.geteuid() != 0:
        return "the images are built and run with rootful Podman: run as root"
    try:
        podman("info", "--format", "{{.Host.OCIRuntime.Name}}")
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        return f"podman does not work here: {str(error).splitlines()[-1]}"
    return None


def build_base(kind: str) -> str:
    """tools/image_base.sh's summary line for the `kind` base image, under its default tag."""
    output = run(["nice", "-n", "10", str(IMAGE_BASE), kind], timeout=BUILD_TIMEOUT_S)
    return output.strip().splitlines()[-1]


def containerize(bento_tag: str, home: Path, image: str) -> float:
    """Seconds `bentoml containerize --backend podman` took to build `image` from the Bento."""
    started = time.monotonic()
    command = [sys.executable, "-m", "bentoml", "containerize", bento_tag, "--backend", "podman"]
    command += ["--image-tag", image, "--opt", f"volume={HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
    run(
        ["nice", "-n", "10", *command],
        timeout=BUILD_TIMEOUT_S,
        BENTOML_HOME=str(home),
        BENTOML_DO_NOT_TRACK="true",
        PYTHONPATH=python_path(),
    )
    return time.monotonic() - started


def conmon_listening(containers: Sequence[str]) -> set[int]:
    """Ports the containers' conmon processes and everything under them listen on: the
    container's own processes (host network) and the published ports conmon holds."""
    ports: set[int] = set()
    for container in containers:
        try:
            pid = int(podman("inspect", "--format", "{{.State.ConmonPid}}", container).strip())
        except (RuntimeError, ValueError):  # not created yet, or gone
            continue
        if pid > 0:
            ports |= listening_ports(pid)
    return ports


class Container(ServerProcess):
    """A container on the host's network as a test server.

    The launched process is an attached `podman run --rm` (its output is the log); the
    server is the container's process tree under conmon. `stop()` is `podman stop`:
    SIGTERM to the container's init, SIGKILL after GRACE_S, with how long it took and the
    container's exit status kept (`stop_seconds`, `process.returncode`).
    """

    def __init__(
        self, name: str, arguments: Callable[[Sequence[int]], list[str]], log_path: Path, n_ports: int = 1
    ) -> None:
        """`arguments(ports)`: what follows `podman run --network host` (options, image, command)."""
        self.container = ""
        self.stop_seconds: float | None = None

        def launch(ports: Sequence[int]) -> tuple[list[str], dict[str, str]]:
            self.container = f"{name}-{os.getpid()}-{self.attempts}"
            command = ["podman", "run", "--rm", "--name", self.container, "--network", "host"]
            return [*command, *arguments(ports)], environment()

        super().__init__(name, launch, log_path, n_ports)

    def listening(self) -> set[int]:
        return conmon_listening([self.container])

    def pids(self) -> list[int]:
        """Host pids of the container's processes (its init first)."""
        import psutil

        init = psutil.Process(int(podman("inspect", "--format", "{{.State.Pid}}", self.container).strip()))
        return [init.pid, *(child.pid for child in init.children(recursive=True))]

    def stop(self) -> None:
        if self.process.poll() is None:
            started = time.monotonic()
            podman("stop", "--ignore", "--time", str(GRACE_S), self.container, timeout=GRACE_S + 60)
            self.process.wait(timeout=60)
            self.stop_seconds = time.monotonic() - started
        super().stop()


def compose_down(compose_file: Path, project: str, variables: dict[str, str]) -> None:
    """Removes a compose project's containers, volumes and network (which podman-compose
    1.0.3's `down` keeps); `variables`: what the file needs to be read at all."""
    run(["podman-compose", "-f", str(compose_file), "-p", project, "down", "--volumes"], **variables)
    network = f"{project}_default"
    if network in podman("network", "ls", "--format", "{{.Name}}").split():
        podman("network", "rm", "--force", network)


class ComposeProject(ServerProcess):
    """Services of a compose file run by an attached `podman-compose up` as one test server,
    under a project name of its own; `env(ports)` gives the file's variables for the
    reserved ports, the first of which is probed. `stop()` stops the containers (SIGKILL
    after GRACE_S) and removes them with their volumes and network."""

    def __init__(
        self,
        project: str,
        compose_file: Path,
        services: Sequence[str],
        env: Callable[[Sequence[int]], dict[str, str]],
        log_path: Path,
        n_ports: int,
    ) -> None:
        self.project, self.compose_file = project, compose_file
        self._variables: dict[str, str] = {}

        def launch(ports: Sequence[int]) -> tuple[list[str], dict[str, str]]:
            self._variables = env(ports)
            command = ["podman-compose", "-f", str(compose_file), "-p", project, "up", *services]
            return command, environment(**self._variables)

        super().__init__(project, launch, log_path, n_ports)

    def containers(self) -> list[str]:
        label = f"label=io.podman.compose.project={self.project}"
        return podman("ps", "--all", "--filter", label, "--format", "{{.Names}}").split()

    def listening(self) -> set[int]:
        return conmon_listening(self.containers())

    def stop(self) -> None:
        if self.containers():
            podman("stop", "--time", str(GRACE_S), *self.containers(), timeout=GRACE_S + 60)
        super().stop()  # ends the attached podman-compose
        compose_down(self.compose_file, self.project, self._variables)
