"""Training: the schedule, checkpoints, resume after SIGKILL (bitwise), DDP memories, AMP, NaN."""

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from seqnet_train.config import load_cfg
from seqnet_train.data.synth import generate
from seqnet_train.engine import checkpoint as ckpt_io
from seqnet_train.engine.schedule import build_scheduler, input_scale, lr_factor
from seqnet_train.engine.train import train
from seqnet_train.errors import SeqNetError

TINY = """
DEVICE: cpu
TF_BOARD: False
SEED: 3
INPUT:
  MIN_SIZE: 120
  MAX_SIZE: 160
  PROGRESSIVE_RESIZE: [1, 96, 128]  # resumes cross the change of scale
  BATCH_SIZE_TRAIN: 2
  BATCH_SIZE_TEST: 2
  NUM_WORKERS_TRAIN: 0
  NUM_WORKERS_TEST: 0
SOLVER:
  MAX_EPOCHS: 2
  LR_DECAY_MILESTONES: [1]
CKPT_ITER_PERIOD: 2
EVAL_PERIOD: 1
EVAL_GALLERY_SIZES: [50]
MODEL:
  BACKBONE: resnet18
  RPN: {PRE_NMS_TOPN_TRAIN: 200, POST_NMS_TOPN_TRAIN: 50, PRE_NMS_TOPN_TEST: 100,
        POST_NMS_TOPN_TEST: 30}
  ROI_HEAD: {BATCH_SIZE_TRAIN: 16, POOL_SIZE: 7}
  LOSS: {LUT_SIZE: 4, CQ_SIZE: 8}
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(config path, data root): 8 training images, 4 identities, 120x160 pixels."""
    root = tmp_path_factory.mktemp("engine")
    data = generate("cuhk-sysu", root / "data", seed=0, train_images=8, test_images=6,
                    train_ids=4, test_ids=2, people=3, size=(120, 160), cameras=2)  # fmt: skip
    cfg = root / "tiny.yaml"
    cfg.write_text(TINY.replace("INPUT:\n", f"INPUT:\n  DATA_ROOT: {data}\n"))
    return cfg, data


def _train(cfg, out, *extra, kill_at=None):
    env = {**os.environ, "SEQNET_KILL_AT": kill_at or ""}
    argv = [
        sys.executable,
        "-m",
        "seqnet_train",
        "train",
        "--cfg",
        str(cfg),
        *extra,
        "OUTPUT_DIR",
        str(out),
    ]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def uninterrupted(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    run = _train(tiny[0], out)
    assert run.returncode == 0, run.stderr[-2000:]
    return out


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


def test_schedule():
    f = lambda it: lr_factor(it, 10, 0.001, [2, 3], 0.5)  # noqa: E731
    assert f(0) == pytest.approx(0.001)
    assert f(9) == pytest.approx(1.0)  # warm-up over the whole first epoch
    assert f(5) == pytest.approx(0.001 + (1 - 0.001) * 5 / 9)
    assert f(10) == f(19) == 1.0
    assert f(20) == 0.5 and f(30) == 0.25 and f(45) == 0.25  # GAMMA at each milestone


def test_cosine_schedule():
    f = lambda it: lr_factor(it, 10, 0.1, [2], 0.5, cosine_iters=40)  # noqa: E731
    assert f(0) == pytest.approx(0.1)  # the same warm-up, on top of the cosine
    assert f(9) == pytest.approx(0.5 * (1 + math.cos(math.pi * 9 / 40)))
    assert f(20) == pytest.approx(0.5)  # halfway; milestones are ignored
    assert f(30) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.75)))
    assert f(40) == pytest.approx(0.0, abs=1e-12) and f(45) == pytest.approx(0.0, abs=1e-12)
    cfg = load_cfg(None, ["SOLVER.LR_SCHEDULE", "linear"])
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    with pytest.raises(SeqNetError, match="LR_SCHEDULE"):
        build_scheduler(cfg, optimizer, 10)


def test_progressive_resize_schedule():
    cfg = load_cfg(None, ["INPUT.MIN_SIZE", "360", "INPUT.MAX_SIZE", "480"])
    assert input_scale(cfg, 0) == input_scale(cfg, 7) == (360, 480)  # off by default
    cfg = load_cfg(None, ["INPUT.MIN_SIZE", "360", "INPUT.MAX_SIZE", "480",
                          "INPUT.PROGRESSIVE_RESIZE", "[2, 240, 320]"])  # fmt: skip
    assert [input_scale(cfg, e) for e in range(4)] == [(240, 320)] * 2 + [(360, 480)] * 2
    for bad in ("[2, 240]", "[2, 240, 0]", "[1.5, 240, 320]"):
        cfg = load_cfg(None, ["INPUT.PROGRESSIVE_RESIZE", bad])
        with pytest.raises(SeqNetError, match="PROGRESSIVE_RESIZE"):
            input_scale(cfg, 0)


