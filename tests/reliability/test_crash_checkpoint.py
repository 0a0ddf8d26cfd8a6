"""save_checkpoint survives a crash at every filesystem step (issue 7, items 1, 2 and 12).

Version v of the training state has every weight, every momentum buffer and ``state["step"]`` equal to v, so a
loaded mixture of two saves is visible. After a crash at step k of a save, ``has_checkpoint`` must be true whenever
a complete checkpoint existed, and ``load_checkpoint`` must give one complete version, the newest one that was
complete (the old one or the new one); a following save must work and leave no stray folder.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from functools import partial
from pathlib import Path

import pytest
import torch
from torch import nn

import vlblocks
import vlblocks.training.checkpoint as ckpt
from vlblocks import _files
from vlblocks.training import has_checkpoint, load_checkpoint, read_checkpoint_state, save_checkpoint

WRITERS = [(ckpt, "save_file"), (ckpt, "save_model"), (_files, "write_json")]


@pytest.fixture(autouse=True)
def _no_fsync_wait(monkeypatch) -> None:
    """fsync stays a (counted, crashable) step but does not wait for the disk: 4x faster; the kill -9 test keeps it."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def make_run():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3)).sum().backward()
    opt.step()  # creates the momentum buffers
    return model, opt


def set_version(model, opt, v: int) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(v)
            opt.state[p]["momentum_buffer"].fill_(v)


def save(folder: Path, v: int) -> None:
    model, opt = make_run()
    set_version(model, opt, v)
    save_checkpoint(folder, model=model, optimizer=opt, state={"step": v})


def loaded_version(folder: Path) -> int | None:
    """The version ``load_checkpoint`` gives (checking it is not a mixture), None when it finds no checkpoint."""
    model, opt = make_run()
    set_version(model, opt, -1)
    try:
        state = load_checkpoint(folder, model=model, optimizer=opt, restore_rng=False)
    except FileNotFoundError:
        assert not has_checkpoint(folder)
        return None
    assert has_checkpoint(folder)
    v = state["step"]
    for p in model.parameters():
        assert torch.all(p == v), f"weights of another version than step {v}"
        assert torch.all(opt.state[p]["momentum_buffer"] == v), f"optimizer of another version than step {v}"
    return v


def related(folder: Path) -> list[str]:
    """Names of ``folder`` and of its backup / temporary siblings."""
    return sorted(
        p.name
        for p in folder.parent.iterdir()
        if p.name == folder.name or p.name.startswith(f".{folder.name}.")
    )


def steps_of(plan, fn) -> list[str]:
    crashed, calls = plan.run(fn)
    assert not crashed
    return calls


def test_save_makes_the_expected_filesystem_steps(tmp_path, crash_plan) -> None:
    plan = crash_plan(WRITERS)
    first = steps_of(plan, partial(save, tmp_path / "c", 1))
    over = steps_of(plan, partial(save, tmp_path / "c", 2))
    for name in ("mkdir", "save_model", "save_file", "write_json", "fsync", "rename"):
        assert name in first, name
    assert over.count("rename") == 2 and "rmtree" in over and "unlink" in over  # backup kept, then deleted
    assert loaded_version(tmp_path / "c") == 2


@pytest.mark.parametrize("truncate", [False, True], ids=["before-write", "half-written"])
def test_crash_at_every_step_of_a_first_save(tmp_path, crash_plan, truncate) -> None:
    plan = crash_plan(WRITERS)
    n = len(steps_of(plan, partial(save, tmp_path / "probe", 1)))
    for k in range(n):
        folder = tmp_path / f"first{k}"
        crashed, _ = plan.run(partial(save, folder, 1), crash_at=k, truncate=truncate)
        assert crashed
        assert loaded_version(folder) in (None, 1), k  # nothing existed before: nothing, or the new one
        save(folder, 2)
        assert loaded_version(folder) == 2
        assert related(folder) == [folder.name], k


def disk_state(folder: Path) -> tuple:
    """What a later save can see of ``folder``: its related entries (temporary names normalised)."""
    out = []
    for p in sorted(folder.parent.rglob("*")):
        rel = str(p.relative_to(folder.parent))
        if rel.split("/")[0] in (folder.name, f".{folder.name}.old") or rel.startswith(
            f".{folder.name}.tmp-"
        ):
            rel = re.sub(r"\.tmp-\d+-[0-9a-f]{8}.*", ".tmp", rel)  # the next save deletes it whole
            out.append(rel.replace(folder.name, "F", 1))
    return tuple(sorted(set(out)))


