"""Your own data: image folders (in memory and streamed), zips (hostile ones refused), CSV tables."""
from __future__ import annotations

import io
import os
import stat
import time
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from kdcore import ConfigError, DataConfig, from_dict, run_experiment
from tests.helpers import CLASSES, make_folder, shape_image
from kdcore.data import load_data
from kdcore.data.own import (data_root_choices, extract_zip, resolve_in_data_root,
                             scan_image_folder)

def zip_bytes(entries: list[tuple[str, bytes]], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in entries:
            z.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, target)
    return buf.getvalue()


def folder_zip(root) -> bytes:
    entries = []
    for dirpath, _, files in os.walk(root):
        for f in sorted(files):
            p = os.path.join(dirpath, f)
            entries.append(("shapes/" + os.path.relpath(p, root), open(p, "rb").read()))
    return zip_bytes(entries)


# --- image folders ------------------------------------------------------------------------------

def test_image_folder_in_memory(tmp_path):
    path = make_folder(tmp_path / "shapes", n_per_class=20)
    cfg = DataConfig(name="image_folder", path=path, image_size=16)
    b = load_data(cfg)
    assert b.classes == list(CLASSES) and b.in_shape == (3, 16, 16)
    assert isinstance(b.x_train, torch.Tensor) and b.x_train.shape[1:] == (3, 16, 16)
    assert len(b.y_test) == 12 and len(b.y_train) + len(b.y_val) == 48  # 20 % test of 60
    # normalised with the training split's own statistics: mean 0, std 1 per channel there
    assert b.x_train.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (b.x_train.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-2
    assert "held in memory" in b.source
    grey = make_folder(tmp_path / "grey", n_per_class=10, colour=False)
    assert load_data(DataConfig(name="image_folder", path=grey, image_size=12)).in_shape == (1, 12, 12)
    assert load_data(DataConfig(name="image_folder", path=grey, image_size=12, channels=3)).in_shape == (3, 12, 12)


def test_train_test_layout_uses_the_official_test_set(tmp_path):
    make_folder(tmp_path / "d" / "train", n_per_class=10)
    make_folder(tmp_path / "d" / "test", n_per_class=4, seed=1)
    b = load_data(DataConfig(name="image_folder", path=str(tmp_path / "d"), image_size=8))
    assert len(b.y_test) == 12 and len(b.y_train) + len(b.y_val) == 30
    assert sorted(b.y_test.tolist()) == [0] * 4 + [1] * 4 + [2] * 4


@pytest.mark.slow
def test_streamed_run_equals_in_memory_run(tmp_path):
    """Past the memory budget the images stream from disk; the run must not change at all."""
    path = make_folder(tmp_path / "shapes", n_per_class=24)
    base = {"data": {"name": "image_folder", "path": path, "image_size": 16},
            "teacher": {"name": "cnn", "params": {"width": 4, "hidden": 16}},
            "student": {"name": "mlp", "params": {"hidden": [16]}},
            "optim": {"epochs": 3, "batch_size": 16}, "teacher_optim": {"epochs": 2, "batch_size": 128}}
    mem = run_experiment(from_dict(base))
    streamed_cfg = from_dict({**base, "data": {**base["data"], "memory_mb": 0}})
    b = load_data(streamed_cfg.data)
    assert "streamed" in b.source and not isinstance(b.x_train, torch.Tensor)
    streamed = run_experiment(streamed_cfg)
    assert mem.status == streamed.status == "completed", (mem.message, streamed.message)
    for phase in ("teacher", "baseline", "distilled"):
        assert streamed.metrics[phase]["accuracy"] == mem.metrics[phase]["accuracy"]
        assert streamed.metrics[phase]["nll"] == pytest.approx(mem.metrics[phase]["nll"], rel=1e-5)
    assert mem.metrics["baseline"]["accuracy"] > 0.6  # the shapes are learnable: chance is 1/3


def test_streamed_images_index_like_a_tensor(tmp_path):
    from kdcore.data.own import StreamedImages

    path = make_folder(tmp_path / "shapes", n_per_class=8)
    mem = load_data(DataConfig(name="image_folder", path=path, image_size=12))
    lazy = load_data(DataConfig(name="image_folder", path=path, image_size=12, memory_mb=0)).x_train
    assert isinstance(lazy, StreamedImages) and lazy.shape == mem.x_train.shape
    # a batch the size a trainer asks for is decoded into the same tensor the in-memory set holds
    idx = torch.tensor([3, 0, 7, 7])
    assert torch.allclose(lazy[idx], mem.x_train[idx], atol=1e-6)
    assert torch.allclose(lazy[2:5], mem.x_train[2:5], atol=1e-6)
    assert torch.allclose(lazy[torch.tensor(1)], mem.x_train[1], atol=1e-6)
    # past its decode limit a selection stays streamed: masks, subsets and cat keep it on disk
    small = StreamedImages(lazy.files, size=12, channels=3, mean=(0,) * 3, std=(1,) * 3,
                           budget_bytes=5 * lazy.size_of_one())
    mask = torch.zeros(len(small), dtype=torch.bool)
    mask[:10] = True
    view = small[mask]
    assert isinstance(view, StreamedImages) and len(view) == 10
    both = torch.cat([view, small[torch.arange(10, 16)]])
    assert isinstance(both, StreamedImages) and both.files == small.files[:16]
    assert small[torch.arange(5)].shape == (5, 3, 12, 12)


def test_read_ahead_decodes_the_coming_batches_and_gives_them_back_bit_for_bit(tmp_path, monkeypatch):
    """A streamed training set decodes the epoch's next batches while a step runs: each comes back
    as the in-memory set holds it, in order; asking for anything else drops the rest; a file spoilt
    after loading fails the step that asks for its batch, named in one line."""
    from kdcore.data import own

    monkeypatch.setenv("KD_DATA_WORKERS", "0")
    path = make_folder(tmp_path / "shapes", n_per_class=12)
    mem = load_data(DataConfig(name="image_folder", path=path, image_size=12)).x_train
    lazy = load_data(DataConfig(name="image_folder", path=path, image_size=12, memory_mb=0)).x_train
    batches = list(torch.randperm(len(lazy), generator=torch.Generator().manual_seed(1)).split(5))
    lazy.read_ahead(batches)
    ahead = lazy._ahead
    deadline = time.monotonic() + 20
    while ahead.ready.qsize() < own.READ_AHEAD and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ahead.ready.qsize() == own.READ_AHEAD  # decoded before any step asked for them
    for b in batches[:3]:
        assert torch.equal(lazy[b], mem[b])
    assert ahead.taken == 3
    # another request (a validation slice, the teacher's logits) ends the read-ahead and is served
    assert torch.equal(lazy[torch.tensor([0, 1])], mem[torch.tensor([0, 1])])
    assert lazy._ahead is None and ahead.cancelled.is_set()
    ahead.thread.join(5)
    assert not ahead.thread.is_alive()
    assert torch.equal(lazy[batches[3]], mem[batches[3]])  # decoded when asked, as before
    # a decode error surfaces at the step whose batch holds the file
    bad = lazy.files[int(batches[1][0])]
    open(bad, "wb").write(b"overwritten after the header check")
    lazy.read_ahead(batches)
    assert torch.equal(lazy[batches[0]], mem[batches[0]])
    with pytest.raises(ConfigError, match="cannot be read") as e:
        lazy[batches[1]]
    assert os.path.basename(bad) in str(e.value) and "\n" not in str(e.value)
    lazy.read_ahead(None)
    assert lazy._ahead is None


@pytest.fixture(autouse=True)
def decoders():
    """Every test's decode workers are stopped when it ends, whatever happened in it."""
    from kdcore.data.own import close_decoders

    yield
    close_decoders()


def _children() -> list:
    import multiprocessing

    return multiprocessing.active_children()


@pytest.mark.slow
def test_streamed_batches_come_from_dataloader_workers_in_order(tmp_path, monkeypatch, decoders):
    from kdcore.data import own as userdata
    monkeypatch.setenv("KD_DATA_WORKERS", "2")
    path = make_folder(tmp_path / "shapes", n_per_class=30)
    mem = load_data(DataConfig(name="image_folder", path=path, image_size=12))
    userdata.close_decoders()
    lazy = load_data(DataConfig(name="image_folder", path=path, image_size=12, memory_mb=0)).x_train
    # a shuffled batch that spans several chunks comes back in the trainer's order, bit for bit
    idx = torch.randperm(len(lazy), generator=torch.Generator().manual_seed(3))[:50]
    assert torch.equal(lazy[idx], mem.x_train[idx])
    assert len(_children()) == 2  # the DataLoader's two worker processes did the decoding
    before = {p.pid for p in _children()}
    assert torch.equal(lazy[idx[:7]], mem.x_train[idx[:7]])
    assert {p.pid for p in _children()} == before  # persistent: not forked again per batch
    userdata.close_decoders()
    assert _children() == []
    # idle workers go away by themselves
    monkeypatch.setattr(userdata, "DECODE_IDLE_S", 0.2)
    assert torch.equal(lazy[idx[:5]], mem.x_train[idx[:5]])
    assert len(_children()) == 2
    deadline = time.monotonic() + 20
    while _children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _children() == []
    # without workers (0) the same batch is decoded in the calling thread
    monkeypatch.setenv("KD_DATA_WORKERS", "0")
    assert torch.equal(lazy[idx], mem.x_train[idx]) and _children() == []
    monkeypatch.setenv("KD_DATA_WORKERS", "lots")
    with pytest.raises(ConfigError, match=r"KD_DATA_WORKERS = 'lots'.*integer in \[0, 8\]"):
        lazy[idx]


def test_a_file_spoilt_after_loading_is_named_mid_run(tmp_path, monkeypatch, decoders):
    monkeypatch.setenv("KD_DATA_WORKERS", "2")
    path = make_folder(tmp_path / "shapes", n_per_class=10)
    lazy = load_data(DataConfig(name="image_folder", path=path, image_size=12, memory_mb=0)).x_train
    bad = lazy.files[4]
    open(bad, "wb").write(b"overwritten after the header check")
    with pytest.raises(ConfigError) as e:
        lazy[torch.arange(10)]
    assert os.path.basename(bad) in str(e.value) and "cannot be read" in str(e.value)
    assert "\n" not in str(e.value) and "Traceback" not in str(e.value)  # one line, not a worker's traceback
    assert _children() == []  # the request's workers were stopped with it
    assert lazy[torch.arange(4)].shape == (4, 3, 12, 12)  # and the next batch starts new ones


@pytest.mark.slow
def test_image_folder_run_exports_to_onnx(tmp_path, store):
    from kdcore.ship.export import export_run

    path = make_folder(tmp_path / "shapes", n_per_class=16)
    cfg = from_dict({"data": {"name": "image_folder", "path": path, "image_size": 16},
                     "teacher": {"name": "mlp", "params": {"hidden": [32]}},
                     "student": {"name": "cnn", "params": {"width": 4, "hidden": 16}},
                     "optim": {"epochs": 1}, "teacher_optim": {"epochs": 1}})
    res = run_experiment(cfg, store=store)
    assert res.status == "completed", res.message
    out = export_run(store, res.run_id, "distilled", "float32")
    assert out.verified and out.verification["n"] == 9
    assert out.verification["max_abs_logit_diff"] < 1e-4


def test_bad_image_folders_are_named(tmp_path):
    path = make_folder(tmp_path / "d", n_per_class=10)
    (tmp_path / "d" / "cross" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ConfigError, match=r"broken\.png.*cannot be read"):
        load_data(DataConfig(name="image_folder", path=path, image_size=8))
    with pytest.raises(ConfigError, match=r"broken\.png.*cannot be read"):
        load_data(DataConfig(name="image_folder", path=path, image_size=8, memory_mb=0))
    one = make_folder(tmp_path / "one", n_per_class=5, classes=("only",))
    with pytest.raises(ConfigError, match="1 class folder.*at least 2"):
        DataConfig(name="image_folder", path=one)
    make_folder(tmp_path / "gap", n_per_class=5)
    os.makedirs(tmp_path / "gap" / "empty")
    with pytest.raises(ConfigError, match="'empty'.*hold no images"):
        DataConfig(name="image_folder", path=str(tmp_path / "gap"))
    with pytest.raises(ConfigError, match="is not a folder"):
        DataConfig(name="image_folder", path=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="data.image_size"):
        DataConfig(name="image_folder", path=path, image_size=4)
    # without a path the config is still valid (a form not filled in yet) but loading says why not
    with pytest.raises(ConfigError, match="data.path is empty"):
        load_data(DataConfig(name="image_folder"))


# --- zips -------------------------------------------------------------------------------------------

def test_zip_of_a_folder_unpacks_and_loads(tmp_path):
    src = make_folder(tmp_path / "src", n_per_class=10)
    raw = folder_zip(src)
    dest = tmp_path / "uploads"
    folder = extract_zip(raw, dest)
    assert folder.parent == dest and scan_image_folder(str(folder)).classes == CLASSES
    assert extract_zip(raw, dest) == folder  # the same zip again: the same folder, not a copy
    b = load_data(DataConfig(name="image_folder", path=str(folder), image_size=8))
    assert len(b.y_train) + len(b.y_val) + len(b.y_test) == 30


@pytest.mark.parametrize("entries, links, limits, message", [
    ([("../evil.png", b"x")], None, {}, r"'\.\./evil\.png'.*'\.\.'"),
    ([("a/../../evil.png", b"x")], None, {}, r"'\.\.'"),
    ([("/etc/evil.png", b"x")], None, {}, "absolute paths"),
    ([("C:/evil.png", b"x")], None, {}, "absolute paths"),
    ([("a\\..\\evil.png", b"x")], None, {}, "backslashes"),
    ([("a/ok.png", b"x")], {"a/link.png": "/etc/passwd"}, {}, "links are not allowed"),
    ([(f"a/{i}.png", b"x") for i in range(11)], None, {"max_files": 10}, "11 files; at most 10"),
    ([("a/big.png", b"0" * 5000)], None, {"max_bytes": 4000}, "unpacks to"),
])
def test_hostile_zips_are_refused_and_leave_nothing(tmp_path, entries, links, limits, message):
    dest = tmp_path / "uploads"
    earlier = extract_zip(zip_bytes([("x/a/1.png", b"1"), ("x/b/1.png", b"2")]), dest)
    before = sorted(os.listdir(dest))
    with pytest.raises(ConfigError, match=message):
        extract_zip(zip_bytes(entries, links), dest, **limits)
    assert sorted(os.listdir(dest)) == before  # nothing new, not even a temporary folder
    assert (earlier / "x" / "a" / "1.png").read_bytes() == b"1"  # an earlier upload is untouched
    assert not (tmp_path / "evil.png").exists()


def test_zip_that_lies_about_its_size_is_stopped_while_copying(tmp_path):
    raw = bytearray(zip_bytes([("a/big.png", b"0" * 100_000)]))
    # shrink the declared sizes in the central directory so the header check passes
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 24:cd + 28] = (10).to_bytes(4, "little")
    with pytest.raises(ConfigError, match="cannot be unpacked|more than"):
        extract_zip(bytes(raw), tmp_path / "up", max_bytes=50_000)
    assert os.listdir(tmp_path / "up") == []


