"""The CLI runs the same configs as the dashboard and reports errors as messages."""
import json
import subprocess
import sys

import pytest

from kdcore import to_json
from kdcore.cli import main
from tests.helpers import FAST


def test_help_explains_t_and_alpha():
    out = subprocess.run([sys.executable, "-m", "kdcore", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "alpha" in out.stdout and "HARD-LABEL" in out.stdout and "T^2" in out.stdout


@pytest.mark.slow
def test_run_then_list_show_config_export(tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(to_json(FAST))
    runs = str(tmp_path / "runs")
    assert main(["--runs-dir", runs, "run", str(cfg), "--set", "loss.temperature=3"]) == 0
    out = capsys.readouterr().out
    assert "[distilled] epoch 8/8" in out and "status: completed (run 1)" in out and "distilled" in out
    assert main(["--runs-dir", runs, "runs", "list"]) == 0
    assert "completed" in capsys.readouterr().out
    assert main(["--runs-dir", runs, "runs", "config", "1"]) == 0
    replay = json.loads(capsys.readouterr().out)
    assert replay["loss"]["temperature"] == 3
    assert main(["--runs-dir", runs, "runs", "export", "--out", str(tmp_path / "e.csv")]) == 0
    assert (tmp_path / "e.csv").read_text().startswith("run_id")


def test_bad_input_is_a_message_not_a_traceback(tmp_path, capsys):
    assert main(["--runs-dir", str(tmp_path), "run", "--set", "loss.alpha=2"]) == 2
    err = capsys.readouterr().err
    assert "loss.alpha = 2" in err and "[0, 1]" in err and "Traceback" not in err
    assert main(["--runs-dir", str(tmp_path), "runs", "show", "42"]) == 2
    assert "no run with id 42" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_prints_mean_and_std(tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(to_json(FAST))
    assert main(["--runs-dir", str(tmp_path / "r"), "compare", str(cfg), "--seeds", "2",
                 "--set", "optim.epochs=2", "--set", "teacher_optim.epochs=2"]) == 0
    out = capsys.readouterr().out
    assert "±" in out and "Over 2 seeds distillation" in out and "95 % CI" in out
    assert out.count("== seed ") == 2 and "seed 1 (run " in out  # each seed's own verdict line
