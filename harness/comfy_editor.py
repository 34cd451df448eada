"""The real ComfyUI web editor (comfyui-frontend-package, served by a :class:`harness.comfy_server.ComfyServer`)
in headless Chromium driven by Playwright, for the browser tests and the docs screenshots. Works with the frontend
0.3.75 pins (1.32.x, PrimeVue toasts, ``.markdown-content`` docs pages) and the newest (1.58.x: its own toasts,
``.comfy-markdown-content`` for a page and the fallback alike, the docs in a right-hand panel)."""
from __future__ import annotations

import json
from pathlib import Path

from .comfy_server import ComfyServer, PromptError, ServerError, describe_refusal

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
# The pop-ups that tell a user of a warning or an error, on every supported frontend: PrimeVue's toasts (1.32.x),
# the toasts of 1.58.x (data-toast-kind) and its error overlay ("N issues found", e.g. a missing model).
ALERTS = ", ".join([".p-toast-message-warn", ".p-toast-message-error",
                    '[data-testid="toast"][data-toast-kind="warning"]',
                    '[data-testid="toast"][data-toast-kind="error"]', '[data-testid="error-overlay"]'])
# What the editor puts in an API prompt node's "_meta" besides its title (1.58.x: the node's pack id, the pack's
# repository and version, from the node's properties). The backend reads only "_meta.title" (for error messages),
# so these are the keys the backend ignores; api_prompt() drops them, and only them.
EDITOR_ONLY_META = ("cnr_id", "aux_id", "ver")
EDITOR_READY = "window.app && window.app.graph && window.app.canvas && document.querySelector('#graph-canvas')"