def test_not_a_zip(tmp_path):
    with pytest.raises(ConfigError, match="not a zip file"):
        extract_zip(b"hello", tmp_path / "up")


# --- CSV ----------------------------------------------------------------------------------------

def _write_csv(path, n=200, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x1 = y * 3.0 + rng.normal(0, 0.5, n) + 100  # far from 0: standardising matters
    x2 = rng.normal(0, 1, n) * 1000
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    lines = ["id,width,height,note,species"] + [f"{i},{a:.4f},{b:.4f},n{i},{s}"
                                                 for i, (a, b, s) in enumerate(zip(x1, x2, names))]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.slow
def test_csv_table(tmp_path):
    path = _write_csv(tmp_path / "t.csv")
    cfg = DataConfig(name="csv", path=path, label_column="species", feature_columns=["width", "height"])
    b = load_data(cfg)
    assert b.classes == ["setosa", "versicolor", "virginica"] and b.in_shape == (2,)
    assert len(b.y_test) == 40
    # standardised with the training split only: exactly 0/1 there, not on test
    assert b.x_train.mean(0).abs().max() < 1e-5 and (b.x_train.std(0) - 1).abs().max() < 1e-5
    assert b.x_test.mean(0).abs().max() > 1e-4
    assert b.mean[0] == pytest.approx(float(np.mean(np.loadtxt(path, delimiter=",", skiprows=1,
                                                                  usecols=1)[_train_rows(b, path)])), rel=1e-5)
    # every numeric column but the label when none are named: id, width, height (note is text)
    assert load_data(DataConfig(name="csv", path=path, label_column="species")).in_shape == (3,)
    res = run_experiment(from_dict({"data": {"name": "csv", "path": path, "label_column": "species",
                                             "feature_columns": ["width", "height"]},
                                    "optim": {"epochs": 5}, "teacher_optim": {"epochs": 5}}))
    assert res.status == "completed" and res.metrics["teacher"]["accuracy"] > 0.9


def _train_rows(b, path):
    from kdcore.data.own import _test_split
    from kdcore.data import _split_pool

    n = sum(1 for _ in open(path)) - 1
    pool, _ = _test_split(n, 0)
    tr, _ = _split_pool(len(pool), DataConfig())
    return pool[tr].numpy()


def test_bad_csvs_are_named(tmp_path):
    path = _write_csv(tmp_path / "t.csv")
    with pytest.raises(ConfigError, match="no label column 'label'.*species"):
        DataConfig(name="csv", path=path)
    with pytest.raises(ConfigError, match="'note'.*not numeric"):
        DataConfig(name="csv", path=path, label_column="species", feature_columns=["note"])
    gap = tmp_path / "gap.csv"
    gap.write_text("a,b,label\n1,2,x\n3,4,\n5,6,y\n")
    with pytest.raises(ConfigError, match=r"gap\.csv.*no label.*line\(s\) 3"):
        DataConfig(name="csv", path=str(gap))
    one = tmp_path / "one.csv"
    one.write_text("a,label\n1,x\n2,x\n")
    with pytest.raises(ConfigError, match="one class only"):
        DataConfig(name="csv", path=str(one))
    nan = tmp_path / "nan.csv"
    nan.write_text("a,b,label\n1,2,x\n3,,y\n")
    with pytest.raises(ConfigError, match="missing feature value.*column 'b' on line 3"):
        DataConfig(name="csv", path=str(nan))
    with pytest.raises(ConfigError, match="is not a file"):
        DataConfig(name="csv", path=str(tmp_path / "none.csv"))


# --- the dashboard's data root and the CLI ---------------------------------------------------------

def test_data_root_offers_only_its_own_entries(tmp_path):
    root = tmp_path / "root"
    make_folder(root / "shapes", n_per_class=3)
    _write_csv(root / "iris.csv", n=20)
    (root / "notes.txt").write_text("x")
    make_folder(tmp_path / "outside", n_per_class=3)
    os.symlink(tmp_path / "outside", root / "link")
    assert data_root_choices(str(root)) == {"iris.csv": "csv", "shapes": "image_folder"}
    assert resolve_in_data_root("shapes", str(root)) == str((root / "shapes").resolve())
    for name in ("../outside", "link", "/etc", "notes.txt", str(tmp_path / "outside")):
        with pytest.raises(ConfigError, match="not a dataset in the data root"):
            resolve_in_data_root(name, str(root))
    with pytest.raises(ConfigError, match="KD_DATA_ROOT"):
        resolve_in_data_root("shapes", "")


@pytest.mark.slow
def test_cli_runs_an_image_folder(tmp_path, capsys):
    from kdcore.cli import main

    path = make_folder(tmp_path / "shapes", n_per_class=10)
    rc = main(["--runs-dir", str(tmp_path / "runs"), "run", "--set", "data.name=image_folder",
               "--set", f"data.path={path}", "--set", "data.image_size=12",
               "--set", "teacher_optim.epochs=1", "--set", "optim.epochs=1"])
    out = capsys.readouterr()
    assert rc == 0, out.err + out.out
    assert "[distilled] test accuracy" in out.out
    rc = main(["run", "--no-save", "--set", "data.name=image_folder", "--set", f"data.path={tmp_path}/none"])
    err = capsys.readouterr().err
    assert rc == 2 and "is not a folder" in err and "Traceback" not in err


def test_train_page_offers_the_data_root_never_a_typed_path(tmp_path, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    root = tmp_path / "root"
    make_folder(root / "shapes", n_per_class=10)
    _write_csv(root / "iris.csv")
    monkeypatch.setenv("KD_DATA_ROOT", str(root))
    monkeypatch.setenv("KD_RUNS_DIR", str(tmp_path / "runs"))
    st.cache_resource.clear()
    st.cache_data.clear()
    n_threads = torch.get_num_threads()
    app = str(__import__("pathlib").Path(__file__).parents[1] / "app.py")
    try:
        at = AppTest.from_file(app, default_timeout=60).run()
        at.selectbox(key="dataset").set_value("image_folder").run()
        assert not at.exception and not at.error
        assert any("30 images in 3 classes" in c.value for c in at.caption)
        data = at.session_state["kd_pending_config"]["data"]
        assert data["path"] == str((root / "shapes").resolve()) and data["image_size"] == 32
        at.selectbox(key="dataset").set_value("csv").run()
        at.selectbox(key="label_column").set_value("species").run()
        assert at.session_state["kd_pending_config"]["data"]["label_column"] == "species"
        assert any("200 rows, 3 features, 3 classes" in c.value for c in at.caption)
        # a link that names a path outside the root, or an upload this server lacks, reaches no file
        at = AppTest.from_file(app, default_timeout=60)
        at.query_params.update({"data_from": "upload", "data_upload": "../../etc"})
        at.run()
        at.selectbox(key="dataset").set_value("image_folder").run()
        assert "kd_pending_config" not in at.session_state or \
            at.session_state["kd_pending_config"]["data"]["path"] == ""
        assert any("not allowed" in e.value for e in at.error)
    finally:
        st.cache_resource.clear()
        torch.set_num_threads(n_threads)


# --- budgets, counted from the listing ---------------------------------------------------------------

def _own_cfg(data: dict, **top):
    return from_dict({"data": data, "teacher": {"name": "mlp", "params": {"hidden": [8]}},
                      "student": {"name": "mlp", "params": {"hidden": [4]}},
                      "optim": {"epochs": 3}, "teacher_optim": {"epochs": 1}, **top})


def test_own_data_budgets_count_the_listing_before_decoding(tmp_path, monkeypatch, capsys):
    from kdcore.budget import check_budget
    from kdcore.registry import DATASETS

    path = make_folder(tmp_path / "shapes", n_per_class=20)  # 60 images: 12 test, 5 val, 43 train
    make_folder(tmp_path / "split" / "train", n_per_class=10)
    make_folder(tmp_path / "split" / "test", n_per_class=4, seed=1)
    spec = DATASETS.get("image_folder")
    # the count is what loading will hold, in every layout and with a subset
    for data in ({"path": path}, {"path": path, "train_subset": 10}, {"path": str(tmp_path / "split")}):
        cfg = DataConfig(name="image_folder", image_size=8, **data)
        size, b = spec.data_size(cfg), load_data(cfg)
        assert size.train == len(b.y_train)
        assert size.samples == len(b.y_train) + len(b.y_val) + len(b.y_test)
    # images after each class's first are not images at all: a refusal here proves none was decoded
    for c in CLASSES:
        for i in range(1, 20):
            (tmp_path / "shapes" / c / f"{i:03d}.png").write_bytes(b"not decoded yet")
    monkeypatch.setenv("KD_MAX_DATA_SAMPLES", "50")
    with pytest.raises(ConfigError, match=r"images in data.path .*shapes' = 60 is over this server's budget "
                                          r"of 50 images or rows.*KD_MAX_DATA_SAMPLES"):
        check_budget(_own_cfg({"name": "image_folder", "path": path}))
    check_budget(_own_cfg({"name": "image_folder", "path": path, "train_subset": 10}))  # 27 images
    monkeypatch.delenv("KD_MAX_DATA_SAMPLES")
    # 60 RGB images at 64 x 64 are 2.8 MiB of float32: over a 2 MB budget while held in memory...
    monkeypatch.setenv("KD_MAX_DATA_MB", "2")
    with pytest.raises(ConfigError, match=r"held in memory at data.image_size 64 \(MB\) = 3 .*"
                                          r"data.memory_mb below that.*KD_MAX_DATA_MB"):
        check_budget(_own_cfg({"name": "image_folder", "path": path, "image_size": 64}))
    # ...and fine when data.memory_mb makes them stream from disk instead
    check_budget(_own_cfg({"name": "image_folder", "path": path, "image_size": 64, "memory_mb": 2}))
    monkeypatch.delenv("KD_MAX_DATA_MB")
    monkeypatch.setenv("KD_MAX_SAMPLE_EPOCHS", "100")
    with pytest.raises(ConfigError, match=r"optim.epochs x 43 training samples = 129 .*KD_MAX_SAMPLE_EPOCHS"):
        check_budget(_own_cfg({"name": "image_folder", "path": path}))
    # the CLI refuses it the same way, in one line, before it reads an image
    from kdcore.cli import main

    rc = main(["run", "--no-save", "--set", "data.name=image_folder", "--set", f"data.path={path}",
               "--set", "optim.epochs=3"])
    err = capsys.readouterr().err
    assert rc == 2 and "KD_MAX_SAMPLE_EPOCHS" in err and "Traceback" not in err and "cannot be read" not in err


def test_csv_budgets_are_checked_before_pandas_parses(tmp_path, monkeypatch):
    from kdcore.budget import check_budget

    path = _write_csv(tmp_path / "t.csv")  # 200 rows
    with open(path, "a") as f:
        f.write("1,2,3\n")  # a row pandas cannot parse: refusing first proves it never parsed the file
    monkeypatch.setenv("KD_MAX_DATA_SAMPLES", "150")
    with pytest.raises(ConfigError, match=r"rows in CSV file 't.csv' = 201 .*150 images or rows.*"
                                          "KD_MAX_DATA_SAMPLES"):
        DataConfig(name="csv", path=path, label_column="species")
    monkeypatch.delenv("KD_MAX_DATA_SAMPLES")
    wide = tmp_path / "wide.csv"
    wide.write_text("a,b,c,d,label\n" + "1,2,3,4,x\n5,6,7,8,y\n" * 15_000)  # 30,000 x 5 cells: 1.2 MB parsed
    monkeypatch.setenv("KD_MAX_DATA_MB", "1")
    with pytest.raises(ConfigError, match=r"CSV file 'wide.csv' parsed \(30,000 rows x 5 columns, MB\) = 2 .*"
                                          "KD_MAX_DATA_MB"):
        DataConfig(name="csv", path=str(wide))
    monkeypatch.delenv("KD_MAX_DATA_MB")
    ok = _write_csv(tmp_path / "ok.csv")
    monkeypatch.setenv("KD_MAX_SAMPLE_EPOCHS", "300")  # 200 rows: 40 test, 16 val, 144 train; 3 epochs = 432
    with pytest.raises(ConfigError, match=r"optim.epochs x 144 training samples = 432"):
        check_budget(_own_cfg({"name": "csv", "path": ok, "label_column": "species"}))


# --- links to the Train page ------------------------------------------------------------------------

@pytest.mark.slow
def test_train_links_reproduce_own_data_and_name_no_path(tmp_path, monkeypatch):
    """A link made from an own-data run sets the Train page up with the same data config; it names
    the data by its data-root entry or upload, and a hand-made link cannot reach outside those."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from kdcore.data.own import save_zip_upload
    from kdapp import lab
    from kdapp import shared as sh

    root = tmp_path / "root"
    make_folder(root / "other", n_per_class=10, seed=2)
    make_folder(root / "shapes", n_per_class=10)
    _write_csv(root / "iris.csv")
    runs = tmp_path / "runs"
    monkeypatch.setenv("KD_DATA_ROOT", str(root))
    monkeypatch.setenv("KD_RUNS_DIR", str(runs))
    upload = save_zip_upload(folder_zip(make_folder(tmp_path / "zipped", n_per_class=10, seed=3)), runs)
    st.cache_resource.clear()
    st.cache_data.clear()
    n_threads = torch.get_num_threads()
    app = str(__import__("pathlib").Path(__file__).parents[1] / "app.py")

    def page(query=None):
        at = AppTest.from_file(app, default_timeout=60)
        at.query_params.update(query or {})
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    def round_trip(at):
        """The link of the config ``at`` would launch, opened in a fresh session: the same config."""
        cfg = at.session_state["kd_pending_config"]
        query = sh.SCOPES["train"].link(lab.train_query(from_dict(cfg)))
        assert not any(str(tmp_path) in str(v) for v in query.values())  # never a server path
        assert page(query).session_state["kd_pending_config"] == cfg
        return cfg

    try:
        at = page()
        at.selectbox(key="dataset").set_value("image_folder").run()
        at.selectbox(key="data_entry").set_value("shapes").run()  # not the first entry
        at.select_slider(key="image_size").set_value(16).run()
        data = round_trip(at)["data"]
        assert data["path"] == str((root / "shapes").resolve()) and data["image_size"] == 16
        at.selectbox(key="dataset").set_value("csv").run()
        at.selectbox(key="label_column").set_value("species").run()
        at.multiselect(key="feature_columns").set_value(["height", "width"]).run()
        data = round_trip(at)["data"]
        assert data["label_column"] == "species" and sorted(data["feature_columns"]) == ["height", "width"]
        # an uploaded zip: the link names its digest, which only this server's uploads resolve
        at = page({"dataset": "Your images (folder of class subfolders)", "data_from": "upload",
                   "data_upload": upload.split(":", 1)[1]})
        assert at.session_state["kd_pending_config"]["data"]["path"] == str((runs / "userdata" / upload[7:]).resolve())
        round_trip(at)
        # a run on a folder given on the command line cannot become a link
        outside = from_dict({"data": {"name": "image_folder", "path": make_folder(tmp_path / "cli", n_per_class=10)}})
        with pytest.raises(ConfigError, match=r"data.path .*cli' is neither a dataset of the data root.*upload"):
            lab.train_query(outside)
        # a hand-made link naming a path as the entry reaches nothing outside the root
        for entry in (str(tmp_path / "cli"), "../cli", "shapes/../../cli"):
            at = page({"dataset": "Your images (folder of class subfolders)", "data_from": "data root",
                       "data_entry": entry})
            path = at.session_state["kd_pending_config"]["data"]["path"]
            assert __import__("pathlib").Path(path).parent == root.resolve(), entry
    finally:
        st.cache_resource.clear()
        torch.set_num_threads(n_threads)
