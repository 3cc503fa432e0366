"""``seqnet``'s command line: every command's options reach its handler as argparse gave them,
help never imports torch, and failures are one line."""

import subprocess
import sys
import types
from pathlib import Path

import pytest

from seqnet_train import cli
from seqnet_train.cli import main
from seqnet_train.errors import SeqNetError

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["train", "eval", "score", "demo", "search", "synth", "convert"]
TARGETS = {
    "train": "seqnet_train.engine.train:run",
    "eval": "seqnet_train.evaluation.run:run",
    "score": "seqnet_train.evaluation.run:run_score",
    "demo": "seqnet_train.apps:run_demo",
    "search": "seqnet_train.apps:run_search",
    "synth": "seqnet_train.data.synth:run",
    "convert": "seqnet_train.data.convert:run",
}


class _Calls(list):
    """(target, vars(args)) of each handler call; ``raise_``: what the handler raises then."""

    raise_ = None


@pytest.fixture
def calls(monkeypatch):
    """Stand-ins for every handler module, so that no command does real work."""
    seen = _Calls()

    def handler(target):
        def run(args):
            seen.append((target, vars(args)))
            if seen.raise_ is not None:
                raise seen.raise_

        return run

    for target in TARGETS.values():
        name, func = target.split(":")
        module = sys.modules.get(name)
        if not isinstance(module, types.SimpleNamespace):
            module = types.SimpleNamespace()
            monkeypatch.setitem(sys.modules, name, module)
        setattr(module, func, handler(target))
    return seen


def test_handler_mapping():
    assert cli.COMMANDS == TARGETS


# Each command with its required options: the namespace its handler gets (argparse's names).
# fmt: off
CASES = {
    "train": ("--cfg c.yaml", dict(cfg="c.yaml", opts=[], resume=False, ckpt=None, eval=False)),
    "eval": ("--cfg c.yaml --ckpt k.pth",
             dict(cfg="c.yaml", opts=[], ckpt="k.pth", backend="torch", model=None,
                  precision=None, graphs="standard")),
    "score": ("--cfg c.yaml --outputs o.npz --json m.json",
              dict(cfg="c.yaml", opts=[], outputs="o.npz", json="m.json")),
    "demo": ("--cfg c.yaml --ckpt k.pth",
             dict(cfg="c.yaml", opts=[], ckpt="k.pth", query=None, box=None, gallery=None,
                  out="demo_output", topk=5)),
    "search": ("--cfg c.yaml --ckpt k.pth --query q.jpg --box 1 2 3.5 4 --gallery g",
               dict(cfg="c.yaml", opts=[], ckpt="k.pth", query="q.jpg", box=[1.0, 2.0, 3.5, 4.0],
                    gallery="g", every=1, topk=20, out="search_output", index=None)),
    "synth": ("--format json --out d --train-images 7 --size 64 48",
              dict(format="json", out="d", seed=0, train_images=7, test_images=100, train_ids=40,
                   test_ids=20, people=4, cameras=6, size=[64, 48], frames=150, fps=10,
                   queries=3)),
    "convert": ("--format prw --root r --out o.json", dict(format="prw", root="r", out="o.json")),
}
# fmt: on


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_reaches_its_handler_with_argparse_names(calls, command):
    argv, expected = CASES[command]
    assert main([command, *argv.split()]) is None  # returns: quickstart.py runs several in a row
    assert calls == [(TARGETS[command], expected)]


def test_overrides_keep_negative_values_and_everything_after_the_first_key(calls):
    main(["train", "--cfg", "c.yaml", "--resume", "SOLVER.BASE_LR", "0.1",
          "MODEL.RPN.NMS_THRESH", "-1", "--ckpt", "-2.5"])  # fmt: skip
    args = calls[0][1]
    assert args["resume"] is True and args["ckpt"] is None
    assert args["opts"] == ["SOLVER.BASE_LR", "0.1", "MODEL.RPN.NMS_THRESH", "-1", "--ckpt", "-2.5"]


DEMO = ["demo", "--cfg", "c.yaml", "--ckpt", "k.pth"]


