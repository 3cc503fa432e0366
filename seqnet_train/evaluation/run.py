"""``seqnet eval`` / ``seqnet score`` and the training loop's ``evaluate``.

Inference runs once into ``OUTPUT_DIR/eval_outputs.pt`` (``eval_outputs_gt.pt`` with
``EVAL_USE_GT``; reused when ``EVAL_USE_CACHE``), then every protocol is scored from it and
``metrics.json``, ``map_vs_gallery_size.png`` (CUHK-SYSU) and ``search_top10.json`` are
written next to it.
"""

import logging
from pathlib import Path

import torch

from seqnet_runtime import load
from seqnet_train.backend import ModelSession, TorchSession
from seqnet_train.config import load_cfg
from seqnet_train.data import load_split
from seqnet_train.errors import SeqNetError
from seqnet_train.evaluation.inference import infer, merge_shards
from seqnet_train.evaluation.outputs import load_outputs, save_outputs
from seqnet_train.evaluation.report import format_table, plot_curve, top10_records, write_json
from seqnet_train.evaluation.scoring import score

log = logging.getLogger(__name__)


def outputs_path(cfg, output_dir):
    return Path(output_dir) / ("eval_outputs_gt.pt" if cfg.EVAL_USE_GT else "eval_outputs.pt")


def score_outputs(cfg, outputs, output_dir=None):
    """Score an outputs dict; log the table and, with ``output_dir``, write the reports.

    Returns the flat metrics dict (fractions).
    """
    metrics, details = score(cfg, outputs)
    log.info("evaluation (%s)\n%s", cfg.INPUT.DATASET, format_table(metrics))
    if output_dir is not None:
        out = Path(output_dir)
        write_json(metrics, out / "metrics.json")
        write_json(top10_records(details, outputs["gallery_names"]), out / "search_top10.json")
        plot_curve(metrics, out / "map_vs_gallery_size.png")
    return metrics


def evaluate(model, cfg, output_dir, epoch=None, rank=0, world_size=1):
    """Infer (this process's shard) and, on rank 0, score every protocol.

    ``model``: a runtime session (any backend), or a SeqNet in memory (evaluated in eval mode
    and then put back in the mode it had).

    With ``world_size`` > 1, torch.distributed must be initialised: the parts are gathered to
    rank 0, which returns the metrics; other ranks return {}.
    """
    path = outputs_path(cfg, output_dir)
    if cfg.EVAL_USE_CACHE and path.is_file():
        log.info("reusing the inference outputs in %s", path)
        outputs = load_outputs(path)
    else:
        dataset, root = cfg.INPUT.DATASET, cfg.INPUT.DATA_ROOT
        gallery = load_split(dataset, root, "gallery")
        queries = load_split(dataset, root, "query")
        if isinstance(model, torch.nn.Module):
            was_training = model.training
            try:
                session = ModelSession(model.eval())
                part = infer(session, cfg, gallery, queries, cfg.EVAL_USE_GT, rank, world_size)
            finally:
                model.train(was_training)
        else:
            session = model
            part = infer(session, cfg, gallery, queries, cfg.EVAL_USE_GT, rank, world_size)
        parts = [part]
        if world_size > 1:
            parts = [None] * world_size
            torch.distributed.all_gather_object(parts, part)
        if rank != 0:
            return {}
        meta = {"dataset": dataset, "use_gt": bool(cfg.EVAL_USE_GT), "backend": session.name}
        if epoch is not None:
            meta["epoch"] = int(epoch)
        outputs = merge_shards(parts, gallery, queries, meta)
        save_outputs(outputs, path)
        log.info("inference outputs saved to %s", path)
    return score_outputs(cfg, outputs, output_dir)


def evaluate_checkpoint(cfg, ckpt_path=None, backend="torch", package=None, precision=None,
                        graphs="standard"):  # fmt: skip
    """Evaluate into ``cfg.OUTPUT_DIR`` (``seqnet eval``, ``train --eval``): a checkpoint on
    PyTorch, or with another ``backend`` a model package exported from one (its ``precision``
    and ``graphs`` flavour)."""
    cached = outputs_path(cfg, cfg.OUTPUT_DIR)
    if cfg.EVAL_USE_CACHE and cached.is_file():
        return score_outputs(cfg, load_outputs(cached), cfg.OUTPUT_DIR)
    if backend == "torch":
        if ckpt_path is None:
            raise SeqNetError("the torch backend evaluates a checkpoint: give --ckpt")
        session = TorchSession(ckpt_path, cfg)
    else:
        if package is None:
            raise SeqNetError(f"the {backend} backend evaluates a model package: give --model")
        device = "cuda" if cfg.DEVICE.startswith("cuda") else "cpu"
        session = load(package, backend, device=device, precision=precision, graphs=graphs)
    return evaluate(session, cfg, cfg.OUTPUT_DIR)


def run(args):
    """``seqnet eval --cfg CFG (--ckpt CKPT | --backend B --model PACKAGE) [KEY VALUE ...]``."""
    cfg = load_cfg(args.cfg, args.opts)
    evaluate_checkpoint(cfg, args.ckpt, args.backend, args.model, args.precision, args.graphs)


def run_score(args):
    """``seqnet score --cfg CFG --outputs FILE [--json OUT] [KEY VALUE ...]``: no model."""
    cfg = load_cfg(args.cfg, args.opts)
    metrics = score_outputs(cfg, load_outputs(args.outputs))
    if args.json:
        write_json(metrics, args.json)
