"""The IDEs a workspace can run (spec.ide): one row per IDE, read by the builders.

What the images share is written once below: the user and home (uid/gid 1000,
/home/rstudio, so the agent and the home volume do not depend on the IDE), the
login password in PASSWORD, the URL prefix in RSPARK_WWW_ROOT_PATH, Spark's
configuration directory, the clean shutdown (`rspark-prestop`) and the health
check (`rspark-healthcheck`). What differs is a field of `Ide`; builders read the
row of spec.ide and never compare names.

Behind the sign-in proxy (RSPARK_SIGNIN=oidc, builders/signin.py) the IDE listens
on 127.0.0.1 only, on its `proxied_port`, with its own login off; the proxy takes
its `port`, the one the Service and the Ingress name.

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
# Where the browser opens the session's Spark UI (<workspace URL>spark), set only where
# the workspace serves that route. Spark's own uiWebUrl cannot say it (Spark 3.5 builds
# it from the driver's host and port alone); the images point sparklyr's spark_web()
# here (option sparklyr.web.spark, images/rspark/Rprofile.site).
SPARK_UI_URL_ENV = "RSPARK_SPARK_UI_URL"
# The images' clean shutdown, the pod's preStop hook: the IDE saves what it holds in
# memory into the home and stops, so the agent's last snapshot has it.
PRESTOP_COMMAND = ("/usr/local/bin/rspark-prestop",)
# The images' health check: exit 0 when the IDE answers on its local address (the
# readiness probe behind the proxy, where the kubelet cannot reach the IDE's port).
HEALTHCHECK_COMMAND = ("/usr/local/bin/rspark-healthcheck",)
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Ide:
    """What the operator does differently for one IDE."""

    name: IdeName
    # The port the IDE listens on (0.0.0.0) in its container; behind the sign-in
    # proxy, the proxy's.
    port: int
    # Behind the proxy: the IDE's port on 127.0.0.1.
    proxied_port: int
    # The variables that move the IDE to LOOPBACK:proxied_port and turn its own login
    # off, and the one that points its health check there.
    proxied_env: Callable[[int], Mapping[str, str]]
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
    # True: with its own login (RSPARK_SIGNIN=ide-password) the image serves the Spark
    # UI at <prefix>spark/ behind that login (JupyterLab: jupyter-server-proxy).
    serves_spark_ui: bool

    def readiness_probe_path(self, prefix: str) -> str:
        """The probe's path in the container, for the workspace's URL prefix."""
        return (prefix if self.serves_under_prefix else "/") + self.readiness_path


IDES: Mapping[IdeName, Ide] = {
    "rstudio": Ide(
        name="rstudio",
        port=8787,
        proxied_port=8788,
        # Rocker's own switch for auth-none; the image's rserver.conf script writes the
        # address and port (images/rspark/cont-init.d/11-rspark-rserver-conf).
        proxied_env=lambda port: {
            "DISABLE_AUTH": "true",
            "RSPARK_WWW_ADDRESS": LOOPBACK,
            "RSPARK_WWW_PORT": str(port),
            "RSPARK_HEALTHCHECK_URL": f"http://{LOOPBACK}:{port}/",
        },
        default_image=lambda settings: settings.workspace_image,
        serves_under_prefix=False,
        # Open-source RStudio Server has no health endpoint; "/" redirects to sign-in.
        readiness_path="",
        # Rocker's init switches: DISABLE_AUTH turns the login off, ROOT grants sudo,
        # USERID and GROUPID change the user's ids and so who owns the home.
        reserved_env=frozenset(
            {
                "DISABLE_AUTH",
                "ROOT",
                "USERID",
                "GROUPID",
                "RSPARK_WWW_ADDRESS",
                "RSPARK_WWW_PORT",
                "RSPARK_HEALTHCHECK_URL",
            }
        ),
        # RStudio's own proxy (/p/<port token>/) is no route: the UI's links need its
        # prefix, which carries RStudio's port token (docs/user-guide.md).
        serves_spark_ui=False,
    ),
    "jupyterlab": Ide(
        name="jupyterlab",
        port=8888,
        proxied_port=8889,
        # images/jupyterlab/rspark-jupyterlab: no password, no token, loopback only.
        proxied_env=lambda port: {
            "RSPARK_JUPYTER_IP": LOOPBACK,
            "RSPARK_JUPYTER_PORT": str(port),
            "RSPARK_JUPYTER_LOGIN": "off",
        },
        default_image=lambda settings: settings.jupyterlab_image,
        serves_under_prefix=True,
        # Jupyter Server's version endpoint: no login, no kernel.
        readiness_path="api",
        # The image's address and port (images/jupyterlab/rspark-jupyterlab), and Jupyter
        # Server's token switches: a second way in besides the password (with no password,
        # an empty token is no authentication). The image's configuration sets the token
        # today, which Jupyter prefers to them; refused so that it stays so.
        reserved_env=frozenset(
            {
                "RSPARK_JUPYTER_IP",
                "RSPARK_JUPYTER_PORT",
                "RSPARK_JUPYTER_LOGIN",
                "JUPYTER_TOKEN",
                "JUPYTER_TOKEN_FILE",
            }
        ),
        serves_spark_ui=True,
    ),
}

# Every variable the operator sets or refuses in the IDE container, whatever spec.ide:
# switching the IDE never turns a valid spec.env into an invalid one.
WIRING_ENV = frozenset(
    {
        USER_ENV,
        PASSWORD_ENV,
        ROOT_PATH_ENV,
        SPARK_CONF_DIR_ENV,
        SPARK_REMOTE_ENV,
        CONNECT_TOKEN_ENV,
        SPARK_UI_URL_ENV,
    }
)
OPERATOR_MANAGED_ENV = WIRING_ENV.union(*(ide.reserved_env for ide in IDES.values()))
