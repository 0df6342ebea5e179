"""The shipped notebooks: clean on disk, right on the real data, served by a real JupyterLab."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest

from bench import api
from tests.conftest import free_port, network_guard_env

NOTEBOOKS = api.notebooks_dir()
SHIPPED = ("imdb.ipynb", "reuters.ipynb", "this-machine.ipynb")
KERNEL = "dlstation"
# A kernel on a busy 2-core machine: the 20-epoch IMDB cell alone takes minutes there.
CELL_TIMEOUT_S = 1800
# The machine check, short: two synthetic epochs per mode, verify without its training run.
SHORT_MACHINE_CHECK = (
    'EPOCHS = 2\nVERIFY_WORKLOAD = False\nSYNTHETIC = True\nBACKEND = "tensorflow"'
)


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def test_shipped_notebooks_are_clean_and_start_with_the_runtime_cell() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(SHIPPED)
    for name in SHIPPED:
        notebook = read(name)
        nbformat.validate(notebook)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert all(cell.outputs == [] for cell in code), f"{name} carries outputs"
        assert all(cell.execution_count is None for cell in code), f"{name}: execution counts"
        assert notebook.metadata["kernelspec"]["name"] == KERNEL
        first = notebook.cells[0]
        assert first.cell_type == "code" and "api.describe_runtime()" in first.source, name
        lines = first.source.splitlines()
        assert lines.index("api.use_data_dir()") < lines.index("import keras"), name


def test_every_first_edition_change_is_explained_next_to_its_line() -> None:
    """Keras 3's forms are used and the text's old lines appear only in the notes."""
    text = {name: read(name) for name in SHIPPED[:2]}
    for name, notebook in text.items():
        code = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
        assert "input_shape=" not in code and "['acc']" not in code and "lr=" not in code, name
        assert "np_utils" not in code and "tensorflow.keras" not in code, name
        assert "keras.Input(shape=(10000,))" in code and "['accuracy']" in code, name
    imdb_notes = "\n".join(c.source for c in text["imdb.ipynb"].cells if c.cell_type == "markdown")
    assert "RMSprop(lr=0.001)" in imdb_notes and "input_shape=(10000,)" in imdb_notes
    reuters_notes = "\n".join(
        c.source for c in text["reuters.ipynb"].cells if c.cell_type == "markdown"
    )
    assert "keras.utils.np_utils import to_categorical" in reuters_notes


# --- running them ---------------------------------------------------------------------------


def kernel_environment(root: Path, data_dir: Path | None) -> dict[str, str]:
    """A home, Jupyter folders and a `dlstation` kernel of this venv, all under root."""
    kernels = root / "jupyter-path" / "kernels" / KERNEL
    kernels.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "dlstation (Keras 3, tensorflow)",
        "language": "python",
        "env": {"KERAS_BACKEND": "tensorflow"},
    }
    (kernels / "kernel.json").write_text(json.dumps(spec))
    env = {
        "HOME": str(root / "home"),
        "JUPYTER_PATH": str(root / "jupyter-path"),
        "JUPYTER_CONFIG_DIR": str(root / "jupyter-config"),
        "JUPYTER_DATA_DIR": str(root / "jupyter-data"),
        "JUPYTER_RUNTIME_DIR": str(root / "jupyter-runtime"),
        "IPYTHONDIR": str(root / "ipython"),
        "MPLCONFIGDIR": str(root / "matplotlib"),
        "DLSTATION_CACHE_DIR": str(root / "cache"),
        "AWS_EC2_METADATA_DISABLED": "true",
        # A dlbench run that asked EC2 anyway would meet a closed loopback port, not the network.
        "DLSTATION_IMDS_URL": "http://127.0.0.1:9",
        "KERAS_BACKEND": "tensorflow",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "JUPYTER_PLATFORM_DIRS": "1",
        # The kernels and servers built here from nothing keep the suite's network guard.
        **network_guard_env(),
    }
    if data_dir is not None:
        env["DLSTATION_DATA_DIR"] = str(data_dir)
    for key in ("HOME", "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR"):
        Path(env[key]).mkdir(parents=True, exist_ok=True)
    return env


@pytest.fixture(scope="module")
def kernel_env(
    tmp_path_factory: pytest.TempPathFactory, real_data_dir: Path
) -> Iterator[dict[str, str]]:
    """This process's environment pointed at the temporary Jupyter folders while tests run."""
    env = kernel_environment(tmp_path_factory.mktemp("jupyter"), real_data_dir)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        yield env


def execute(name: str, workdir: Path, parameters: str | None = None) -> nbformat.NotebookNode:
    """Run a shipped notebook top to bottom in the `dlstation` kernel; the executed notebook."""
    from nbclient import NotebookClient

    notebook = read(name)
    if parameters is not None:
        cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
        cell.source = parameters
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name=KERNEL,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()
    nbformat.write(notebook, workdir / name)  # kept with the test's files, to read after a failure
    return notebook