@pytest.mark.parametrize(
    "argv, gallery, rest",
    [
        (["--query", "q.jpg", "--box", "1", "2", "3", "4", "--gallery", "a.jpg", "b.jpg"],
         ["a.jpg", "b.jpg"], {}),
        (["--gallery", "a.jpg", "b.jpg", "c.jpg", "--query", "q.jpg", "--box", "1", "2", "3", "4"],
         ["a.jpg", "b.jpg", "c.jpg"], {}),
        (["--query", "q.jpg", "--gallery", "dir", "--topk", "3"], ["dir"], {"topk": 3}),
        (["--gallery=a.jpg", "--out", "o"], ["a.jpg"], {"out": "o"}),
        # argparse's nargs="+" took every word up to the next option, overrides included
        (["--gallery", "a.jpg", "K", "1"], ["a.jpg", "K", "1"], {}),
        # ...and words after the first KEY are overrides, --gallery included
        (["--out", "o", "K", "-1", "--gallery", "a.jpg", "b.jpg"], None,
         {"out": "o", "opts": ["K", "-1", "--gallery", "a.jpg", "b.jpg"]}),
    ],
)  # fmt: skip
def test_demo_gallery_takes_several_words_as_argparse_did(calls, argv, gallery, rest):
    main([*DEMO, *argv])
    args = calls[0][1]
    assert args["gallery"] == gallery
    assert {k: args[k] for k in rest} == rest


@pytest.mark.parametrize(
    "argv",
    [
        [*DEMO, "--gallery"],
        [*DEMO, "--gallery", "--out", "o"],
        ["bench", "--sizes"],  # fps.py's own usage error
        ["nonesuch"],
        ["train", "--cfg", "c.yaml", "--bogus", "K", "1"],  # an unknown option is not a KEY
        ["train"],  # --cfg is required
        [
            "search",
            "--cfg",
            "c",
            "--ckpt",
            "k",
            "--query",
            "q",
            "--box",
            "1",
            "2",
            "--gallery",
            "g",
        ],
        ["synth", "--format", "coco", "--out", "d"],
        [],
    ],
)
def test_usage_errors_exit_2_without_calling_a_handler(calls, capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "usage: seqnet" in capsys.readouterr().err.lower()  # click, or argparse (bench)
    assert calls == []


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)])
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help(capsys, command, flag):
    with pytest.raises(SystemExit) as e:
        main([*command, flag])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(" ".join(["Usage: seqnet", *command])) and "-h, --help" in out
    if not command:
        assert all(c in out for c in [*COMMANDS, "bench"])
    elif command[0] in ("synth", "convert"):
        assert "--format" in out and "--out" in out
    else:
        assert "--cfg" in out and "[KEY VALUE]..." in out


def test_bench_is_the_fps_benchmark_with_its_options(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "-h"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: seqnet bench") and "--sizes" in out and "--model" in out


def test_seqnet_error_is_one_line_status_1(calls):
    calls.raise_ = SeqNetError("config file not found: c.yaml")
    with pytest.raises(SystemExit) as e:
        main(["eval", "--cfg", "c.yaml", "--ckpt", "k.pth"])
    assert e.value.code == "seqnet eval: error: config file not found: c.yaml"


def test_ctrl_c_exits_130(calls):
    calls.raise_ = KeyboardInterrupt()
    with pytest.raises(SystemExit) as e:
        main(["convert", "--format", "prw", "--root", "r", "--out", "o.json"])
    assert e.value.code == 130


def test_a_missing_module_outside_the_training_stack_is_a_bug(calls):
    calls.raise_ = ModuleNotFoundError("No module named 'nonesuch'", name="nonesuch")
    with pytest.raises(ModuleNotFoundError):
        main(["convert", "--format", "prw", "--root", "r", "--out", "o.json"])


def _python(code, *args):
    return subprocess.run([sys.executable, *args, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)  # fmt: skip


def test_help_never_imports_torch():
    code = f"""
import sys
from seqnet_train.cli import main
for command in [[], *([c] for c in {COMMANDS!r})]:
    try:
        main([*command, "-h"])
    except SystemExit as e:
        assert e.code == 0, (command, e.code)
heavy = sorted(m for m in ("torch", "torchvision", "scipy", "sklearn", "yacs") if m in sys.modules)
print("heavy:", heavy)
"""
    run = _python(code)
    assert run.returncode == 0, run.stderr
    assert "heavy: []" in run.stdout


def test_without_torch_a_command_says_what_to_install():
    code = """
import sys
sys.modules["torch"] = None  # as if torch were not installed
from seqnet_train.cli import main
main(["train", "--cfg", "x.yaml"])
"""
    run = _python(code)
    assert run.returncode == 1
    assert run.stderr == "seqnet train: needs the training stack: pip install 'seqnet[train]'\n"


def test_module_entry_point_runs_a_real_handler(tmp_path):
    """``python -m seqnet_train``: a typo in a negative override is the config's one-line error."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("{}\n")
    run = subprocess.run(
        [sys.executable, "-m", "seqnet_train", "score", "--cfg", str(cfg), "--outputs", "o.npz",
         "MODEL.RPN.NMS_THRES", "-1"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert run.returncode == 1
    assert run.stderr.startswith("seqnet score: error: ") and run.stderr.count("\n") == 1
    assert "MODEL.RPN.NMS_THRES" in run.stderr and "Traceback" not in run.stderr
