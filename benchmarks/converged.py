"""Converged-scale proof of SRP and PET on IWSLT'14 (26.9k-pair subset), on 2 CPU cores.

Long (tens of CPU-hours, several sessions): run it in the background, from a
git worktree at a fixed commit, with its state outside the work tree, so that
edits to the checkout never change a running measurement and an interrupted
run resumes where it stopped (finished stages are skipped, an interrupted one
resumes from its checkpoint_last.pt):

    git worktree add ~/.cache/pet-bench/src-<commit> <commit>
    cd ~/.cache/pet-bench/src-<commit> && nohup nice -n 19 <venv>/bin/python benchmarks/converged.py \\
        --shared /path/to/shared run >> ~/.cache/pet-bench/converged.log 2>&1 &
    python benchmarks/converged.py status          # what is done, what runs, teacher epoch curves
    python benchmarks/converged.py report          # the tables (measures latency: run it on an idle machine)
    python benchmarks/converged.py stop            # running stages checkpoint at their next update and exit
    python benchmarks/converged.py carry           # what another machine needs to go on, into benchmarks/carry/

The state folder lives on one machine. When the machine may be replaced before
the next session, ``stop`` and then ``carry`` write the least that lets another
machine go on (finished results, the checkpoints later stages start from, and
each unfinished training stage's last checkpoint with float16 weights and
fresh optimizer moments: see bench_carry.py) to ``benchmarks/carry/converged``;
commit that folder, and ``run`` on any machine restores whatever its state
folder lacks before it starts.

One driver runs per ``--out`` (it holds ``driver.lock``). ``stop`` (or SIGTERM /
Ctrl-C to the driver) starts no further stage and has each running training
stage write ``checkpoint_last.pt`` at its next update before it exits, so the
next ``run`` loses nothing; killing the driver outright loses up to
``trainer.save_interval_updates`` updates per running stage.

``run`` works through the tasks below, ``--jobs`` at a time (each stage one
``python -m pet`` process with 1 thread), a task starting once what it needs
is finished:

teachers      transformer_small de->en (SRP) and en->de (PET) until the validation
              loss plateaus (6 epochs without a gain of more than 0.01), last
              epochs kept for averaging;
              pet_tiny_teacher_small en->de the same way (PET's KD teacher)
average       each transformer_small teacher's last 5 epoch checkpoints and its 5
              best ones averaged (stage=average), scored like the teacher
srp           from the de->en teacher, at rates 0.5 and 0.25, seeds 1 and 2:
              two_stage (width for P epochs, then q/k, v/o, FFN for P epochs),
              single_stage, oneshot (same selection as single_stage, c = 0 at
              once) and random (random importance), each 2P epochs of pruning
              with KD and then the same finetune (until its validation loss
              plateaus, by the teachers' rule; at most MAX_EPOCHS); and
              dense: the two-stage model's shape trained from scratch for the
              updates teacher + pruning + finetune took
pet           en->de, seeds 1 and 2: scratch (plain CE until the validation
              loss plateaus, by the teachers' rule), then, for as many updates
              as scratch took, pet (W warm-up updates on the teacher's 4-class
              labels, then KD from the tiny teacher) and kd_only (KD from the
              start)

Every final model is scored on the whole test set (beam 5). ``--out``
(default ~/.cache/pet-bench/converged) holds every run folder, the prepared
data and ``commits.json`` (which commit ran which command).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable

from bench_carry import MANIFEST, CarryPolicy, pack, unpack  # benchmarks/ is on sys.path when run as a script
from converged_report import write_report
from stage_runner import REPO, StageStopped, run_pet_stage, say, stop_running_stages, stopping

sys.path.insert(0, str(REPO))  # this worktree's pet, not the one pip installed
from pet.data.fileio import atomic_write_text  # noqa: E402

DEFAULT_OUT = Path.home() / ".cache" / "pet-bench" / "converged"
DEFAULT_CARRY = REPO / "benchmarks" / "carry" / "converged"
SEEDS = (1, 2)
RATES = (0.5, 0.25)
SRP_METHODS = ("two_stage", "oneshot", "random", "single_stage")
PET_METHODS = ("pet", "kd_only", "scratch")

# Teachers: transformer_small (3+3 layers, d 256, FFN 512, 4 heads) with the
# regularisation a 27k-pair corpus needs (fairseq's IWSLT dropout 0.3), a short
# LR warm-up for a CPU budget, early stopping on validation loss once 6 epochs in
# a row gain no more than 0.01 bits/token in all (under inverse-sqrt decay
# the loss keeps creeping down by thousandths per epoch long after it has
# plateaued). The teachers trained with strict patience (any gain restarts the
# count) until epoch 43 (de->en) and 39 (en->de).
PLATEAU = ["trainer.patience=6", "trainer.patience_min_delta=0.01"]
# Every run that trains to the plateau rule (teachers, SRP finetuning, the scratch student) stops
# there; this cap only guards against a run that never plateaus.
MAX_EPOCHS = 120
RECIPE = ["optim.lr=1e-3", "optim.warmup_updates=1000", "trainer.max_tokens=4096", "trainer.save_interval_updates=250"]
TEACHER = [
    "stage=pretrain", "model=transformer_small", "model.dropout=0.3", "model.attention_dropout=0.1",
    "model.activation_dropout=0.1", *RECIPE, f"trainer.max_epoch={MAX_EPOCHS}", *PLATEAU, "trainer.keep_last_epochs=10",
    "trainer.keep_best_checkpoints=5", "trainer.seed=1",
]
TINY_TEACHER = [o if o != "model=transformer_small" else "model=pet_tiny_teacher_small" for o in TEACHER]
DIRECTIONS = {"de_en": "iwslt14_shared", "en_de": "iwslt14_shared_en_de"}

# Checkpoint averaging of each teacher (fairseq's average_checkpoints): selection -> option.
AVERAGES = {"last5": "average.last_epochs=5", "best5": "average.best=5"}

# SRP: P epochs of pruning per stage (single-stage methods get 2P), KD from the
# unpruned teacher (pruning.kd_alpha 0.5, T 2), then finetuning until the validation
# loss plateaus by the teachers' rule (6 epochs without 0.01 bits/token gained in
# all; at a constant rate a pruned model still gained 0.04 in epochs 23-29), both at
# a constant LR: the rate the teacher's checkpoint_best.pt was trained at (its last update's).
PERIOD_EPOCHS = 3
# PET: every student of a seed trains for the updates the scratch student took
# to plateau; WARMUP_UPDATES of them are PET's warm-up.
WARMUP_UPDATES = 600

EPOCH_LINE = re.compile(r"end of epoch (\d+) \(update (\d+)\): valid loss ([\d.]+), nll ([\d.]+)")


@dataclass
class Task:
    """A chain of stages that runs as one unit once every path in ``needs`` exists;
    it is done once ``done`` (its last stage's result.json) exists. Once ``workdir``
    exists it has begun, and it resumes ahead of tasks not yet begun."""

    name: str
    run: Callable[[], Any]
    done: Path
    needs: list[Path] = field(default_factory=list)
    workdir: Path | None = None

    def ready(self) -> bool:
        return all(p.exists() for p in self.needs)

    def begun(self) -> bool:
        return self.workdir is not None and self.workdir.exists()

    def state(self) -> str:
        return "done" if self.done.exists() else "ready" if self.ready() else "waits"


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args, self.out = args, args.out

    # ------------------------------------------------------------ stages
    def common(self) -> list[str]:
        a = self.args
        return ["tracking=none", "trainer.progress_bar=none", f"trainer.device={a.device}",
                f"paths.output_root={self.out / 'outputs'}", f"paths.shared_data={a.shared / 'data'}"]

    def stage(self, name: str, overrides: list[str]) -> dict[str, Any]:
        smoke = ["generation.max_examples=8", "pruning.importance_batches=2"]
        if not any(o.startswith("trainer.max_update=") for o in overrides):
            smoke.append("trainer.max_update=4")  # stages with their own update budget keep it (see student_updates)
        return run_pet_stage(name, self.out / name, [*self.common(), *overrides, *(smoke if self.args.smoke else [])],
                             threads=1)

    def student_updates(self, seed: int) -> tuple[int, int]:
        """PET's (student updates in all, warm-up updates): the scratch student's
        updates to its plateau; a few of each under --smoke."""
        return (8, 4) if self.args.smoke else (self.updates(self.scratch_student(seed)), WARMUP_UPDATES)

    @staticmethod
    def scratch_student(seed: int) -> str:
        return f"pet/scratch/seed{seed}/train"

    def result(self, name: str) -> Path:
        return self.out / name / "result.json"

    def checkpoint(self, name: str) -> str:
        return json.loads(self.result(name).read_text())["checkpoint"]

    def evaluate(self, name: str, data: str, checkpoint: str) -> dict[str, Any]:
        return self.stage(f"eval/{name}", [f"data={data}", "stage=evaluate", "generation.split=test",
                                           "generation.beam=5", f"init_from={checkpoint}"])

    # ------------------------------------------------------------ tasks
    def teacher(self, direction: str) -> None:
        data = DIRECTIONS[direction]
        r = self.stage(f"teacher_{direction}", [f"data={data}", *TEACHER])
        self.evaluate(f"teacher_{direction}", data, r["checkpoint"])

    def average(self, direction: str) -> None:
        """The teacher's last and best AVERAGED checkpoints, each scored on the test set."""
        teacher = f"teacher_{direction}"
        for selection, option in AVERAGES.items():
            name = f"average/{teacher}_{selection}"
            self.stage(name, [f"data={DIRECTIONS[direction]}", "stage=average", option,
                              f"init_from={self.out / teacher}", f"average.output={self.out / name / 'checkpoint_avg.pt'}"])
            self.evaluate(name, DIRECTIONS[direction], str(self.out / name / "checkpoint_avg.pt"))

    def tiny_teacher(self) -> None:
        r = self.stage("tiny_teacher_en_de", [f"data={DIRECTIONS['en_de']}", *TINY_TEACHER])
        self.evaluate("tiny_teacher_en_de", DIRECTIONS["en_de"], r["checkpoint"])

    def srp(self, method: str, rate: float, seed: int) -> None:
        root = f"srp/{method}@{rate}/seed{seed}"
        data = f"data={DIRECTIONS['de_en']}"
        teacher = self.checkpoint("teacher_de_en")
        prune = [data, "stage=prune", f"pruning.compression_rate={rate}", f"pruning.importance_seed={seed}",
                 f"trainer.seed={seed}", "pruning.report_latency=false", "pruning.report_bleu=false",
                 "trainer.max_tokens=4096", "shrink=geometric"]
        if method == "two_stage":
            s1 = self.stage(f"{root}/prune_emb", [*prune, "pruning=two_stage_1", f"pruning.pruning_period={PERIOD_EPOCHS}",
                                                  f"init_from={teacher}"])
            pruned = self.stage(f"{root}/prune_heads_ffn", [*prune, "pruning=two_stage_2",
                                                            f"pruning.pruning_period={PERIOD_EPOCHS}",
                                                            f"init_from={s1['checkpoint']}"])
        else:
            extra = {"single_stage": [], "oneshot": ["shrink=oneshot"], "random": ["pruning.importance=random"]}[method]
            pruned = self.stage(f"{root}/prune", [*prune, "pruning=single_stage",
                                                  f"pruning.pruning_period={2 * PERIOD_EPOCHS}", *extra,
                                                  f"init_from={teacher}"])
        ft = self.stage(f"{root}/finetune", [data, "stage=finetune", f"trainer.max_epoch={MAX_EPOCHS}",
                                             *PLATEAU, f"trainer.seed={seed}",
                                             "trainer.max_tokens=4096", f"init_from={pruned['checkpoint']}",
                                             # evaluate scores the whole test set below; no 500-sentence preview
                                             "pruning.report_bleu=false", "pruning.report_latency=false"])
        self.evaluate(root, DIRECTIONS["de_en"], ft["checkpoint"])

    def dense(self, rate: float, seed: int) -> None:
        """The two-stage model's exact shape from scratch, for as many updates as
        teacher + pruning + finetuning took to make that model."""
        chain = f"srp/two_stage@{rate}/seed{seed}"
        updates = self.updates("teacher_de_en") + sum(
            self.updates(f"{chain}/{s}") for s in ("prune_emb", "prune_heads_ffn", "finetune"))
        shape = self.checkpoint(f"{chain}/prune_heads_ffn")
        root = f"srp/dense@{rate}/seed{seed}"
        r = self.stage(root + "/train", [f"data={DIRECTIONS['de_en']}", "stage=pretrain", "model=transformer_small", *RECIPE,
                                         f"model.shape_from={shape}", f"trainer.max_update={updates}",
                                         f"trainer.seed={seed}"])
        self.evaluate(root, DIRECTIONS["de_en"], r["checkpoint"])

    def updates(self, name: str) -> int:
        """Optimizer updates a finished training stage made (a prune stage: its period)."""
        res = json.loads(self.result(name).read_text())
        if "num_updates" in res["metrics"]:
            return int(res["metrics"]["num_updates"])
        return int(trainer_record(self.out / name)["num_updates"])  # the pruning period's own record

    def pet(self, method: str, seed: int) -> None:
        root = f"pet/{method}/seed{seed}"
        data = [f"data={DIRECTIONS['en_de']}", "model=pet_student_small", *RECIPE, f"trainer.seed={seed}"]
        if method == "scratch":
            final = self.stage(self.scratch_student(seed), [*data, "stage=pretrain",
                                                            f"trainer.max_epoch={MAX_EPOCHS}", *PLATEAU])
            self.evaluate(root, DIRECTIONS["en_de"], final["checkpoint"])
            return
        teacher, tiny = self.checkpoint("teacher_en_de"), self.checkpoint("tiny_teacher_en_de")
        student, warmup = self.student_updates(seed)
        fixed = [*data, "trainer.max_epoch=0", "trainer.patience=0"]  # the update budget alone ends them
        kd = ["stage=distill", "distill=kd", f"distill.teacher={tiny}", f"trainer.max_update={student}"]
        if method == "pet":
            warm = self.stage(f"{root}/warmup", [*fixed, "stage=distill", "distill=warmup", f"distill.teacher={teacher}",
                                                 "distill.from_scratch=true", f"trainer.max_update={warmup}"])
            final = self.stage(f"{root}/kd", [*fixed, *kd, f"init_from={warm['checkpoint']}",
                                              "distill.continue_schedule=true"])
        else:
            final = self.stage(f"{root}/kd", [*fixed, *kd, "distill.from_scratch=true"])
        self.evaluate(root, DIRECTIONS["en_de"], final["checkpoint"])

    def tasks(self) -> list[Task]:
        """Every task, in the order free workers take them up once ready."""
        t_de, t_en, tiny = (self.result(n) for n in ("teacher_de_en", "teacher_en_de", "tiny_teacher_en_de"))

        def scored(name: str) -> Path:  # a chain's last stage scores its model on the test set
            return self.result(f"eval/{name}")

        def chain(name: str, run: Callable[[], Any], root: str, needs: list[Path] | None = None) -> Task:
            """A task whose stages live under ``root`` and whose last one scores it in eval/``root``."""
            return Task(name, run, scored(root), needs or [], self.out / root)

        out = [chain(f"teacher_{d}", lambda d=d: self.teacher(d), f"teacher_{d}") for d in DIRECTIONS]
        if not self.args.smoke:  # a smoke teacher stops within its first epoch: no epoch checkpoints to average
            # Next in line once its teacher is done: it needs the teacher's epoch checkpoints, which stay on
            # the machine that trained it (a carry leaves them out), so it must not wait behind hours of work.
            out += [Task(f"average teacher_{d}", lambda d=d: self.average(d),
                         scored(f"average/teacher_{d}_{list(AVERAGES)[-1]}"),
                         [self.result(f"teacher_{d}"), self.out / f"teacher_{d}" / "checkpoint_last.pt"])
                    for d in DIRECTIONS]
        out.append(chain("tiny_teacher_en_de", self.tiny_teacher, "tiny_teacher_en_de"))
        # Per seed: PET's scratch student first (it sets the other students' update budget), then every
        # system at the first rate with its dense baseline, PET's other students, and the other rates: a
        # seed's whole picture at the first rate lands before the rest of the grid.
        for seed in SEEDS:
            scratch = self.result(self.scratch_student(seed))  # its updates are the others' budget

            def pet_task(method: str, needs: list[Path], seed: int = seed) -> Task:
                return chain(f"pet {method} seed{seed}", lambda: self.pet(method, seed), f"pet/{method}/seed{seed}",
                             needs)

            def srp_tasks(rate: float, seed: int = seed) -> list[Task]:
                two_stage = self.out / f"srp/two_stage@{rate}/seed{seed}/finetune/result.json"
                return [*(chain(f"srp {m}@{rate} seed{seed}", lambda m=m: self.srp(m, rate, seed),
                                f"srp/{m}@{rate}/seed{seed}", [t_de]) for m in SRP_METHODS),
                        chain(f"srp dense@{rate} seed{seed}", lambda: self.dense(rate, seed),
                              f"srp/dense@{rate}/seed{seed}", [t_de, two_stage])]

            out += [pet_task("scratch", []), *srp_tasks(RATES[0]), pet_task("pet", [t_en, tiny, scratch]),
                    pet_task("kd_only", [tiny, scratch]), *(t for rate in RATES[1:] for t in srp_tasks(rate))]
        return out

    def run_all(self) -> None:
        """Run ready tasks ``--jobs`` at a time until none is left (or none can become ready)."""
        pending = [t for t in self.tasks() if any(word in t.name for word in self.args.only)]
        running: dict[Future, Task] = {}
        failed: list[str] = []
        with ThreadPoolExecutor(max_workers=self.args.jobs) as pool:
            while pending or running:
                if stopping.is_set():
                    pending = []
                ready = sorted((t for t in pending if t.ready()), key=lambda t: not t.begun())  # begun ones first
                for task in ready[: self.args.jobs - len(running)]:
                    pending.remove(task)
                    say(f"[task] start {task.name}")
                    running[pool.submit(task.run)] = task
                if not running:
                    if pending:
                        waits = {t.name: [str(p) for p in t.needs if not p.exists()] for t in pending}
                        say(f"[task] nothing can start (failed: {failed or 'none'}); waiting for: {waits}")
                    break
                done, _ = wait(running, timeout=60, return_when=FIRST_COMPLETED)
                for future in done:
                    task = running.pop(future)
                    try:
                        future.result()
                        say(f"[task] done  {task.name}")
                    except StageStopped as e:
                        say(f"[task] stopped {task.name}: {e}")
                    except SystemExit as e:  # run_pet_stage exits with the failing stage's log tail
                        failed.append(task.name)  # only this (the driver's) thread touches the list
                        say(f"[task] FAILED {task.name}: {e}")
        if stopping.is_set():
            say("[task] stopped; `run` again resumes")
        else:
            say(f"[task] finished; failed: {failed or 'none'}")

    # ------------------------------------------------------------ status
    def status(self) -> None:
        pid = driver_pid(self.out)
        print(f"driver: {'pid ' + str(pid) if pid else 'not running'}")
        manifest = self.args.carry / MANIFEST
        if manifest.exists():
            carried = json.loads(manifest.read_text())
            done = sum(bool(e.get("finished")) for e in carried.values())
            print(f"carry: {len(carried)} stages ({done} finished) in {self.args.carry}")
        tasks = self.tasks()
        for task in tasks:
            print(f"{task.state():<6} {task.name}")
        print(f"{sum(t.state() == 'done' for t in tasks)} of {len(tasks)} tasks done")
        for name in ("teacher_de_en", "teacher_en_de", "tiny_teacher_en_de"):
            curve = epoch_curve(self.out / name)
            if curve:
                best = min(curve, key=lambda c: c["valid_loss"])
                print(f"{name}: {curve[-1]['epoch']} epochs, {curve[-1]['updates']} updates, last valid loss "
                      f"{curve[-1]['valid_loss']:.4f}, best {best['valid_loss']:.4f} (epoch {best['epoch']})")


def trainer_record(run_dir: Path) -> dict[str, Any]:
    """A training stage's counters and curve: its checkpoint_last.pt's record,
    or the trainer.json a carry brought from another machine."""
    last = run_dir / "checkpoint_last.pt"
    if last.exists():
        from pet.checkpoint import load_checkpoint

        return load_checkpoint(last)["trainer"]
    carried = run_dir / "trainer.json"
    return json.loads(carried.read_text()) if carried.exists() else {}


def epoch_curve(run_dir: Path) -> list[dict[str, float]]:
    """(epoch, updates, valid loss, valid nll) of each completed epoch: the
    trainer's own record, or the stage's log for runs that predate it."""
    curve = trainer_record(run_dir).get("curve")
    if curve:
        return [{"epoch": c["epoch"], "updates": c["updates"], "valid_loss": c["valid_loss"],
                 "valid_nll": c["valid_nll_loss"]} for c in curve if c.get("complete", True)]
    log = run_dir / "stage.log"
    if not log.exists():
        return []
    return [{"epoch": int(m[1]), "updates": int(m[2]), "valid_loss": float(m[3]), "valid_nll": float(m[4])}
            for m in EPOCH_LINE.finditer(log.read_text(errors="replace"))]


def carry_policy(out: Path) -> CarryPolicy:
    """Which finished stages' checkpoints a carry must hold: those a stage
    still to run starts from (teachers, pruned models, PET's warm-up with its
    optimizer), and the seed-1 final models the report measures."""

    def finished(name: str) -> bool:
        return (out / name / "result.json").exists()

    def needs_checkpoint(name: str) -> bool:
        parts = name.split("/")
        if name in ("teacher_de_en", "teacher_en_de", "tiny_teacher_en_de"):
            return True
        if parts[0] == "average":
            return not finished(f"eval/{name}")
        if parts[0] not in ("srp", "pet") or len(parts) != 4:
            return False
        chain, step = "/".join(parts[:3]), parts[3]
        if step == "prune_emb":
            return not finished(f"{chain}/prune_heads_ffn")
        if step == "prune_heads_ffn":
            rate_seed = f"{parts[1].split('@')[1]}/{parts[2]}"
            return not finished(f"{chain}/finetune") or not finished(f"eval/srp/dense@{rate_seed}")
        if step == "prune":
            return not finished(f"{chain}/finetune")
        if step == "warmup":
            return not finished(f"{chain}/kd")
        return parts[2] == "seed1" or not finished(f"eval/{chain}")  # a final model

    def needs_optimizer(name: str) -> bool:  # PET's KD continues the warm-up's optimizer until it has its own
        kd = out / name.removesuffix("/warmup") / "kd"
        return name.endswith("/warmup") and not (kd / "checkpoint_last.pt").exists()

    return CarryPolicy(needs_checkpoint, needs_optimizer)


def driver_pid(out: Path) -> int | None:
    """The pid of the driver that holds ``out``'s lock, or None when none runs."""
    path = out / "driver.lock"
    if not path.exists():
        return None
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = f.read().strip()
            return int(text) if text.isdigit() else -1
        return None  # the lock was free: the file is a finished driver's


def hold_driver_lock(out: Path) -> IO[str]:
    """Refuse a second driver on the same state (two would train one run folder
    at once). The lock lasts as long as the returned file stays open, i.e. as
    long as this process lives, however it ends."""
    f = open(out / "driver.lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(f"a driver (pid {driver_pid(out)}) already runs on {out}; `converged.py stop` ends it, "
                 "`status` shows progress")
    f.truncate(0)
    f.write(str(os.getpid()))
    f.flush()
    return f


def stop_driver(out: Path, timeout: float) -> None:
    pid = driver_pid(out)
    if pid is None:
        print(f"no driver runs on {out}")
        return
    os.kill(pid, signal.SIGTERM)
    print(f"asked driver {pid} to stop; its stages checkpoint at their next update", flush=True)
    deadline = time.monotonic() + timeout
    while driver_pid(out) == pid and time.monotonic() < deadline:
        time.sleep(2)
    print("stopped" if driver_pid(out) != pid else f"still running after {timeout:.0f}s", flush=True)


def record_commit(out: Path, command: str) -> None:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    path = out / "commits.json"
    seen = json.loads(path.read_text()) if path.exists() else {}
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    seen.setdefault(command, []).append({"commit": commit, "started": stamp})
    atomic_write_text(path, json.dumps(seen, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["run", "status", "report", "stop", "carry"])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--carry", type=Path, default=DEFAULT_CARRY,
                    help="carry folder: `carry` writes the state another machine needs there; `run` restores from it "
                         "the stages --out lacks")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="the shared/ folder holding data/iwslt14")
    ap.add_argument("--jobs", type=int, default=2, help="1-thread stages run at once")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", nargs="+", default=[""], help="run only the tasks whose name contains one of these")
    ap.add_argument("--smoke", action="store_true", help="4 updates per stage, 8 test sentences: proves every task runs")
    ap.add_argument("--measure", action="store_true", help="report: also time the models (pet eager, CTranslate2)")
    ap.add_argument("--threads", type=int, default=2, help="report --measure: threads per engine")
    ap.add_argument("--repeats", type=int, default=5, help="report --measure: interleaved rounds")
    args = ap.parse_args()
    args.out, args.shared = args.out.expanduser().resolve(), args.shared.expanduser().resolve()
    if not (args.shared / "data" / "iwslt14" / "bpe" / "train.de").exists():
        sys.exit(f"IWSLT'14 data not found under {args.shared}/data/iwslt14; pass --shared <folder holding data/>")
    args.out.mkdir(parents=True, exist_ok=True)
    bench = Bench(args)
    if args.command == "stop":
        stop_driver(args.out, timeout=900)
        return
    if args.command == "status":
        bench.status()
        return
    if args.command == "carry":
        if driver_pid(args.out):
            print(f"warning: a driver (pid {driver_pid(args.out)}) still trains; this carry holds its last saved "
                  "checkpoints, not what it reaches after now (`stop` first for the latest)", flush=True)
        print("\n".join(pack(args.out, args.carry, carry_policy(args.out))))
        print(f"written: {args.carry}")
        return
    if args.command == "report":
        print(write_report(args.out, epoch_curve, SEEDS, RATES, SRP_METHODS, PET_METHODS, args.measure, args.threads,
                           args.repeats))
        print(f"written: {args.out / 'report.md'}, {args.out / 'report.json'}")
        return
    lock = hold_driver_lock(args.out)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop_running_stages())
    for line in unpack(args.carry, args.out):  # before record_commit: it restores the carried commits.json
        say(f"[carry] restored {line}")
    record_commit(args.out, args.command)
    with lock:
        bench.run_all()


if __name__ == "__main__":
    main()