def cell_text(cell: nbformat.NotebookNode) -> str:
    """What a code cell printed and returned, as text."""
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(output.data.get("text/plain", ""))
    return "".join(parts)


def images(notebook: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        for output in cell.get("outputs", [])
    )


def matching(notebook: nbformat.NotebookNode, pattern: str) -> list[re.Match[str]]:
    found = []
    for cell in notebook.cells:
        if cell.cell_type == "code":
            found += list(re.finditer(pattern, cell_text(cell), re.MULTILINE))
    return found


def runtime_line(notebook: nbformat.NotebookNode) -> str:
    return cell_text(notebook.cells[0])


@pytest.mark.realdata
@pytest.mark.slow
def test_imdb_notebook_reaches_the_texts_band(kernel_env: dict[str, str], tmp_path: Path) -> None:
    notebook = execute("imdb.ipynb", tmp_path)
    first = runtime_line(notebook)
    assert f"kernel:  {sys.executable}" in first and "backend tensorflow" in first
    assert "device:  CPU" in first
    assert matching(notebook, r"^\? this film was just brilliant casting location scenery")
    assert matching(notebook, r"^9999$")
    assert matching(notebook, r"'val_accuracy'")
    accuracy = float(matching(notebook, r"^test loss [\d.]+, test accuracy ([\d.]+)$")[-1][1])
    assert accuracy >= 0.84, f"IMDB test accuracy {accuracy} after the 4-epoch retrain"
    assert images(notebook) == 2, "Figures 3.7 and 3.8"


@pytest.mark.realdata
@pytest.mark.slow
def test_reuters_notebook_reaches_the_texts_band(
    kernel_env: dict[str, str], tmp_path: Path
) -> None:
    notebook = execute("reuters.ipynb", tmp_path)
    assert matching(notebook, r"^\(8982, 2246\)$")
    assert matching(notebook, r"^True$"), "to_categorical equals the hand-made one-hot"
    accuracy = float(matching(notebook, r"^test loss [\d.]+, test accuracy ([\d.]+)$")[-1][1])
    assert accuracy >= 0.76, f"Reuters test accuracy {accuracy} after 9 epochs"
    baseline = float(matching(notebook, r"^random baseline accuracy: ([\d.]+)$")[-1][1])
    assert 0.1 < baseline < 0.3
    sparse = float(matching(notebook, r"^integer labels: test accuracy ([\d.]+)$")[-1][1])
    assert sparse >= 0.76
    bottleneck = matching(
        notebook,
        r"^4-unit bottleneck: best validation accuracy ([\d.]+), "
        r"against ([\d.]+) with 64 units$",
    )[-1]
    assert float(bottleneck[1]) < float(bottleneck[2]), "the bottleneck costs accuracy"
    assert images(notebook) == 2


# --- a real JupyterLab ----------------------------------------------------------------------


