"""The course's widgets in a real browser, operated as a learner operates them.

For each notebook with a widget: a Jupyter server of its own (127.0.0.1, free port, token,
temporary root holding a copy of the notebook with the smoke parameters injected), Debian's
chromium through Playwright, *Run All Cells* from the menu, then every control of every viewer is
changed at least once (a dropdown picks another option, a slider moves with the keyboard) and the
drawn image must really change (the PNG bytes the viewer shows differ); no cell output may show
an error, the browser console must stay free of errors, and every audio element must have a
playable source (a data URI the browser can play, duration > 0) and play when its play button is
pressed.

The front end is the one this environment carries: JupyterLab 4 + ipywidgets 8 in the course's
``.venv`` (``make test``), the classic notebook + ipywidgets 7.7.1 in the Colab-stack environment
(``make colab-stack``). On failure, screenshots of every widget state, the page and the server's
log go to ``outputs/browser-artifacts/<test>/`` (CI uploads that folder).
"""
from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest

from .frontends import FAILURE_TEXT, FRONTENDS
from .harness import (ROOT, launch_browser, prepare_notebook, require_browser, require_frontend,
                      save_failure_artifacts, start_server)

sys.path.insert(0, str(ROOT / "scripts"))
import run_notebooks as rn  # noqa: E402

# Notebook stem -> what the test expects there.
#   viewers: how many viewers (controls + drawn output) the notebook shows
#   viewer_audio: the viewer's output holds an audio player (played after each redraw check)
#   after: test-only cells inserted after the cell containing the key (see prepare_notebook)
WIDGET_NOTEBOOKS = {
    "00_welcome": dict(viewers=1, viewer_audio=False, min_audio=1),
    "02_attention_in_speech": dict(
        viewers=1, viewer_audio=False, min_audio=0,
        # the smoke run loads 1 clip; 2 let the clip slider move (load_clips(2)[0] is the same clip)
        after={"n_clips = 1 if SMOKE else N_CLIPS":
               "clips = load_clips(2, seed=SEED)  # browser test: the clip slider needs 2 clips"}),
    "05_homophony_cue_contribution": dict(
        viewers=1, viewer_audio=True, min_audio=2,
        # the smoke run shows 1 item in the explorer; 2 let the item dropdown change
        after={"EXPLORER_ITEMS, RECHECK_ITEMS = 1, 1": "EXPLORER_ITEMS = 2  # browser test: the item dropdown needs 2 items"}),
}
RUN_ALL_TIMEOUT = 1500   # s, on a loaded 2-core machine
REDRAW_TIMEOUT = 180     # s for one redraw (notebook 05 computes value zeroing for a new item)

# Console messages that are not the course's errors (each with its reason).
BENIGN_CONSOLE = [
    re.compile(r"favicon"),                                   # no favicon served in tests
    re.compile(r"Failed to load resource.*(api/(workspaces|settings|lab|translations|nbconvert))"),
    re.compile(r"Failed to fetch.*(pypi|news|update)", re.I),  # JupyterLab's update/news check offline
    re.compile(r"ERR_INTERNET_DISCONNECTED|ERR_NAME_NOT_RESOLVED"),  # no network on the machines
    # notebook 6.5 (nbclassic) probes widgetsnbextension 4's path first; ipywidgets 7 is then
    # loaded from jupyter-js-widgets/extension (the widgets rendering is what the test checks)
    re.compile(r"404.*@ \S*/nbextensions/widgets/notebook/js/extension\.js"),
    # the classic notebook's MathJax 2 (markdown math) declares a test font
    # `@font-face {font-family: MathJax_Blank; src: url('about:blank')}`, which chromium refuses
    re.compile(r"Access to font at 'about:blank' .* blocked by CORS policy"),
    re.compile(r"Failed to load resource: net::ERR_FAILED @ about:blank$"),
]


def _notebook(stem: str) -> Path:
    paths = [p for p in rn.notebooks() if p.stem == stem]
    assert paths, f"notebook {stem} not found in notebooks/"
    return paths[0]


