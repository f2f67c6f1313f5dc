"""The web app: its handlers called directly, then the real page in headless Chromium."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import requests
from cogserver import free_port
from conftest import ROOT
from PIL import Image

from iclight.core import constants as C
from iclight.pipeline import Relighter
from iclight.store.outputs import OutputFolders

gr = pytest.importorskip("gradio", reason="the `ui` extra is not installed")
ui = pytest.importorskip("iclight.web.app")
from iclight.core.light import Light, from_fields  # noqa: E402
from iclight.imaging.images import resize_and_center_crop  # noqa: E402
from iclight.imaging.lighting import condition_image  # noqa: E402
from iclight.web.controls import LIGHT_PAD, light_fields  # noqa: E402

SMALL = dict(width=256, height=256, steps=2, highres_scale=1.0)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _values(**changes) -> dict:
    """The page's values by option name (the light pad's as it shows them), as `RelightApp.relight` takes them."""
    return LIGHT_PAD | {"design_light": False} | changes


@pytest.fixture
def app(relighter: Relighter, tmp_path: Path):
    return ui.RelightApp(relighter, OutputFolders(tmp_path / "outputs"))


def _pixels(path: str | Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_same_pixels_as_the_api(app, relighter: Relighter, image_files) -> None:
    subject, background = (str(p) for p in image_files)
    values = _values(prompt="sun", output_format="png", number_of_images=2, **SMALL)
    gallery, downloads, seed = app.relight(subject, background, None, 21, values)
    assert seed == 21 and gallery == downloads and len(downloads) == 2
    api = relighter.relight(subject, background, "sun", seed=21, number_of_images=2, **SMALL)
    for path, image in zip(downloads, api.images, strict=True):
        assert np.array_equal(_pixels(path), np.asarray(image))
        assert Path(path).name.startswith("subject-21-")
    from iclight.jobs.recipe import read_recipe

    assert read_recipe(downloads[1])["parameters"]["seed"] == 21  # the CLI's recipe, embedded


def test_random_seed_is_reported(app, image_files) -> None:
    subject, background = (str(p) for p in image_files)
    _, _, seed = app.relight(subject, background, None, None, _values(prompt="sun", **SMALL))
    assert isinstance(seed, int)


def test_matte_preview(app, image_files, subject_array) -> None:
    mask = np.where(subject_array[..., 0] > 100, 255, 0).astype(np.uint8)
    path = Path(image_files[0]).with_name("mask.png")
    Image.fromarray(mask).save(path)
    matte, on_grey = app.preview_subject(str(image_files[0]), str(path))
    assert np.array_equal(matte, mask) and on_grey.shape == subject_array.shape
    assert app.preview_subject(None, None) == (None, None)


def test_bad_inputs_give_the_api_messages(app, image_files, tmp_path: Path, monkeypatch) -> None:
    subject, background = (str(p) for p in image_files)
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(gr.Error, match="subject_image: not an image file that Pillow can open"):
        app.preview_subject(str(text), None)
    with pytest.raises(gr.Error, match="subject_image: not an image file that Pillow can open"):
        app.relight(str(text), background, None, 1, _values(prompt="sun", **SMALL))
    with pytest.raises(gr.Error, match="background_image: not an image file"):
        app.preview_background(str(text))
    with pytest.raises(gr.Error, match=r"steps: 0 is out of range; allowed 1 to 100"):
        app.relight(subject, background, None, 1, _values(prompt="sun", **{**SMALL, "steps": 0}))
    with pytest.raises(gr.Error, match=r"width: 300 is not allowed"):
        app.relight(subject, background, None, 1, _values(prompt="sun", **{**SMALL, "width": 300}))
    with pytest.raises(gr.Error, match="subject_image: required"):
        app.relight(None, background, None, 1, _values(prompt="sun", **SMALL))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(gr.Error, match="subject_image: image too large"):
        app.preview_subject(subject, None)


PAD = {"design_light": True, "light_angle": 30.0, "light_color": "orange", "fill_strength": 0.4, "fill_angle": 200.0}


def _preview(app, background, light_source: str, **pad):
    """The light preview as the page asks for it: the background, then the light's values by name."""
    values = {"light_source": light_source, "width": 256, "height": 320, "light_map": None} | LIGHT_PAD | pad
    return app.preview_light(background, values)


def _light(**pad) -> tuple[Light | None, float | None]:
    fields = light_fields(True, LIGHT_PAD | pad)
    mix = fields.pop("light_mix")
    return from_fields(fields), mix


