"""End to end in Chromium: upload a zip of your own images, train, export the student as ONNX, download it.

Uses the server fixture (conftest) and the helpers in tests/browser.py. Skips without Chromium or
Playwright, unless KD_REQUIRE_BROWSER is set (CI).
"""
import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.browser import browser_page, need_chromium, playwright, settle, shot
from tests.helpers import CLASSES, shape_image

pytestmark = pytest.mark.browser


def _images_zip(path: Path, n_per_class: int = 12) -> Path:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for c in CLASSES:
            for i in range(n_per_class):
                img = io.BytesIO()
                shape_image(c, rng).save(img, "PNG")
                z.writestr(f"shapes/{c}/{i:02d}.png", img.getvalue())
    path.write_bytes(buf.getvalue())
    return path


def test_upload_zip_train_export_onnx_download(server, tmp_path):
    need_chromium()
    import onnxruntime as ort

    url, runs = server
    zip_path = _images_zip(tmp_path / "shapes.zip")
    with playwright() as p:
        browser, page, _ = browser_page(p, url, height=2000, accept_downloads=True)
        try:
            page.goto(f"{url}/?epochs=3&teacher_epochs=3&batch=16", wait_until="domcontentloaded")
            page.get_by_text("Will run:").wait_for(timeout=90_000)
            settle(page)
            page.get_by_role("combobox", name="Dataset").click()
            page.get_by_role("option", name="Your images (folder of class subfolders)").click()
            page.locator("input[type=file]").first.wait_for(state="attached", timeout=30_000)
            page.locator("input[type=file]").first.set_input_files(str(zip_path))
            page.get_by_text("36 images in 3 classes").wait_for(timeout=60_000)
            page.get_by_text("image_folder ·").wait_for(timeout=30_000)  # the "Will run" line
            settle(page)
            shot(page, "owndata_1_uploaded")

            page.locator(".st-key-start button").click()
            page.get_by_text("Test-set comparison").wait_for(timeout=300_000)
            settle(page)
            assert page.locator("[data-testid=stException]").count() == 0
            shot(page, "owndata_2_trained")

            page.get_by_role("link", name="Runs", exact=True).click()
            page.get_by_role("heading", name="Ship a student").wait_for(timeout=30_000)
            settle(page)
            page.get_by_role("button", name="Export and verify").click()
            page.get_by_text("Target ≥ 99.9%: met.").wait_for(timeout=120_000)
            settle(page)
            assert page.locator("[data-testid=stException]").count() == 0
            page.get_by_role("heading", name="Ship a student").scroll_into_view_if_needed()
            shot(page, "owndata_3_exported")
            with page.expect_download(timeout=30_000) as dl:
                page.get_by_role("button", name=re.compile(r"ONNX: run\d+_distilled_float32\.onnx")).click()
            onnx_path = tmp_path / dl.value.suggested_filename
            dl.value.save_as(onnx_path)
        except Exception:
            shot(page, "owndata_failure")
            raise
        finally:
            browser.close()
    assert re.fullmatch(r"run\d+_distilled_float32\.onnx", onnx_path.name)
    # the downloaded file runs: 3 logits for a 3x32x32 image, as the upload's classes and size say
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": np.zeros((2, 3, 32, 32), np.float32)})[0]
    assert out.shape == (2, 3)
    assert (runs / "userdata").is_dir()  # the zip was unpacked under the run history