class Editor:
    """The real ComfyUI web editor (comfyui-frontend-package, served by ``server``) in headless
    Chromium driven by Playwright. Every request that is not to the server is blocked; uncaught page
    errors are collected in ``page_errors``.

        with Editor(server) as editor:
            editor.load(workflow); editor.queue()
    """

    def __init__(self, server: ComfyServer, chromium: str = CHROMIUM, viewport=(1600, 1000)) -> None:
        self.server = server
        self.chromium = chromium
        self.viewport = {"width": viewport[0], "height": viewport[1]}
        self.page_errors: list[str] = []
        self._playwright = self._browser = self.page = None

    def __enter__(self) -> "Editor":
        if not Path(self.chromium).is_file():
            raise ServerError(f"no Chromium at {self.chromium} (Debian: apt-get install -y chromium)")
        from playwright.sync_api import sync_playwright
        self._playwright = sync_playwright().start()
        try:
            self._browser = self._playwright.chromium.launch(executable_path=self.chromium, args=CHROMIUM_FLAGS)
            self.page = self._browser.new_page(viewport=self.viewport)
            self.page.on("pageerror", lambda error: self.page_errors.append(str(error)))
            local = (self.server.url + "/", "data:", "blob:")
            self.page.route("**/*", lambda route: (route.continue_() if route.request.url.startswith(local)
                                                   else route.abort()))
            self.page.add_init_script("localStorage.setItem('vueNodesBannerDismissed', 'true')")
            self.page.goto(self.server.url)
            self.page.wait_for_function(EDITOR_READY, timeout=120_000)
            self.evaluate("() => app.graph.clear()")
            self.alerts()  # what the editor's default workflow raised (1.58.x: its models are missing here)
        except Exception:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._browser is not None:
            self._browser.close()
        if self._playwright is not None:
            self._playwright.stop()
        self._browser = self._playwright = None

    def evaluate(self, script: str, arg=None):
        return self.page.evaluate(script, arg)

    def load(self, workflow: dict) -> dict:
        """Load a UI workflow as a user's drag and drop does (no missing-nodes dialog); returns what the
        editor made of it: ``missing`` (node types it does not know), ``with_errors`` (node ids it
        flagged), ``alerts`` (the warning and error pop-ups it showed, e.g. a workflow that fails its
        schema; closed afterwards) and ``widgets`` (node id -> [[widget name, value], ...] as saved)."""
        loaded = self.evaluate("""async (workflow) => {
            await app.loadGraphData(workflow, true, true, null, {showMissingNodesDialog: false});
            const known = LiteGraph.registered_node_types;
            return {
                missing: app.graph.nodes.filter(n => !(n.type in known)).map(n => n.type),
                with_errors: app.graph.nodes.filter(n => n.has_errors).map(n => n.id),
                widgets: Object.fromEntries(app.graph.nodes.map(n => [n.id,
                    (n.widgets || []).filter(w => w.serialize !== false).map(w => [w.name, w.value])])),
            };
        }""", workflow)
        self.page.wait_for_timeout(300)  # pop-ups appear after the load resolves
        loaded["alerts"] = self.alerts()
        return loaded

    def alerts(self) -> list[str]:
        """The text of every warning and error pop-up the editor shows now (``ALERTS``), which are then closed."""
        texts = self.evaluate("""(selector) => Array.from(document.querySelectorAll(selector))
            .filter(e => e.getClientRects().length > 0).map(e => e.innerText.trim())""", ALERTS)
        self.evaluate("""() => {
            const toast = app.extensionManager.toast;
            (toast.dismissAll || toast.removeAll)?.call(toast);
            document.querySelectorAll('.p-toast-message .p-toast-close-button').forEach(b => b.click());
            document.querySelectorAll('[data-testid="error-overlay"] button').forEach(b => {
                if (!b.innerText.trim()) b.click(); });  // its close (x) button, not "View details"
        }""")
        self.page.wait_for_function("""(selector) => Array.from(document.querySelectorAll(selector))
            .every(e => e.getClientRects().length === 0)""", arg=ALERTS, timeout=10_000)
        return texts

    def serialize(self) -> dict:
        """The open workflow as the editor saves it (JSON text: fields left undefined are absent)."""
        return json.loads(self.evaluate("() => JSON.stringify(app.graph.serialize())"))

    def api_prompt(self) -> dict:
        """The open workflow as the editor sends it to the server (its own graphToPrompt, as JSON), less the
        ``_meta`` keys the backend ignores (``EDITOR_ONLY_META``)."""
        prompt = json.loads(self.evaluate("async () => JSON.stringify((await app.graphToPrompt()).output)"))
        for node in prompt.values():
            for key in EDITOR_ONLY_META:
                node.get("_meta", {}).pop(key, None)
        return prompt

    def set_widget(self, node_id: int, name: str, value) -> None:
        """Set a widget as a user's edit does (its callback runs)."""
        problem = self.evaluate("""([id, name, value]) => {
            const node = app.graph.getNodeById(id);
            if (!node) return `no node ${id}`;
            const widget = (node.widgets || []).find(w => w.name === name);
            if (!widget) return `node ${id} has no widget ${name}`;
            widget.value = value;
            widget.callback?.(value, app.canvas, node);
            app.graph.setDirtyCanvas(true, true);
            return null;
        }""", [node_id, name, value])
        if problem:
            raise ValueError(problem)

    def queue(self, timeout: float = 600.0) -> dict:
        """Press the editor's Run button and wait until the server has finished that prompt; returns its
        history entry (or raises PromptError with the server's answer if it refused the prompt)."""
        with self.page.expect_response(lambda r: r.url.endswith("/prompt") and r.request.method == "POST") as answer:
            self.page.get_by_role("button", name="Run", exact=True).first.click()
        response = answer.value
        body = response.json()
        if response.status != 200:
            raise PromptError(f"ComfyUI refused the editor's prompt (HTTP {response.status}): {describe_refusal(body)}",
                              response.status, body)
        entry = self.server.wait(body["prompt_id"], timeout)
        if entry["status"].get("status_str") != "success":
            raise PromptError(f"the editor's prompt {body['prompt_id']} failed: {entry['status']}", None, entry)
        return entry

    def fit_view(self) -> None:
        """Zoom the canvas so that the whole graph is visible (the editor's Fit View command)."""
        self.evaluate("async () => await app.extensionManager.command.execute('Comfy.Canvas.FitView')")
        view = None
        for _ in range(40):  # the editor animates the zoom: wait until it settles
            self.page.wait_for_timeout(100)
            now = self.evaluate("() => [app.canvas.ds.scale, ...app.canvas.ds.offset]")
            if now == view:
                break
            view = now

    def graph_box(self, margin: int = 24) -> dict:
        """The screen rectangle (CSS pixels) around every node and group, for ``screenshot(clip=...)``."""
        return self.evaluate("""(margin) => {
            const ds = app.canvas.ds, rect = app.canvas.canvas.getBoundingClientRect();
            const boxes = app.graph.nodes.map(n => [n.pos[0], n.pos[1] - LiteGraph.NODE_TITLE_HEIGHT, n.size[0],
                                                   n.size[1] + LiteGraph.NODE_TITLE_HEIGHT])
                .concat((app.graph.groups || []).map(g => g._bounding || g.bounding));
            const x0 = Math.min(...boxes.map(b => b[0])), y0 = Math.min(...boxes.map(b => b[1]));
            const x1 = Math.max(...boxes.map(b => b[0] + b[2])), y1 = Math.max(...boxes.map(b => b[1] + b[3]));
            const left = Math.max(rect.left, rect.left + (x0 + ds.offset[0]) * ds.scale - margin);
            const top = Math.max(rect.top, rect.top + (y0 + ds.offset[1]) * ds.scale - margin);
            const right = Math.min(rect.right, rect.left + (x1 + ds.offset[0]) * ds.scale + margin);
            const bottom = Math.min(rect.bottom, rect.top + (y1 + ds.offset[1]) * ds.scale + margin);
            return {x: left, y: top, width: right - left, height: bottom - top};
        }""", margin)

    def set_locale(self, locale: str, settle_ms: int = 3000) -> None:
        """Switch the editor's language (the Comfy.Locale setting, as its settings dialog does); the editor then
        reloads its node definitions and translations, which takes a moment."""
        self.evaluate("async (locale) => await app.extensionManager.setting.set('Comfy.Locale', locale)", locale)
        self.page.wait_for_function("(locale) => app.extensionManager.setting.get('Comfy.Locale') === locale",
                                    arg=locale, timeout=15_000)
        self.page.wait_for_timeout(settle_ms)

    def open_node_docs(self, node_type: str, until_text: str | None = None, timeout_ms: int = 20_000) -> dict:
        """Add a ``node_type`` node to an empty graph, select it and press the info button of the selection
        toolbox, as a user opens a node's docs (any docs panel still open is closed first); returns what the
        panel shows once it holds ``until_text`` (when given: the panel may still show the previous node's page
        for a moment) and its pictures have loaded: ``text``, ``heading`` (its first h1, None for the node's
        description the editor falls back to), ``images`` ([{src, naturalWidth}]) and ``responses`` (the docs
        files the editor fetched: url, status). The panel stays open (``close_node_docs``)."""
        responses = []

        def seen(response) -> None:
            if "/docs/" in response.url:
                responses.append({"url": response.url.replace(self.server.url, ""), "status": response.status})
        self.close_node_docs()
        self.page.on("response", seen)
        try:
            self.evaluate("""(type) => {
                app.graph.clear();
                const node = LiteGraph.createNode(type);
                const rect = app.canvas.canvas.getBoundingClientRect();
                node.pos = app.canvas.ds.convertOffsetToCanvas([rect.width / 3, rect.height / 2]);
                app.graph.add(node);
                app.canvas.deselectAll?.();
                app.canvas.selectNode(node);
                app.graph.setDirtyCanvas(true, true);
            }""", node_type)
            button = self.page.locator('.selection-toolbox [data-testid="info-button"]')
            button.wait_for(state="visible", timeout=timeout_ms)
            button.click()
            # a served page: .markdown-content (1.32.x) or .comfy-markdown-content (1.58.x, also its fallback)
            self.page.wait_for_function("""(text) => { const box = document.querySelector('.node-help-content');
                return box && box.querySelector('.markdown-content, .comfy-markdown-content, .fallback-content')
                    && (text === null || box.innerText.includes(text)); }""", arg=until_text, timeout=timeout_ms)
            self.page.wait_for_function("""() => Array.from(document.querySelectorAll('.node-help-content img'))
                .every(i => i.complete)""", timeout=timeout_ms)
            shown = self.evaluate("""() => {
                const box = document.querySelector('.node-help-content');
                const heading = box.querySelector('h1');
                return {text: box.innerText, heading: heading ? heading.innerText.trim() : null,
                        images: Array.from(box.querySelectorAll('img')).map(
                            i => ({src: i.getAttribute('src'), naturalWidth: i.naturalWidth}))};
            }""")
        finally:
            self.page.remove_listener("response", seen)
        shown["responses"] = responses
        return shown

    def close_node_docs(self, timeout_ms: int = 10_000) -> None:
        """Close the docs panel if one is open: 1.58.x's right-hand panel (its Comfy.RightSidePanel.IsOpen
        setting), 1.32.x's node library sidebar that shows the page."""
        self.evaluate("""async () => {
            const manager = app.extensionManager;
            if (manager.setting.get('Comfy.RightSidePanel.IsOpen'))
                await manager.setting.set('Comfy.RightSidePanel.IsOpen', false);
            if (document.querySelector('.node-help-content') && manager.sidebarTab?.activeSidebarTabId)
                manager.sidebarTab.toggleSidebarTab(manager.sidebarTab.activeSidebarTabId);
        }""")
        self.page.wait_for_function("() => !document.querySelector('.node-help-content')", timeout=timeout_ms)

    def docs_panel_box(self) -> dict:
        """The screen rectangle (CSS pixels) of the open docs panel, header included (the parent of the
        scrolling box that holds the page), within the window: for ``screenshot(clip=...)``."""
        return self.evaluate("""() => {
            let box = document.querySelector('.node-help-content');
            while (box.parentElement && !['auto', 'scroll'].includes(getComputedStyle(box).overflowY))
                box = box.parentElement;
            const r = (box.parentElement || box).getBoundingClientRect();
            const x = Math.max(0, r.left), y = Math.max(0, r.top);
            return {x, y, width: Math.min(window.innerWidth, r.right) - x,
                    height: Math.min(window.innerHeight, r.bottom) - y};
        }""")

    def screenshot(self, path: Path, **kwargs) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.wait_for_timeout(300)  # one more frame after the last change
        self.page.screenshot(path=str(path), **kwargs)
        return path