def test_the_light_preview_is_what_the_model_sees(app, image_files, background_array) -> None:
    background = str(image_files[1])
    hosted = _preview(app, background, C.LEFT_LIGHT)
    assert np.array_equal(hosted, condition_image(C.LEFT_LIGHT, None, 256, 320))
    designed = _preview(app, background, C.BACKGROUND_IMAGE, **PAD, light_mix=0.5)
    light, mix = _light(**PAD, light_mix=0.5)
    bg = np.asarray(Image.open(background).convert("RGB"))
    assert light.color == "orange" and light.fill.strength == 0.4 and mix == 0.5
    assert np.array_equal(designed, condition_image(C.BACKGROUND_IMAGE, bg, 256, 320, light, None, mix))
    assert _preview(app, None, C.BACKGROUND_IMAGE) is None  # nothing to show yet
    with pytest.raises(gr.Error, match="light_color: 'sky' is not a colour"):
        _preview(app, background, C.BACKGROUND_IMAGE, design_light=True, light_color="sky")


def test_a_designed_light_relights_as_the_api(app, relighter: Relighter, image_files) -> None:
    subject, background = (str(p) for p in image_files)
    values = _values(prompt="sun", output_format="png", keep_colors=0.5, **PAD, **SMALL)
    _, downloads, _ = app.relight(subject, background, None, 21, values)
    light, mix = _light(**PAD)
    api = relighter.relight(subject, background, "sun", seed=21, light=light, light_mix=mix, keep_colors=0.5, **SMALL)
    assert np.array_equal(_pixels(downloads[0]), np.asarray(api.images[0]))


def test_every_relight_and_sequence_runs_on_the_apps_one_model_thread(
    app, relighter: Relighter, image_files, monkeypatch
) -> None:
    """torch.compile keeps its CUDA graphs per thread (ICLIGHT_COMPILE=graphs): the page's runs all
    use one thread, whichever of Gradio's threads handles the click."""
    threads = []
    run, run_shared = relighter.run, relighter.run_shared

    def noted(fn):
        def call(*args, **kwargs):
            threads.append(threading.get_ident())
            return fn(*args, **kwargs)

        return call

    monkeypatch.setattr(relighter, "run", noted(run))
    monkeypatch.setattr(relighter, "run_shared", noted(run_shared))
    subject, background = (str(p) for p in image_files)
    values = _values(prompt="sun", **SMALL)
    for _ in range(2):
        list(app.relight_live(subject, background, None, 3, [], values))
    tab = ui.SequenceTab(relighter, app.outputs, app.model)
    tab.relight_sequence(None, [subject, subject], background, None, {"prompt": "sun", "consistency": 0.5, **SMALL})
    assert len(threads) == 3 and len(set(threads)) == 1 and threads[0] != threading.get_ident()


def test_one_relight_at_a_time(app) -> None:
    page = app.build()
    for name in ("relight_live", "relight_sequence"):
        relight = next(d for d in page.fns.values() if d.name == name)
        assert relight.concurrency_limit == 1