@dataclass
class Server:
    url: str
    token: str
    env: dict[str, str]
    root: Path

    def get(self, path: str) -> Any:
        request = urllib.request.Request(
            f"{self.url}{path}", headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def delete(self, path: str) -> int:
        request = urllib.request.Request(
            f"{self.url}{path}", method="DELETE", headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            status: int = response.status
            return status

    def post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())


def quiet_lab_config(config_dir: Path) -> None:
    """No announcements, no update check, no PyPI extension manager: nothing leaves the host."""
    config = {
        "ServerApp": {"ip": "127.0.0.1", "open_browser": False},
        "LabApp": {
            "news_url": None,
            "check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
            "extension_manager": "readonly",
        },
    }
    (config_dir / "jupyter_server_config.json").write_text(json.dumps(config))
    # The page asks anyway whether to fetch news unless its own setting says no.
    settings = config_dir / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """JupyterLab on 127.0.0.1, a free port and a token, serving a copy of the notebooks."""
    base = tmp_path_factory.mktemp("lab")
    env = {**os.environ, **kernel_environment(base, None)}
    quiet_lab_config(Path(env["JUPYTER_CONFIG_DIR"]))
    env["JUPYTERLAB_SETTINGS_DIR"] = str(Path(env["JUPYTER_CONFIG_DIR"]) / "lab-settings")
    root = base / "notebooks"
    shutil.copytree(NOTEBOOKS, root)
    port, token = free_port(), uuid.uuid4().hex
    log = (base / "lab.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            # CI containers run as root; the server refuses that without the flag.
            *(["--allow-root"] if os.geteuid() == 0 else []),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Server(f"http://127.0.0.1:{port}", token, env, root)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, (base / "lab.log").read_text()[-3000:]
            try:
                server.get("/api/status")
                break
            except OSError:
                assert time.monotonic() < deadline, "JupyterLab did not answer in 180 s"
                time.sleep(0.5)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def run_in_server_kernel(server: Server, kernel_id: str, code: str, timeout_s: float) -> dict:
    """Execute code over the kernel's WebSocket, as JupyterLab does; outputs and the reply."""
    import websocket

    ws_url = server.url.replace("http://", "ws://")
    session = uuid.uuid4().hex
    channel = websocket.create_connection(
        f"{ws_url}/api/kernels/{kernel_id}/channels?session_id={session}",
        header=[f"Authorization: token {server.token}"],
        timeout=timeout_s,
    )
    msg_id = uuid.uuid4().hex
    channel.send(
        json.dumps(
            {
                "header": {
                    "msg_id": msg_id,
                    "session": session,
                    "username": "test",
                    "msg_type": "execute_request",
                    "version": "5.3",
                },
                "parent_header": {},
                "metadata": {},
                "content": {
                    "code": code,
                    "silent": False,
                    "store_history": True,
                    "user_expressions": {},
                    "allow_stdin": False,
                    "stop_on_error": True,
                },
                "channel": "shell",
                "buffers": [],
            }
        )
    )
    text, pictures, reply, idle = io.StringIO(), 0, None, False
    try:
        while reply is None or not idle:
            message = json.loads(channel.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                text.write(content["text"])
            elif kind in ("execute_result", "display_data"):
                text.write(content["data"].get("text/plain", "") + "\n")
                pictures += "image/png" in content["data"]
            elif kind == "error":
                text.write("\n".join(content["traceback"]))
            elif kind == "execute_reply":
                reply = content
            elif kind == "status" and content["execution_state"] == "idle":
                idle = True
    finally:
        channel.close()
    return {"text": text.getvalue(), "images": pictures, "reply": reply}


@pytest.mark.slow
def test_jupyterlab_lists_the_notebooks_and_runs_the_machine_check(lab: Server) -> None:
    listed = lab.get("/api/contents")
    assert sorted(item["name"] for item in listed["content"] if item["type"] == "notebook") == (
        sorted(SHIPPED)
    )
    opened = lab.get("/api/contents/imdb.ipynb")
    assert opened["content"]["metadata"]["kernelspec"]["name"] == KERNEL
    specs = lab.get("/api/kernelspecs")
    assert specs["kernelspecs"][KERNEL]["spec"]["display_name"] == "dlstation (Keras 3, tensorflow)"

    kernel = lab.post("/api/kernels", {"name": KERNEL, "path": "this-machine.ipynb"})
    notebook = read("this-machine.ipynb")
    outputs = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        tags = cell.metadata.get("tags", [])
        code = SHORT_MACHINE_CHECK if "parameters" in tags else cell.source
        done = run_in_server_kernel(lab, kernel["id"], code, timeout_s=CELL_TIMEOUT_S)
        assert done["reply"]["status"] == "ok", done["text"][-3000:]
        outputs.append(done)
    printed = "\n".join(o["text"] for o in outputs)
    assert f"kernel:  {sys.executable}" in printed and "device:  CPU" in printed
    assert "dlbench verify (tensorflow backend, full level, no GPU count expected)" in printed
    assert re.search(r"^verdict: (PASS|WARN)$", printed, re.MULTILINE), printed
    assert "fit: complete" in printed and "compiled: complete" in printed
    assert re.search(r"^steady epoch s\s+[\d.]+\s+[\d.]+$", printed, re.MULTILINE), printed
    assert "fit: no GPU telemetry: NVML did not start" in printed
    assert sum(o["images"] for o in outputs) == 2, "a learning-curve figure per mode"
    assert any(k["id"] == kernel["id"] for k in lab.get("/api/kernels"))
    assert lab.delete(f"/api/kernels/{kernel['id']}") == 204


@pytest.mark.slow
@pytest.mark.chromium
def test_jupyterlab_shows_the_imdb_notebook_in_chromium(lab: Server, tmp_path: Path) -> None:
    from PIL import Image
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    assert Path(chromium).is_file(), "apt-get install chromium (Debian's package)"
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("pageerror", lambda error: errors.append(str(error)))
        # Anything but the server itself would be a request off this machine: refuse it.
        page.route(
            re.compile(r"^(?!" + re.escape(lab.url) + r"|data:|blob:).*"),
            lambda route: route.abort(),
        )
        page.goto(f"{lab.url}/lab/tree/imdb.ipynb?token={lab.token}", timeout=180_000)
        heading = page.locator(".jp-MarkdownCell h1", has_text="3.4 Classifying movie reviews")
        heading.first.wait_for(timeout=180_000)
        idle = page.get_by_text("dlstation (Keras 3, tensorflow) | Idle").filter(visible=True)
        idle.first.wait_for(timeout=180_000)
        page.wait_for_timeout(2000)  # let the toolbar settle on the idle kernel
        shot = page.screenshot()
        browser.close()
    assert errors == []
    picture = Image.open(io.BytesIO(shot))
    assert picture.size == (1400, 900)
    assert len(picture.convert("L").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 50
    (tmp_path / "jupyterlab-imdb.png").write_bytes(shot)
    # Refresh the README's picture with DLSTATION_SCREENSHOT=bench/report/example-jupyterlab.png.
    if target := os.environ.get("DLSTATION_SCREENSHOT"):
        Path(target).write_bytes(shot)