# The Output widget's element: class widget-output (ipywidgets 8), jupyter-widgets-output-area (7).
OUT = ".widget-output, .jupyter-widgets-output-area"
OUT_CHILD = ":scope > .widget-output, :scope > .jupyter-widgets-output-area"


def _viewers(page):
    return page.locator(".widget-vbox").filter(has=page.locator(OUT_CHILD)).filter(
        has=page.locator(":scope > .widget-hbox"))


def _output_state(viewer) -> dict:
    """What the viewer shows now: its images (a key of their content, loaded), the audio players
    and the text of its output. The course's viewers show figures as PNG bytes in Image widgets
    (blob: URLs, keyed by a hash of the bytes); a plain Output holds inline data-URI images."""
    return viewer.evaluate("""async (v) => {
        const key = async (i) => {
            const src = i.getAttribute('src') || '';
            if (!src.startsWith('blob:')) return src;
            try {
                const b = new Uint8Array(await (await fetch(src)).arrayBuffer());
                let h = 0x811c9dc5;
                for (let k = 0; k < b.length; k++) { h ^= b[k]; h = Math.imul(h, 0x01000193) >>> 0; }
                return 'png-bytes:' + b.length + ':' + h.toString(16);
            } catch (e) { return ''; } };
        const imgs = Array.from(v.querySelectorAll('img'));
        const o = v.querySelector(':scope > .widget-output, :scope > .jupyter-widgets-output-area');
        return {imgs: await Promise.all(imgs.map(async i => ({
                    src: await key(i), loaded: i.complete && i.naturalWidth > 0}))),
                audios: o ? o.querySelectorAll('audio').length : 0,
                text: o ? o.innerText : ''}; }""")


def _decode_images(viewer):
    """Wait until the browser has decoded the viewer's images and painted two frames (else a
    screenshot can catch a large PNG half painted); fail when one is blank (< 1 % non-white
    pixels: notebook 05's explorer has drawn such a figure on JupyterLab, see the README)."""
    inked = viewer.evaluate("""async (o) => {
        const imgs = Array.from(o.querySelectorAll('img'));
        const r = await Promise.all(imgs.map(i => i.decode().then(() => true, () => false)));
        await new Promise(res => requestAnimationFrame(() => requestAnimationFrame(res)));
        if (!r.every(x => x)) return null;
        // the share of pixels that are not (near) white: a blank figure has ~0
        return imgs.map(i => { const c = document.createElement('canvas');
            c.width = i.naturalWidth; c.height = i.naturalHeight;
            const g = c.getContext('2d'); g.drawImage(i, 0, 0);
            const d = g.getImageData(0, 0, c.width, c.height).data; let n = 0;
            for (let k = 0; k < d.length; k += 4) if (d[k + 3] > 0 && (d[k] < 235 || d[k + 1] < 235 || d[k + 2] < 235)) n++;
            return n / (c.width * c.height); }); }""")
    assert inked is not None, "an image of the viewer's output could not be decoded"
    assert min(inked) >= 0.01, f"the viewer drew a blank figure (share of non-white pixels: {inked})"


def _image_signature(viewer) -> tuple:
    return tuple(i["src"] for i in _output_state(viewer)["imgs"])