# -- the real page -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(weights_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """`python -m iclight ui` as a user starts it, on a free loopback port; one for the module's
    browser tests, each with its own page (a visit's history is the page's own)."""
    tmp_path = tmp_path_factory.mktemp("ui-served")
    port = free_port()
    env = {**os.environ, "ICLIGHT_OUTPUT_DIR": str(tmp_path / "outputs"), "GRADIO_TEMP_DIR": str(tmp_path / "gr")}
    cmd = [sys.executable, "-m", "iclight", "ui", "--port", str(port), "--weights", str(weights_dir)]
    with open(tmp_path / "ui.log", "w+") as log:
        proc = subprocess.Popen([*cmd, "--device", "cpu"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    log.seek(0)
                    pytest.fail(f"iclight ui exited: {log.read()[-3000:]}")
                try:
                    if requests.get(url, timeout=2).status_code == 200:
                        break
                except requests.ConnectionError:
                    time.sleep(0.3)
            yield url
        finally:
            proc.terminate()
            proc.wait(20)


BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


NEEDS_CHROMIUM = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
# Records what the result area shows while a relight runs: the forming image and its label.
WATCH = """() => {
    window.seen = [];
    const record = () => {
        const img = document.querySelector('#live img');
        const label = document.querySelector('#stage');
        window.seen.push([img ? img.src : '', label ? label.innerText : '']);
    };
    const all = {subtree: true, childList: true, attributes: true, characterData: true};
    new MutationObserver(record).observe(document.body, all);
}"""


def _box(page, selector: str) -> dict:
    box = page.locator(selector).first.bounding_box()
    assert box is not None, selector
    return box


@NEEDS_CHROMIUM
def test_the_first_screen_does_the_job_and_shows_the_image_forming(
    served: str, relighter: Relighter, image_files, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    subject, background = image_files
    text = tmp_path / "broken.png"  # the drop zone takes images only: a file that claims to be one
    text.write_text("not an image")
    with _page(served, height=800, width=1280) as page:
        for selector in ("#subject", "#background", "#prompt", "#relight"):
            box = _box(page, selector)
            assert box["y"] + box["height"] <= 800, (selector, box)  # all on the first screen
        assert abs(_box(page, "#subject")["y"] - _box(page, "#background")["y"]) < 2  # side by side
        page.locator("#subject input[type=file]").set_input_files(str(subject))
        page.locator("#background input[type=file]").set_input_files(str(background))
        for selector in ("#subject img", "#background img"):
            expect(page.locator(selector).first).to_be_visible(timeout=30_000)
        page.evaluate(WATCH)
        link = _relight_small(page, seed=21, steps=20)
        seen = page.evaluate("window.seen")
        pictures = {src for src, label in seen if src and "step" in label}
        labels = {label for _, label in seen}
        assert len(pictures) >= 2, labels  # the preview changed at least twice
        assert any(text.startswith("low-res pass, step") for text in labels)
        assert any(text.startswith("high-res pass, step") for text in labels)
        expect(page.locator("#seed-used input")).to_have_value("21")
        expect(page.locator("#slider img")).to_have_count(2)  # the subject and the result
        before = _download_src(page, page.locator("#slider img").first.get_attribute("src"), tmp_path / "before.png")
        framed = resize_and_center_crop(np.asarray(Image.open(subject).convert("RGB")), 256, 256)
        assert np.array_equal(_pixels(before), framed)  # the subject as the result frames it
        page.locator("#advanced").get_by_text("Advanced").click()  # closed again, for the screenshot
        page.evaluate("window.scrollTo(0, 0)")
        page.wait_for_timeout(500)
        page.screenshot(path=str(tmp_path / "ui.png"))
        with page.expect_download() as info:
            link.click()
        first = tmp_path / "first.png"
        info.value.save_as(first)
        api = relighter.relight(subject, background, "sun", seed=21, **SMALL | {"steps": 20}).images[0]
        assert np.array_equal(_pixels(first), np.asarray(api))
        _fill(page, "#seed input", "22")
        page.locator("#relight").click()
        expect(page.locator("#seed-used input")).to_have_value("22", timeout=90_000)
        expect(page.locator("#history img")).to_have_count(2, timeout=30_000)  # the visit's history grows
        page.locator("#subject button[aria-label='Remove Image']").first.click()
        page.locator("#matte-panel").get_by_text("Mask, matte").click()  # the matte preview reads it
        page.locator("#subject input[type=file]").set_input_files(str(text))
        expect(page.get_by_text("subject_image: not an image file that Pillow can open").first).to_be_visible(
            timeout=30_000
        )
    screenshot = os.environ.get("UI_SCREENSHOT")
    if screenshot:
        shutil.copy(tmp_path / "ui.png", screenshot)


@NEEDS_CHROMIUM
def test_a_narrow_window_stacks_the_same_order_in_one_column(served: str) -> None:
    with _page(served, height=844, width=390) as page:
        order = ["#subject", "#background", "#prompt", "#relight", "#live"]
        boxes = [_box(page, selector) for selector in order]
        for (upper, lower), names in zip(itertools.pairwise(boxes), itertools.pairwise(order), strict=True):
            assert lower["y"] >= upper["y"] + upper["height"] - 1, names
        assert all(b["x"] >= 0 and b["x"] + b["width"] <= 390 for b in boxes)


@NEEDS_CHROMIUM
def test_a_clip_plays_on_the_first_screen_and_comes_back_relit_over_a_moving_background(
    served: str, relighter: Relighter, tmp_path: Path
) -> None:
    """At 1280x800: the clip shows as a video that plays, the background may be a video, and the
    prompt, the light and the button are on the first screen; the relit clip plays."""
    from media import clip
    from playwright.sync_api import expect

    subject = clip(tmp_path / "clip.mp4", count=3)
    street = clip(tmp_path / "street.mp4", count=2, colors=[(200, 40, 40), (40, 40, 200)])
    with _page(served, height=800, width=1280) as page:
        page.get_by_role("tab", name="Sequence").click()
        for selector in ("#seq-input", "#seq-prompt", "#seq-light", "#seq-relight"):
            box = _box(page, selector)
            assert box["y"] + box["height"] <= 800, (selector, box)
        page.locator("#seq-input input[type=file]").set_input_files(str(subject))
        expect(page.locator("#seq-input video")).to_be_visible(timeout=30_000)  # the clip, as a video
        page.wait_for_function("() => document.querySelector('#seq-input video').readyState >= 1", timeout=30_000)
        page.get_by_role("tab", name="Video", exact=True).click()
        page.locator("#seq-background-video input[type=file]").set_input_files(str(street))
        expect(page.locator("#seq-background-video video")).to_be_visible(timeout=30_000)
        page.locator("#seq-prompt textarea").fill("sun")
        page.locator("#seq-advanced").get_by_text("Size, steps").click()
        page.wait_for_timeout(500)
        for elem, value in (("#seq-width", "256"), ("#seq-height", "256"), ("#seq-steps", "2"), ("#seq-highres", "1")):
            _fill(page, f"{elem} input[type=number]", value)
        _fill(page, "#seq-seed input", "4")
        page.locator("#seq-relight").click()
        player = page.locator("#seq-video video")
        expect(player).to_be_visible(timeout=120_000)
        expect(page.locator("#seq-strip img")).to_have_count(3, timeout=30_000)
        page.wait_for_function("() => document.querySelector('#seq-video video').readyState >= 2", timeout=30_000)
        assert player.evaluate("v => v.duration") > 0.3  # 3 frames at 8 fps
        first = _download_src(page, page.locator("#seq-strip img").first.get_attribute("src"), tmp_path / "f0.png")
    api = relighter.relight_sequence(subject, street, "sun", seed=4, width=256, height=256, steps=2, highres_scale=1.0)
    assert np.array_equal(_pixels(first), np.asarray(api.images[0]))


@NEEDS_CHROMIUM
def test_the_light_pad_in_a_real_browser(served: str, relighter: Relighter, image_files, tmp_path: Path) -> None:
    """Set an angle and a colour, see the preview change before relighting, relight: the API's pixels."""
    from playwright.sync_api import expect

    subject, background = image_files
    with _page(served, height=1600) as page:
        page.locator("#subject input[type=file]").set_input_files(str(subject))
        page.locator("#background input[type=file]").set_input_files(str(background))
        page.locator("#light-pad").get_by_text("Light pad").click()
        preview = page.locator("#preview img")
        expect(preview).to_be_visible(timeout=60_000)  # the background: what the model sees so far
        before = preview.get_attribute("src")
        page.locator("#design input[type=checkbox]").check()
        _fill(page, "#light-angle input[type=number]", "30")
        _fill(page, "#light-color textarea", "orange")
        expect(preview).not_to_have_attribute("src", before, timeout=30_000)
        page.wait_for_timeout(1000)  # the last change's preview
        shown = _pixels(_download_src(page, preview.get_attribute("src"), tmp_path / "preview.png"))
        want = condition_image(C.BACKGROUND_IMAGE, None, 512, 640, Light(angle=30, color="orange"))
        assert np.array_equal(shown, want)  # served as PNG: the very pixels
        link = _relight_small(page, seed=21)
        with page.expect_download() as info:
            link.click()
        got = tmp_path / "lit.png"
        info.value.save_as(got)
    light = Light(angle=30, color="orange", bright=224.0, dark=32.0)
    api = relighter.relight(subject, background, "sun", seed=21, light=light, **SMALL).images[0]
    assert np.array_equal(_pixels(got), np.asarray(api))


