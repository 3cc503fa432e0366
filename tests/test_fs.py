"""All-or-nothing writes (seqnet_runtime.fs): unique temporary names, the umask's permissions,
and two writers of one output at once."""

import multiprocessing
import os
import stat

import pytest

from seqnet_runtime import fs


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_failed_write_leaves_the_old_file(tmp_path):
    path = fs.write_text(tmp_path / "a.json", "old")
    with pytest.raises(RuntimeError), fs.atomic_file(path) as f:
        f.write(b"new")
        raise RuntimeError
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.json"]


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_outputs_get_the_umasks_permissions(tmp_path, mask):
    old = os.umask(mask)
    try:
        f = fs.write_bytes(tmp_path / "f.bin", b"x")
        with fs.atomic_dir(tmp_path / "out") as tmp:
            (tmp / "sub").mkdir()
            (tmp / "sub" / "g.txt").write_text("g")
    finally:
        os.umask(old)
    assert _mode(f) == 0o666 & ~mask
    assert _mode(tmp_path / "out") == 0o777 & ~mask
    assert _mode(tmp_path / "out" / "sub") == 0o777 & ~mask


def _writer(out, tag, rounds):
    for n in range(rounds):
        with fs.atomic_dir(out) as tmp:
            for i in range(20):
                (tmp / f"part{i}.txt").write_text(f"{tag} {n}")
        fs.write_text(out.parent / "file.txt", f"{tag} {n}\n" * 1000)


def test_two_writers_at_once_never_leave_a_mixed_output(tmp_path):
    out = tmp_path / "out"
    # spawned, not forked: the writers need nothing of this process (docs/ci.md: a full run
    # once crashed here, forking)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(out, tag, 30)) for tag in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    texts = {(out / f"part{i}.txt").read_text() for i in range(20)}
    assert len(texts) == 1 and sorted(os.listdir(out)) == sorted(f"part{i}.txt" for i in range(20))
    lines = set((tmp_path / "file.txt").read_text().splitlines())
    assert len(lines) == 1
    assert sorted(os.listdir(tmp_path)) == ["file.txt", "out"]  # no temporary left


def test_sha256_file(tmp_path):
    import hashlib

    data = os.urandom(3 << 20)
    path = fs.write_bytes(tmp_path / "d", data)
    assert fs.sha256_file(path) == hashlib.sha256(data).hexdigest()