def _wait_new_image(viewer, before: tuple, timeout: float, timeline: list = None) -> tuple:
    """The output's images once they differ from ``before``, have all loaded (decoded by the
    browser) and stay the same for 1 s; else what the output shows at ``timeout``. ``timeline``
    collects what the output showed meanwhile (for the failure message)."""
    t0, last = time.time(), None
    sig = ()
    while time.time() - t0 < timeout:
        st = _output_state(viewer)
        sig = tuple(i["src"] for i in st["imgs"])
        if timeline is not None:
            entry = (f"{time.time() - t0:.0f}s: {len(sig)} image(s) "
                     f"{[(len(i['src']), i['loaded']) for i in st['imgs']]}, {st['audios']} audio, "
                     f"same as before: {sig == before}, text {st['text'][-200:]!r}")
            if not timeline or timeline[-1].split(": ", 1)[1] != entry.split(": ", 1)[1]:
                timeline.append(entry)
        if FAILURE_TEXT.search(st["text"]):
            raise AssertionError(f"the viewer's output shows an error:\n{st['text'][-3000:]}")
        if sig and all(i["src"].startswith(("data:image/", "png-bytes:")) and i["loaded"]
                       for i in st["imgs"]) and sig != before:
            if sig == last:
                _decode_images(viewer)
                return sig
            last = sig
        else:
            last = None
        time.sleep(1.0)
    return sig


def _check_audio(page, audio, play: bool) -> dict:
    audio.scroll_into_view_if_needed()
    info = audio.evaluate("""async (a) => {
        const s = a.querySelector('source');
        const type = (s && s.type) || 'audio/wav';
        if (a.readyState < 1) {
            await new Promise(r => { a.addEventListener('loadedmetadata', r, {once: true});
                                     a.addEventListener('error', r, {once: true});
                                     a.load(); setTimeout(r, 15000); });
        }
        const src = a.currentSrc || a.src || (s && s.src) || '';
        return {src: src.slice(0, 30), srcLength: src.length, type: type, canPlay: a.canPlayType(type),
                duration: a.duration, readyState: a.readyState, error: a.error ? a.error.code : null};
    }""")
    assert info["srcLength"] > 100 and info["src"].startswith("data:audio"), f"audio without a data source: {info}"
    assert info["canPlay"] in ("maybe", "probably"), f"the browser cannot play this audio: {info}"
    assert info["error"] is None and info["duration"] and info["duration"] > 0, f"audio did not load: {info}"
    if play:
        box = audio.bounding_box()
        assert box and box["width"] > 0, "the audio element is not visible"
        # the play button of chromium's native controls sits at the left end of the bar
        page.mouse.click(box["x"] + min(20, box["width"] / 8), box["y"] + box["height"] / 2)
        ok = False
        for _ in range(20):
            state = audio.evaluate("a => ({paused: a.paused, t: a.currentTime, ended: a.ended})")
            if state["t"] > 0 or state["ended"]:
                ok = True
                break
            time.sleep(0.25)
        info["played"] = state
        assert ok, f"pressing play did not play the audio: {state}"
        audio.evaluate("a => a.pause()")
    return info


def _change_dropdown(viewer, ctrl, before, shots, tag, log):
    sel = ctrl.locator("select")
    n = sel.locator("option").count()
    label = ctrl.locator(".widget-label").first.inner_text().strip()
    if n < 2:
        log.append(f"{tag} dropdown {label!r}: one option only, nothing to change")
        return before, False
    current = sel.evaluate("s => s.selectedIndex")
    for k in [i for i in range(n) if i != current][:3]:
        sel.select_option(index=k)
        timeline = []
        t0 = time.time()
        after = _wait_new_image(viewer, before, REDRAW_TIMEOUT, timeline)
        viewer.screenshot(path=str(shots / f"{tag}-{label}-{k}.png"))
        chosen = sel.evaluate("s => s.options[s.selectedIndex].text")
        if after and after != before:
            log.append(f"{tag} dropdown {label!r} -> {chosen!r}: image changed ({time.time() - t0:.0f} s)")
            return after, True
        log.append(f"{tag} dropdown {label!r} -> {chosen!r}: image unchanged; the output meanwhile:\n  "
                   + "\n  ".join(timeline))
    raise AssertionError(f"dropdown {label!r}: no other option changed the drawn image\n" + "\n".join(log))