@NEEDS_CHROMIUM
def test_a_panorama_shows_its_view_and_light_before_any_relight(served: str, relighter: Relighter, tmp_path: Path):
    from media import panorama
    from playwright.sync_api import expect

    from iclight.imaging import hdri

    cv2 = hdri._cv2()
    path = tmp_path / "sky.hdr"
    cv2.imwrite(str(path), panorama()[..., ::-1])
    pano, light = hdri.Panoramas().get(path)
    with _page(served, height=1600) as page:
        page.locator("#light-pad").get_by_text("Light pad").click()
        page.locator("#hdri input[type=file]").set_input_files(str(path))
        preview = page.locator("#preview img")
        expect(preview).to_be_visible(timeout=60_000)
        page.wait_for_timeout(1000)  # the last change's preview
        shown = _pixels(_download_src(page, preview.get_attribute("src"), tmp_path / "view.png"))
        assert np.array_equal(shown, hdri.condition(pano, light, 512, 640, 0.0, 0.0, 60.0, 0.0, 0.5)[0])
        before = preview.get_attribute("src")
        _fill(page, "#hdri-heading input[type=number]", "90")
        expect(preview).not_to_have_attribute("src", before, timeout=30_000)
        page.wait_for_timeout(1000)
        turned = _pixels(_download_src(page, preview.get_attribute("src"), tmp_path / "turned.png"))
        assert np.array_equal(turned, hdri.condition(pano, light, 512, 640, 90.0, 0.0, 60.0, 0.0, 0.5)[0])