@pytest.mark.parametrize("truncate", [False, True], ids=["before-write", "half-written"])
def test_crash_at_every_step_of_a_save_over_a_checkpoint(tmp_path, crash_plan, truncate) -> None:
    """A crash at every step; then, from every distinct state this leaves on disk, a second crash at every step."""
    plan = crash_plan(WRITERS)
    save(tmp_path / "probe", 1)
    n = len(steps_of(plan, partial(save, tmp_path / "probe", 2)))
    assert n >= 20
    states: dict[tuple, int] = {}
    for k1 in range(n):
        folder = tmp_path / f"c{k1}"
        save(folder, 1)
        crashed, _ = plan.run(partial(save, folder, 2), crash_at=k1, truncate=truncate)
        assert crashed
        after = loaded_version(folder)
        assert after in (1, 2), (k1, "the last complete checkpoint was lost")
        states.setdefault(disk_state(folder), k1)
        save(folder, 4)
        assert loaded_version(folder) == 4
        assert related(folder) == [folder.name], k1
    assert len(states) >= 5  # control: the crashes left different states
    if truncate:
        return  # half-written files differ only inside the temporary folder: the states above suffice
    doubles = 0
    for k1 in states.values():
        for k2 in range(10 * n):  # every step of the second save (it may clean more than the first did)
            folder = tmp_path / f"d{k1}-{k2}"
            save(folder, 1)
            plan.run(partial(save, folder, 2), crash_at=k1)
            after_first = loaded_version(folder)
            crashed, _ = plan.run(partial(save, folder, 3), crash_at=k2)
            assert loaded_version(folder) in (after_first, 3), (k1, k2)
            save(folder, 4)
            assert loaded_version(folder) == 4
            assert related(folder) == [folder.name], (k1, k2)
            if not crashed:
                break
            doubles += 1
    assert doubles >= len(states) * n
    print(f"{n} steps, {len(states)} distinct states after one crash, {doubles} double crashes")


def crash_between_renames(plan, folder: Path, v: int) -> None:
    """Leave ``folder`` as a crash right after its first rename leaves it: only the backup holds a checkpoint."""
    save(folder, v)
    calls = steps_of(plan, partial(save, folder.parent / "probe", v))  # count on another folder
    k = [i for i, c in enumerate(calls) if c == "rename"][-1]  # the rename of the new folder into place
    plan.run(partial(save, folder, v + 1), crash_at=k)
    assert not folder.exists() and _files.backup_path(folder).is_dir()


@pytest.mark.parametrize("name", ["ckpt[1]", "c*", "a?b", "[!x]", "x.old", ".hidden"])
def test_backup_found_by_exact_name(tmp_path, crash_plan, name) -> None:
    plan = crash_plan(WRITERS)
    save(tmp_path / "probe", 0)
    crash_between_renames(plan, tmp_path / name, 5)
    assert has_checkpoint(tmp_path / name)
    assert read_checkpoint_state(tmp_path / name) == {"step": 5}
    assert loaded_version(tmp_path / name) == 5
    save(tmp_path / name, 7)
    assert loaded_version(tmp_path / name) == 7
    assert not _files.backup_path(tmp_path / name).exists()


def test_saving_c_star_leaves_ckpt_best_backup_alone(tmp_path, crash_plan) -> None:
    plan = crash_plan(WRITERS)
    save(tmp_path / "probe", 0)
    crash_between_renames(plan, tmp_path / "ckpt_best", 3)
    crash_between_renames(plan, tmp_path / "c", 8)  # an interrupted save of "c" too
    for _ in range(2):
        save(tmp_path / "c*", 9)
        save(tmp_path / "c?", 9)
    assert loaded_version(tmp_path / "ckpt_best") == 3
    assert loaded_version(tmp_path / "c") == 8
    assert loaded_version(tmp_path / "c*") == 9
    assert _files.backup_path(tmp_path / "ckpt_best").is_dir()  # control: untouched, still needed


def test_failed_save_of_a_non_checkpoint_folder_changes_nothing(tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(ValueError, match=r"refusing to replace .*run.*metrics.jsonl"):
        save(run, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert (run / "metrics.jsonl").read_text() == "{}\n"


KILL_SCRIPT = textwrap.dedent(
    """
    import json, os, random, signal, sys, time
    import torch
    from torch import nn
    from vlblocks.training import has_checkpoint, load_checkpoint, read_checkpoint_state, save_checkpoint

    folder, kills = sys.argv[1], int(sys.argv[2])
    random.seed(0)
    model = nn.Linear(64, 64)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def save(v):
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(v)
                opt.state[p]["momentum_buffer"] = torch.full_like(p, v)
        save_checkpoint(folder, model=model, optimizer=opt, state={"step": v})

    save(0)
    seen = []
    for i in range(kills):
        last = load_checkpoint(folder, model=model, optimizer=opt, restore_rng=False)["step"]
        pid = os.fork()
        if pid == 0:  # child: save newer versions until killed
            v = last
            while True:
                v += 1
                save(v)
        time.sleep(random.uniform(0.05, 0.25))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        ok = has_checkpoint(folder)
        fresh = nn.Linear(64, 64)
        fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
        step = load_checkpoint(folder, model=fresh, optimizer=fresh_opt, restore_rng=False)["step"]
        mixed = any(
            not torch.all(p == step) or not torch.all(fresh_opt.state[p]["momentum_buffer"] == step)
            for p in fresh.parameters()
        )
        seen.append({"has": ok, "step": step, "last": last, "mixed": mixed})
    save(10**6)
    print(json.dumps({"seen": seen, "left": sorted(os.listdir(os.path.dirname(folder)))}))
    """
)


@pytest.mark.skipif(
    not hasattr(os, "fork") or not hasattr(signal, "SIGKILL"), reason="needs fork and SIGKILL"
)
def test_kill_9_during_saves(tmp_path) -> None:
    """A process saving in a loop is killed with SIGKILL 5 times; each time the newest complete save loads."""
    env = dict(os.environ, PYTHONPATH=str(Path(vlblocks.__file__).parents[1]), OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(tmp_path / "ckpt"), "5"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for s in result["seen"]:
        assert s["has"] and not s["mixed"] and s["step"] >= s["last"], s
    assert sum(s["step"] > s["last"] for s in result["seen"]) >= 2  # control: the children did save
    assert result["left"] == ["ckpt"]