def _spy_forward(monkeypatch):
    """Per training forward: (min size, max size, autocast dtype or None, backbone dtype)."""
    from seqnet_train.modeling.seqnet import SeqNet

    calls = []
    forward = SeqNet.forward

    def spy(self, images, targets):
        autocast = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
        dtypes = []
        hook = self.backbone.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
        try:
            out = forward(self, images, targets)
        finally:
            hook.remove()
        calls.append((self.transform.min_size, self.transform.max_size, autocast, *dtypes))
        return out

    monkeypatch.setattr(SeqNet, "forward", spy)
    return calls


def test_training_images_follow_the_progressive_scale(tiny, tmp_path, monkeypatch):
    """The first epoch trains at 96x128, the second at the configured 120x160; in fp32."""
    calls = _spy_forward(monkeypatch)
    cfg = load_cfg(tiny[0], ["OUTPUT_DIR", str(tmp_path), "EVAL_PERIOD", "100",
                             "SOLVER.MAX_EPOCHS", "2"])  # fmt: skip
    train(cfg)
    assert len(calls) == 8, calls  # 8 images, batches of 2, 2 epochs
    fp32 = (None, torch.float32)
    assert calls == [((96,), 128, *fp32)] * 4 + [((120,), 160, *fp32)] * 4


def test_checkpoint_contents(uninterrupted):
    names = sorted(p.name for p in uninterrupted.glob("epoch_*.pth"))
    assert names == ["epoch_0.pth", "epoch_0_iter_2.pth", "epoch_1.pth", "epoch_1_iter_2.pth"]
    state = torch.load(uninterrupted / "epoch_1.pth", weights_only=True)
    assert {"model", "optimizer", "lr_scheduler", "epoch", "iteration", "rng", "scaler"} <= set(
        state
    )
    assert state["epoch"] == 1 and state["iteration"] == 8
    assert (
        int(state["model"]["roi_heads.reid_loss.cq_ptr"]) > 0
        or state["model"]["roi_heads.reid_loss.cq"].abs().sum() > 0
    )
    assert state["lr_scheduler"]["last_epoch"] == 8
    assert (uninterrupted / "config.yaml").is_file() and (uninterrupted / "metrics.json").is_file()
    assert not list(uninterrupted.glob(".*.tmp"))