@contextmanager
def _page(url: str, height: int, width: int = 1400) -> Iterator:
    """A page of the app at `url` in headless Chromium, closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = browser.new_page(accept_downloads=True, viewport={"width": width, "height": height})
            page.goto(url)
            yield page
        finally:
            browser.close()


def _relight_small(page, seed: int, steps: int = 2):
    """Prompt, a fixed seed and the small test size in PNG, then Relight; the first download link."""
    from playwright.sync_api import expect

    page.locator("#prompt textarea").fill("sun")
    page.locator("#random-seed input[type=checkbox]").uncheck()
    _fill(page, "#seed input", str(seed))
    page.locator("#advanced").get_by_text("Advanced").click()
    expect(page.locator("#width input[type=number]")).to_be_visible()
    page.wait_for_timeout(500)  # let the accordion finish opening
    for elem, value in (("#width", "256"), ("#height", "256"), ("#steps", str(steps)), ("#highres-scale", "1")):
        _fill(page, f"{elem} input[type=number]", value)
    page.locator("#format").get_by_label("png").check()
    page.locator("#relight").click()
    link = page.locator("#downloads a").first
    expect(link).to_be_visible(timeout=90_000)
    return link


def _download_src(page, src: str, path: Path) -> Path:
    """An image element's source (a URL of the app, or a data URI) as a file."""
    import base64

    if src.startswith("data:"):
        path.write_bytes(base64.b64decode(src.split(",", 1)[1]))
    else:
        path.write_bytes(page.request.get(src).body())
    return path


def _fill(page, selector: str, value: str) -> None:
    from playwright.sync_api import expect

    box = page.locator(selector)
    box.fill(value)
    box.press("Enter")
    box.blur()
    expect(box).to_have_value(value)


def test_the_fc_model_relights_from_the_prompt_as_the_api(both: Relighter, image_files, tmp_path: Path) -> None:
    """With fc chosen, a background left in its (hidden) drop zone is not used; the light is fc's."""
    app = ui.RelightApp(both, OutputFolders(tmp_path / "outputs"))
    subject, background = (str(p) for p in image_files)
    values = _values(prompt="sun", output_format="png", model="fc", light_source=C.LEFT_LIGHT, lowres_denoise=0.8)
    _, downloads, _ = app.relight(subject, background, None, 4, values | SMALL)
    api = both.relight(subject, None, "sun", model="fc", light_source=C.LEFT_LIGHT, lowres_denoise=0.8, seed=4, **SMALL)
    assert np.array_equal(_pixels(downloads[0]), np.asarray(api.images[0]))
    fbc = _values(prompt="sun", output_format="png", model="fbc", lowres_denoise=0.8)  # fc's slider, hidden for fbc
    _, downloads, _ = app.relight(subject, background, None, 4, fbc | SMALL)
    assert np.array_equal(
        _pixels(downloads[0]), np.asarray(both.relight(subject, background, "sun", seed=4, **SMALL).images[0])
    )
    preview = app.preview_light(None, _values(model="fc", light_source=C.LEFT_LIGHT, width=256, height=256))
    assert preview[0, 0, 0] == 255 and preview[0, -1, 0] == 0  # fc's gradient, 255 to 0
    assert app.preview_light(None, _values(model="fc", light_source=C.NO_LIGHT, width=256, height=256)) is None


@NEEDS_CHROMIUM
def test_choosing_fc_hides_the_background_and_offers_its_lights(served: str, both: Relighter, image_files, tmp_path):
    from playwright.sync_api import expect

    subject, _ = image_files
    with _page(served, height=800, width=1280) as page:
        expect(page.locator("#background")).to_be_visible()
        page.locator("#model").get_by_label("fc: from the prompt and a light").check()
        expect(page.locator("#background")).to_be_hidden()
        box = _box(page, "#relight")
        assert box["y"] + box["height"] <= 800  # the first screen still does the job
        page.locator("#subject input[type=file]").set_input_files(str(subject))
        expect(page.locator("#subject img").first).to_be_visible(timeout=30_000)
        link = _relight_small(page, seed=8)
        with page.expect_download() as info:
            link.click()
        info.value.save_as(tmp_path / "fc.png")
    api = both.relight(str(subject), None, "sun", model="fc", seed=8, **SMALL).images[0]
    assert np.array_equal(_pixels(tmp_path / "fc.png"), np.asarray(api))
