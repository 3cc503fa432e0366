"""Score a ``seqnet-run`` output folder against a synthetic video's ground truth: the command
line of ``seqnet_runtime.video_score`` (its doc says what is measured).

    python benchmarks/video_search.py --run OUTDIR --truth DIR/truth.json
        [--iou 0.5] [--threshold S] [--min-visible V] [--gap SECONDS] [--json OUT]
"""

from seqnet_runtime.video_score import main

if __name__ == "__main__":
    main()