@pytest.mark.parametrize("kill_at", ["step:5", "save:epoch_0.pth", "eval:0"])
def test_resume_after_sigkill_is_bitwise_identical(tiny, uninterrupted, tmp_path, kill_at):
    killed = _train(tiny[0], tmp_path, kill_at=kill_at)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (tmp_path / "epoch_1.pth").exists()
    resumed = _train(tiny[0], tmp_path, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    want, got = _weights(uninterrupted / "epoch_1.pth"), _weights(tmp_path / "epoch_1.pth")
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key


def test_resume_skips_a_corrupt_newest_checkpoint(uninterrupted, tmp_path, caplog):
    for name in ("epoch_0.pth", "epoch_1.pth"):
        shutil.copy(uninterrupted / name, tmp_path / name)
    newest = tmp_path / "epoch_1.pth"
    newest.write_bytes(newest.read_bytes()[:5000])
    assert ckpt_io.newest_readable(tmp_path) == tmp_path / "epoch_0.pth"
    assert "falling back" in caplog.text
    newest.unlink()
    (tmp_path / "epoch_0.pth").unlink()
    with pytest.raises(SeqNetError, match="no readable checkpoint"):
        ckpt_io.newest_readable(tmp_path)


def test_bf16_training_step_on_cpu(tiny, tmp_path, monkeypatch):
    """SOLVER.AMP on the CPU: every step runs under bf16 autocast (the backbone computes in
    bf16; the progressive-scale test is the fp32 control) and the weights stay finite."""
    calls = _spy_forward(monkeypatch)
    cfg = load_cfg(tiny[0], ["OUTPUT_DIR", str(tmp_path), "SOLVER.AMP", "True",
                             "SOLVER.MAX_EPOCHS", "1", "CKPT_ITER_PERIOD", "0"])  # fmt: skip
    train(cfg)
    assert len(calls) == 4, calls
    assert all(c[2:] == (torch.bfloat16, torch.bfloat16) for c in calls), calls
    state = torch.load(tmp_path / "epoch_0.pth", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def _poison_box_reg(monkeypatch, at=None):
    """loss_box_reg becomes NaN: at every call, or only at call ``at`` (0-based)."""
    from seqnet_train.modeling.roi_heads import SeqRoIHeads

    losses = SeqRoIHeads.losses
    calls = []

    def poisoned(self, *args):
        out = losses(self, *args)
        if at is None or len(calls) == at:
            out["loss_box_reg"] = out["loss_box_reg"] * float("nan")
        calls.append(1)
        return out

    monkeypatch.setattr(SeqRoIHeads, "losses", poisoned)


def test_nonfinite_loss_stops_with_its_name(tiny, tmp_path, monkeypatch):
    _poison_box_reg(monkeypatch)
    cfg = load_cfg(tiny[0], ["OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_EPOCHS", "1"])
    with pytest.raises(SeqNetError, match="non-finite loss_box_reg at iteration 0"):
        train(cfg)
    assert not list(tmp_path.glob("epoch_*.pth"))


def test_nonfinite_loss_can_skip_the_step(tiny, tmp_path, monkeypatch, caplog):
    """The last of 4 iterations has a NaN loss: that step changes no weight and no momentum and
    calls no optimizer step, while each step before it changes both (a checkpoint after every
    step; a skipped step still counts in the schedule)."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from seqnet_train.modeling import build_model

    _poison_box_reg(monkeypatch, at=3)
    cfg = load_cfg(tiny[0], ["OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_EPOCHS", "1",
                             "SOLVER.NONFINITE", "skip", "EVAL_PERIOD", "5",
                             "CKPT_ITER_PERIOD", "1"])  # fmt: skip
    torch.manual_seed(cfg.SEED)
    model = build_model(cfg, load_imagenet=False)
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    steps = []
    handle = register_optimizer_step_post_hook(lambda opt, args, kwargs: steps.append(1))
    try:
        train(cfg)
    finally:
        handle.remove()
    assert len(steps) == 3  # 4 iterations, one skipped
    assert caplog.text.count("step skipped") == 1
    assert "non-finite loss_box_reg at iteration 3 (epoch 0): step skipped" in caplog.text
    names = ["epoch_0_iter_1.pth", "epoch_0_iter_2.pth", "epoch_0_iter_3.pth", "epoch_0.pth"]
    states = [torch.load(tmp_path / name, weights_only=True) for name in names]
    assert [s["lr_scheduler"]["last_epoch"] for s in states] == [1, 2, 3, 4]
    models = [model.state_dict()] + [s["model"] for s in states]
    momenta = [None] + [
        [s["optimizer"]["state"][i]["momentum_buffer"] for i in range(len(trained))] for s in states
    ]

    def changed(a, b):
        return sum(not torch.equal(models[a][n], models[b][n]) for n in trained)

    for i in (1, 2, 3):  # the normal steps: most weights move, and every momentum after the first
        assert changed(i - 1, i) > len(trained) // 2, i
        assert i == 1 or not any(map(torch.equal, momenta[i - 1], momenta[i])), i
    assert changed(3, 4) == 0  # the skipped step
    assert all(map(torch.equal, momenta[3], momenta[4]))


def _ddp_worker(rank, world, store, out):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from tests.tiny import tiny_batch, tiny_model

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = tiny_model().train()
    net = DistributedDataParallel(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.003, momentum=0.9)
    images, targets = tiny_batch(seed=rank)  # each rank its own images
    totals, equal = [], []
    for _ in range(6):
        torch.manual_seed(100 + rank)
        loss = sum(net(images, targets).values())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        totals.append(loss.item())
        oim = model.roi_heads.reid_loss
        memory = torch.cat([oim.lut.flatten(), oim.cq.flatten(), oim.cq_ptr.reshape(1).float()])
        gathered = [torch.empty_like(memory) for _ in range(world)]
        dist.all_gather(gathered, memory)
        equal.append(all(torch.equal(gathered[0], g) for g in gathered))
    torch.save({"totals": totals, "equal": equal}, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.distributed
def test_two_process_gloo_training_shares_the_oim_memory(tmp_path):
    mp.spawn(_ddp_worker, args=(2, tmp_path / "store", tmp_path), nprocs=2, join=True)
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert all(result["equal"]), result["equal"]  # same memory on every rank, every step
        assert result["totals"][-1] < result["totals"][0], result["totals"]