def _change_slider(page, viewer, ctrl, before, shots, tag, log):
    label = ctrl.locator(".widget-label").first.inner_text().strip()
    readout = ctrl.locator(".widget-readout")
    handle = ctrl.locator(".noUi-handle, .ui-slider-handle").first
    start = readout.inner_text().strip()
    for key in ("ArrowRight", "ArrowLeft"):
        handle.focus()
        handle.press(key)
        t0 = time.time()
        while readout.inner_text().strip() == start and time.time() - t0 < 3:
            time.sleep(0.2)
        now = readout.inner_text().strip()
        if now == start:
            continue
        after = _wait_new_image(viewer, before, REDRAW_TIMEOUT)
        viewer.screenshot(path=str(shots / f"{tag}-{label}-{now}.png"))
        if after and after != before:
            log.append(f"{tag} slider {label!r} {start} -> {now}: image changed")
            return after, True
        raise AssertionError(f"slider {label!r} {start} -> {now}: the drawn image did not change\n" + "\n".join(log))
    log.append(f"{tag} slider {label!r}: one value only ({start}), nothing to change")
    return before, False


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.xdist_group("browser")
@pytest.mark.parametrize("stem", list(WIDGET_NOTEBOOKS))
def test_widgets_in_browser(stem, tmp_path, request):
    exe = require_browser()
    kind, desc = require_frontend()
    from playwright.sync_api import sync_playwright

    spec = WIDGET_NOTEBOOKS[stem]
    src = _notebook(stem)
    params, _ = rn.parameters_for(src, smoke=True, solutions=True, extra={})
    nb = prepare_notebook(src, tmp_path / "nb", params, after=spec.get("after"))
    server = start_server(kind, tmp_path / "nb", tmp_path, env_overrides={
        "CTXMIX_OUTPUTS": str(tmp_path / "outputs"), "CTXMIX_STRICT_CHECKS": "1",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    request.addfinalizer(server.stop)
    shots = tmp_path / "shots"
    shots.mkdir()
    console, log = [], [f"front end: {desc}", f"parameters: {params}"]
    with sync_playwright() as pw:
        browser = launch_browser(pw, exe)
        page = None
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: console.append(f"console.{m.type}: {m.text} @ {(m.location or {}).get('url', '')}")
                    if m.type == "error" else None)
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            fe = FRONTENDS[kind](page, server)
            fe.open(nb.name)
            fe.run_all()
            took = fe.wait_all_executed(RUN_ALL_TIMEOUT)
            log.append(f"Run All: {took:.0f} s")
            page.screenshot(path=str(shots / "after-run-all.png"), full_page=True)
            errors = fe.cell_errors()
            assert not errors, "cell outputs show errors:\n" + "\n---\n".join(errors)

            viewers = _viewers(page)
            assert viewers.count() == spec["viewers"], \
                f"{viewers.count()} viewers rendered, expected {spec['viewers']} (a widget failed to display?)"
            changed = 0
            for v_i in range(viewers.count()):
                viewer = viewers.nth(v_i)
                viewer.scroll_into_view_if_needed()
                before = _wait_new_image(viewer, (), 60)
                assert before, f"viewer {v_i} shows no image after Run All"
                viewer.screenshot(path=str(shots / f"v{v_i}-initial.png"))
                controls = viewer.locator(":scope > .widget-hbox > .widget-dropdown, "
                                          ":scope > .widget-hbox > .widget-hslider")
                assert controls.count() >= 1, f"viewer {v_i} has no controls"
                for c_i in range(controls.count()):
                    ctrl = controls.nth(c_i)
                    tag = f"v{v_i}-c{c_i}"
                    cls = ctrl.get_attribute("class") or ""
                    if "widget-dropdown" in cls:
                        before, did = _change_dropdown(viewer, ctrl, before, shots, tag, log)
                    else:
                        before, did = _change_slider(page, viewer, ctrl, before, shots, tag, log)
                    changed += did
                    errors = fe.cell_errors()
                    assert not errors, f"error after operating {tag}:\n" + "\n---\n".join(errors)
                if spec["viewer_audio"]:
                    audios = viewer.locator(OUT_CHILD).first.locator("audio")
                    assert audios.count() >= 1, "the viewer shows no audio player"
                    log.append(f"viewer audio: {_check_audio(page, audios.first, play=True)}")
            assert changed >= 1, "no control could be changed"
            audios = page.locator("audio")
            assert audios.count() >= spec["min_audio"], f"{audios.count()} audio players, expected >= {spec['min_audio']}"
            for a_i in range(audios.count()):
                log.append(f"audio {a_i}: {_check_audio(page, audios.nth(a_i), play=(a_i == 0))}")
            bad = [c for c in console if not any(p.search(c) for p in BENIGN_CONSOLE)]
            assert not bad, "browser console errors:\n" + "\n".join(bad)
            print("\n".join(log))
        except BaseException:
            dest = save_failure_artifacts(request.node.name + "-" + kind, page, shots, server, log + console)
            print(f"artefacts of the failure: {dest}")
            raise
        finally:
            browser.close()


# The smallest viewer the course builds: VBox(HBox(Dropdown), Output) redrawing a matplotlib figure.
# It checks the front end itself (widget models created, comm messages both ways, output captured),
# independently of the course's notebooks, in seconds.
PLAIN_VIEWER = '''\
import ipywidgets as W
import matplotlib.pyplot as plt
from IPython.display import display

dd = W.Dropdown(options=["one", "two", "three"], value="one", description="curve")
out = W.Output()

def draw(change=None):
    with out:
        out.clear_output(wait=True)
        fig, ax = plt.subplots(figsize=(3, 2))
        k = ["one", "two", "three"].index(dd.value) + 1
        ax.plot([0, 1, 2], [0, k, k * k])
        ax.set_xlabel("x (units)")
        ax.set_ylabel("y (units)")
        ax.set_title(dd.value)
        plt.show()

dd.observe(draw, names="value")
display(W.VBox([W.HBox([dd]), out]))
draw()
'''


@pytest.mark.browser
@pytest.mark.xdist_group("browser")
def test_plain_viewer_in_browser(tmp_path, request):
    exe = require_browser()
    kind, desc = require_frontend()
    import nbformat
    from playwright.sync_api import sync_playwright

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(PLAIN_VIEWER)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    (tmp_path / "nb").mkdir()
    nbformat.write(nb, tmp_path / "nb" / "plain_viewer.ipynb")
    server = start_server(kind, tmp_path / "nb", tmp_path)
    request.addfinalizer(server.stop)
    shots = tmp_path / "shots"
    shots.mkdir()
    console, log = [], [f"front end: {desc}"]
    with sync_playwright() as pw:
        browser = launch_browser(pw, exe)
        page = None
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: console.append(f"console.{m.type}: {m.text} @ {(m.location or {}).get('url', '')}")
                    if m.type == "error" else None)
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            fe = FRONTENDS[kind](page, server)
            fe.open("plain_viewer.ipynb")
            fe.run_all()
            fe.wait_all_executed(300)
            errors = fe.cell_errors()
            assert not errors, "cell outputs show errors:\n" + "\n---\n".join(errors)
            viewers = _viewers(page)
            t0 = time.time()
            while viewers.count() == 0 and time.time() - t0 < 30:
                time.sleep(0.5)
            assert viewers.count() == 1, f"{viewers.count()} viewers rendered (a widget failed to display?)"
            viewer = viewers.first
            before = _wait_new_image(viewer, (), 60)
            assert before, "the viewer shows no image"
            ctrl = viewer.locator(":scope > .widget-hbox > .widget-dropdown").first
            after, did = _change_dropdown(viewer, ctrl, before, shots, "plain", log)
            assert did and after != before
            bad = [c for c in console if not any(p.search(c) for p in BENIGN_CONSOLE)]
            assert not bad, "browser console errors:\n" + "\n".join(bad)
            print("\n".join(log))
        except BaseException:
            dest = save_failure_artifacts(request.node.name + "-" + kind, page, shots, server, log + console)
            print(f"artefacts of the failure: {dest}")
            raise
        finally:
            browser.close()
