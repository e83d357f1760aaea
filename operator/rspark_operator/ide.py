"""The IDEs a workspace can run (spec.ide): one row per IDE, read by the builders.

What the images share is written once below: the user and home (uid/gid 1000,
/home/rstudio, so the agent and the home volume do not depend on the IDE), the
login password in PASSWORD, the URL prefix in RSPARK_WWW_ROOT_PATH, Spark's
configuration directory and the clean shutdown (`rspark-prestop`). What differs
is a field of `Ide`; builders read the row of spec.ide and never compare names.

Not in `builders/`: the API (`api.py`) takes the IDE names and the variables the
images reserve from here, and the builders package imports the API.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from rspark_operator.settings import OperatorSettings

IdeName = Literal["rstudio", "jupyterlab"]
DEFAULT_IDE: IdeName = "rstudio"

# The contract every IDE image keeps with the operator.
USER_ENV = "USER"
PASSWORD_ENV = "PASSWORD"
# The URL prefix of the workspace (e.g. /team-a/alice/); unset when the IDE owns its host.
ROOT_PATH_ENV = "RSPARK_WWW_ROOT_PATH"
SPARK_CONF_DIR_ENV = "SPARK_CONF_DIR"
# Spark Connect (a `connect` SparkProfile): the endpoint every PySpark session uses,
# and the server's pre-shared token (Spark 4.0's name; its clients read it).
SPARK_REMOTE_ENV = "SPARK_REMOTE"
CONNECT_TOKEN_ENV = "SPARK_CONNECT_AUTHENTICATE_TOKEN"
# The images' clean shutdown, the pod's preStop hook: the IDE saves what it holds in
# memory into the home and stops, so the agent's last snapshot has it.
PRESTOP_COMMAND = ("/usr/local/bin/rspark-prestop",)


@dataclass(frozen=True)
class Ide:
    """What the operator does differently for one IDE."""

    name: IdeName
    # The port the IDE listens on (0.0.0.0) in its container.
    port: int
    default_image: Callable[[OperatorSettings], str]
    # True: the IDE serves under the URL prefix itself (Jupyter's base_url) and the
    # Ingress passes the path as it is. False: the IDE serves from "/" and only builds
    # its links with the prefix (RStudio's www-root-path): the Ingress strips it.
    serves_under_prefix: bool
    # The readiness probe's path, relative to where the IDE serves. It must answer
    # 2xx or 3xx without a login.
    readiness_path: str
    # Variables the image reads that would turn its authentication off or move it
    # off the operator's wiring: refused in spec.env.
    reserved_env: frozenset[str]

    def readiness_probe_path(self, prefix: str) -> str:
        """The probe's path in the container, for the workspace's URL prefix."""
        return (prefix if self.serves_under_prefix else "/") + self.readiness_path


IDES: Mapping[IdeName, Ide] = {
    "rstudio": Ide(
        name="rstudio",
        port=8787,
        default_image=lambda settings: settings.workspace_image,
        serves_under_prefix=False,
        # Open-source RStudio Server has no health endpoint; "/" redirects to sign-in.
        readiness_path="",
        # Rocker's init switches: DISABLE_AUTH turns the login off, ROOT grants sudo,
        # USERID and GROUPID change the user's ids and so who owns the home.
        reserved_env=frozenset({"DISABLE_AUTH", "ROOT", "USERID", "GROUPID"}),
    ),
    "jupyterlab": Ide(
        name="jupyterlab",
        port=8888,
        default_image=lambda settings: settings.jupyterlab_image,
        serves_under_prefix=True,
        # Jupyter Server's version endpoint: no login, no kernel.
        readiness_path="api",
        # The image's address and port (images/jupyterlab/rspark-jupyterlab), and Jupyter
        # Server's token switches: a second way in besides the password (with no password,
        # an empty token is no authentication). The image's configuration sets the token
        # today, which Jupyter prefers to them; refused so that it stays so.
        reserved_env=frozenset(
            {"RSPARK_JUPYTER_IP", "RSPARK_JUPYTER_PORT", "JUPYTER_TOKEN", "JUPYTER_TOKEN_FILE"}
        ),
    ),
}

# Every variable the operator sets or refuses in the IDE container, whatever spec.ide:
# switching the IDE never turns a valid spec.env into an invalid one.
WIRING_ENV = frozenset(
    {USER_ENV, PASSWORD_ENV, ROOT_PATH_ENV, SPARK_CONF_DIR_ENV, SPARK_REMOTE_ENV, CONNECT_TOKEN_ENV}
)
OPERATOR_MANAGED_ENV = WIRING_ENV.union(*(ide.reserved_env for ide in IDES.values()))
